"""The status web page and the few endpoints only it needs.

``GET /`` and ``/static/*`` are the page (plain HTML, CSS and JavaScript shipped in the
package; no CDN, nothing from the internet) and need no token: they hold no data. Whatever
the page shows comes from the API with the same token rule as every other endpoint; the
page asks for the token when the API answers 401 and keeps it in the tab's sessionStorage.

Added for the page:

* ``GET /api/live``: the plotter's status and the current (or last) plot with its progress,
  elapsed time and ETA, polled about once a second; ``plotters``: every plotter's status
  (the page shows a card per plotter when there are several); ``?plotter=NAME`` follows
  that plotter (default: the first one plotting, else the first);
* ``GET /api/jobs/{id}/plan``: the planned drawing (see :mod:`plotterd.service.web.plan`);
* ``GET /api/jobs/{id}/thumbnail/{name}``: a small PNG of an image artefact;
* ``GET /api/pipelines``: the pipelines an upload can choose from.
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, ImageFilter, UnidentifiedImageError

from plotterd.errors import PlotterdError
from plotterd.pen import RoundNib
from plotterd.service.web.plan import PlanCache

# the page's own files; anything else under /static is a 404 (no path from the request
# ever reaches the file system)
STATIC = {"app.js": "text/javascript", "style.css": "text/css", "icon.svg": "image/svg+xml"}
THUMBNAIL_OF = ("preview", "render", "input", "loss_png")
THUMB_PX = 320
THUMB_MAX_PIXELS = 60_000_000  # decoded in the daemon's own process: at most ~180 MB of RGB
# the page loads only its own files: no inline script, no other origin, no framing
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
PLOTTED = ("plotting", "interrupted", "done", "cancelled", "failed")


def _static(name: str) -> bytes:
    return resources.files("plotterd.service.web").joinpath("static", name).read_bytes()


def artefact_path(job: dict[str, Any], name: str) -> Path:
    """The file of artefact ``name`` inside the job's folder, or a 404."""
    rel = job["artefacts"].get(name)
    if rel is None:
        raise HTTPException(404, f"job {job['id']} has no artefact {name!r}")
    job_dir = Path(job["dir"]).resolve()
    path = (job_dir / rel).resolve()
    if not path.is_relative_to(job_dir) or not path.is_file():
        raise HTTPException(404, f"artefact {name!r} of job {job['id']} is missing")
    return path


class Thumbnails:
    """Small PNGs of job images, kept by (file, mtime, size) for the page's list."""

    def __init__(self, size: int = 256):
        self.size = size
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, thin_lines: bool = False) -> bytes:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size, thin_lines)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        out = io.BytesIO()
        try:
            with Image.open(path) as im:
                _decoded_small(im, thin_lines).save(out, "PNG")
        except Image.DecompressionBombError as e:
            raise HTTPException(413, f"{path.name}: too many pixels for a thumbnail") from e
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise HTTPException(404, f"{path.name} is not an image: {e}") from e
        data = out.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return data


