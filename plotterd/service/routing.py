"""Which plotter draws which job.

A job may ask for a plotter (its ``plotter_request``: ``{"plotter": NAME}`` or
``{"tags": [...]}``), from its inbox folder (``folders.<sub>.plotter`` / ``.tags``), its
sidecar (``plotter:`` / ``tags:``) or the API (``POST /jobs`` fields ``plotter`` / ``tags``).
Without one, any plotter may draw it. The optimiser process makes the job's G-code for
every plotter that may draw it (each with its own profile, page and pens) and says for
which of them the drawing fits the page unclipped (``stats.gcode_for`` of the job); a plotter
takes a ready job only if the job fits it, when it fits any of the plotters it may go to.

A job bound to a plotter by name waits for it; with ``routing.when_gone: same_tags`` it
may go to a plotter that carries all of the gone plotter's tags once that one has been gone
(port absent, or not answering) for ``routing.gone_after_s``. A plot that has started
(``resume_stroke`` set) stays with the plotter it was drawn on: its checkpoint counts
strokes of that plotter's G-code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plotterd.service.config import Config, PlotterConfig


class RoutingError(ValueError):
    """A job's plotter request that is malformed or that no plotter can ever satisfy."""


def parse_request(plotter: Any, tags: Any, where: str) -> dict[str, Any] | None:
    """``plotter`` / ``tags`` as given by a sidecar or the API -> a request, None for none.
    ``tags`` may be a list or a comma-separated string."""
    if isinstance(tags, str):
        tags = [t for t in (x.strip() for x in tags.split(",")) if t]
    if plotter in (None, "") and not tags:
        return None
    if plotter not in (None, "") and tags:
        raise RoutingError(f"{where}: give a plotter or tags, not both")
    if plotter not in (None, ""):
        if not isinstance(plotter, str):
            raise RoutingError(f"{where}: plotter: must be a plotter's name")
        return {"plotter": plotter.strip()}
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise RoutingError(f"{where}: tags: must be a list of tags (strings)")
    return {"tags": sorted({t.strip() for t in tags})}


def unsatisfiable(request: dict[str, Any] | None, cfg: Config) -> str | None:
    """Why no configured plotter can ever draw a job with ``request``, else None."""
    if not request:
        return None
    names = ", ".join(p.name for p in cfg.plotters)
    name = request.get("plotter")
    if name:
        if cfg.plotter_named(name) is None:
            return f"no plotter is named {name!r} (plotters: {names})"
        return None
    tags = set(request.get("tags") or ())
    if tags and not any(tags <= set(p.tags) for p in cfg.plotters):
        have = "; ".join(f"{p.name}: {', '.join(p.tags) or 'no tags'}" for p in cfg.plotters)
        return f"no plotter has the tags {', '.join(sorted(tags))} ({have})"
    return None


def _asked(request: dict[str, Any] | None, pc: PlotterConfig) -> bool:
    """Does ``pc`` satisfy the request itself (not as a stand-in)?"""
    if not request:
        return True
    if request.get("plotter"):
        return request["plotter"] == pc.name
    return set(request.get("tags") or ()) <= set(pc.tags)


def _stands_in(request: dict[str, Any] | None, pc: PlotterConfig, cfg: Config) -> bool:
    """``pc`` has all the tags of the plotter the job names (``when_gone: same_tags``)."""
    if cfg.routing.when_gone != "same_tags" or not request or not request.get("plotter"):
        return False
    named = cfg.plotter_named(request["plotter"])
    return named is not None and named.name != pc.name and set(named.tags) <= set(pc.tags)


def candidates(request: dict[str, Any] | None, cfg: Config) -> list[PlotterConfig]:
    """Every plotter that may ever draw a job with ``request`` (its G-code is made for
    each), in config order: the ones asked for first, then stand-ins."""
    asked = [p for p in cfg.plotters if _asked(request, p)]
    return asked + [p for p in cfg.plotters if p not in asked and _stands_in(request, p, cfg)]


def may_draw(job: dict[str, Any], pc: PlotterConfig, cfg: Config,
             gone: Callable[[str], bool]) -> bool:
    """May plotter ``pc`` take ready job ``job`` now? ``gone(name)``: that plotter has
    been away for ``routing.gone_after_s``."""
    if job.get("resume_stroke") is not None:
        # a started plot stays where it was drawn (rows from before several plotters: the
        # first plotter, the only one there was)
        return (job.get("plotter") or cfg.plotters[0].name) == pc.name
    request = job.get("plotter_request")
    if _asked(request, pc):
        ok = True
    else:
        ok = _stands_in(request, pc, cfg) and gone(request["plotter"])
    return ok and fits(job, pc.name, request, cfg)


def fits(job: dict[str, Any], name: str, request: dict[str, Any] | None, cfg: Config) -> bool:
    """The job has G-code for ``name``; and if its drawing fits any of its plotters
    unclipped, it fits this one. Jobs without per-plotter G-code (made before several
    plotters, or foreign rows) plot their one ``gcode`` on any plotter."""
    made = gcode_for(job)
    if not made:
        return True
    mine = made.get(name)
    if mine is None or mine.get("error"):
        return False
    if mine.get("fits", True):
        return True
    names = {p.name for p in candidates(request, cfg)}
    return not any(v.get("fits", True) and not v.get("error")
                   for n, v in made.items() if n in names)


def gcode_for(job: dict[str, Any]) -> dict[str, Any]:
    """Per plotter name: the job's G-code files, fit and error (kept in its stats)."""
    return (job.get("stats") or {}).get("gcode_for") or {}


def gcode_targets(cfg: Config, job: dict[str, Any]) -> list[dict[str, Any]]:
    """What the optimiser process makes G-code for: every plotter that may draw ``job``,
    with its profile, page, vector settings (the job's folder's, its own pens over them) and
    file name (``plot.gcode`` with one plotter configured, else ``plot-<name>.gcode``)."""
    folder = cfg.folder_of(job.get("origin"))
    several = len(cfg.plotters) > 1
    out = []
    for pc in candidates(job.get("plotter_request"), cfg):
        page = cfg.page_of(pc)
        out.append({"name": pc.name, "profile": pc.profile,
                    "page": {"paper": page.paper, "orientation": page.orientation,
                             "margin_mm": page.margin_mm},
                    "vector": cfg.vector_of(pc, folder).to_dict(),
                    "out": f"plot-{pc.name}.gcode" if several else "plot.gcode"})
    return out