def _decoded_small(im: Image.Image, thin_lines: bool = False) -> Image.Image:
    """The thumbnail of an opened (not yet decoded) image: a JPEG is decoded at a reduced
    scale (``draft``: 1/2 to 1/8 in the decoder itself); whatever still has more than
    THUMB_MAX_PIXELS is refused before it is decoded."""
    im.draft("RGB" if im.mode not in ("L", "1") else "L", (THUMB_PX * 2, THUMB_PX * 2))
    if im.width * im.height > THUMB_MAX_PIXELS:
        raise HTTPException(413, f"{im.width} x {im.height} px: too many pixels for a thumbnail "
                                 f"(at most {THUMB_MAX_PIXELS // 1_000_000} MP)")
    im.load()
    factor = max(im.size) / THUMB_PX
    if thin_lines and factor >= 2 and im.mode in ("L", "RGB"):
        # dark pen lines a pixel wide vanish when shrunk: widen them first
        im = im.filter(ImageFilter.MinFilter(int(factor) // 2 * 2 + 1))
    im.thumbnail((THUMB_PX, THUMB_PX), reducing_gap=2.0)
    return im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")


def pipeline_choices(names: list[str], dirs: list[Path], default: str) -> list[dict[str, Any]]:
    """Name, description and whether it is the daemon's default, for the upload form."""
    from plotterd.pipeline import resolve_pipeline

    out = []
    for name in names:
        description = ""
        try:
            data = yaml.safe_load(resolve_pipeline(name, dirs).read_text()) or {}
            description = str(data.get("description") or "") if isinstance(data, dict) else ""
        except (PlotterdError, OSError, yaml.YAMLError):
            pass  # listed anyway: submitting it gives the real error
        out.append({"name": name, "description": description, "default": name == default})
    return out


def _pen_mm(job: dict[str, Any], pc: Any) -> float:
    """The nib the job was drawn for: its own pen, else the plotter's, else the default."""
    pen = (job.get("options") or {}).get("pen")
    if isinstance(pen, dict) and isinstance(pen.get("nib_mm"), (int, float)):
        return float(pen["nib_mm"])
    return pc.pen.nib_mm if pc.pen is not None else RoundNib().nib_mm


def _plot_summary(daemon: Any, job: dict[str, Any], view: Callable, now: float):
    """The live figures of a plot: progress, executed line, elapsed, ETA."""
    info = job["info"] or {}
    started = None
    if job["stage"] == "plot":
        for ev in reversed(daemon.store.events(job["id"])):
            if ev["state"] == "plotting":
                started = ev["at"]
                break
    end = now if job["state"] == "plotting" else (job["finished"] or job["updated"])
    elapsed = None if started is None else max(0.0, end - started)
    return {
        **view(job),
        "current": any(job["id"] == w.current for w in daemon.plotters.values()),
        "executed": info.get("executed") if job["stage"] == "plot" else None,
        "elapsed_s": None if elapsed is None else round(elapsed, 1),
        "eta_s": info.get("eta_s") if job["state"] == "plotting" else None,
        "plan": f"/api/jobs/{job['id']}/plan" if "gcode" in job["artefacts"] else None,
    }


def web_router(daemon: Any, guarded: list[Any], view: Callable) -> APIRouter:
    """The page's routes; ``guarded`` is the API's token check, ``view`` its job_view."""
    router = APIRouter()
    plans = PlanCache()
    thumbs = Thumbnails()
    cfg = daemon.cfg

    def get_job(job_id: int) -> dict[str, Any]:
        job = daemon.store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @router.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(_static("index.html"),
                            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
                                     "X-Content-Type-Options": "nosniff"})

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(_static(name), media_type=STATIC[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    @router.get("/api/pipelines", dependencies=guarded)
    def pipelines() -> list[dict[str, Any]]:
        from plotterd.pipeline import pipeline_names

        dirs = list(cfg.pipeline_dirs)
        return pipeline_choices(pipeline_names(tuple(dirs)), dirs, str(cfg.pipeline))

    @router.get("/api/live", dependencies=guarded)
    def live(plotter: str | None = None) -> dict[str, Any]:
        now = time.time()
        status = daemon.status()
        workers = list(daemon.plotters.values())
        if plotter is not None:
            if plotter not in daemon.plotters:
                raise HTTPException(404, f"no plotter is named {plotter!r}")
            workers = [daemon.plotters[plotter]]
        shown = next((w for w in workers if w.current is not None), workers[0])
        mine = shown.status()
        job = None
        if mine["current_job"] is not None:
            job = daemon.store.get(mine["current_job"])
        if job is None:  # nothing plotting: the last plot (of that plotter, if named)
            job = next((j for j in daemon.store.list(states=PLOTTED, limit=50)
                        if "gcode" in j["artefacts"] and j["plot_attempts"] > 0
                        and (plotter is None or shown.mine(j))), None)
        if job is not None and job.get("plotter") in daemon.plotters and plotter is None:
            mine = daemon.plotters[job["plotter"]].status()  # the plotter of the job shown
        return {"time": now, "plotter": {**status, **mine}, "plotters": status["plotters"],
                "job": None if job is None else _plot_summary(daemon, job, view, now)}

    @router.get("/api/jobs/{job_id}/plan", dependencies=guarded)
    def plan(job_id: int) -> JSONResponse:
        job = get_job(job_id)
        path = artefact_path(job, "gcode")
        pc = cfg.plotter_named(job.get("plotter") or "") or cfg.plotter
        try:
            data = plans.get(path, [str(pc.profile)], _pen_mm(job, pc))
        except PlotterdError as e:
            raise HTTPException(422, f"job {job_id}: cannot read its G-code: {e}") from e
        return JSONResponse(data, headers={"Cache-Control": "no-cache"})

    @router.get("/api/jobs/{job_id}/thumbnail/{name}", dependencies=guarded)
    def thumbnail(job_id: int, name: str) -> Response:
        if name not in THUMBNAIL_OF:
            raise HTTPException(404, f"no thumbnail of {name!r} (one of {', '.join(THUMBNAIL_OF)})")
        data = thumbs.get(artefact_path(get_job(job_id), name), thin_lines=name == "render")
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})

    return router
