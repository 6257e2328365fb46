"""The one place the daemon calls the other stages (draw, vector, gcode, machine).

Everything the service needs from them goes through these few functions, so a change in a
stage's entry point is absorbed here. Heavy imports (torch) happen inside the functions:
the daemon process itself never loads torch, only the optimiser subprocess does.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from plotterd.progress import Progress


def pipeline_for_folder(sub: str, search_dirs: list[Path] | tuple = ()) -> str | None:
    """The pipeline an inbox subfolder names: a pipeline called ``sub``, else the one
    pipeline called ``sub-*`` (``points/`` -> ``points-ssmse``), else None. Looks at file
    names only, so the daemon process does not import torch."""
    from plotterd.pipeline import pipeline_names

    names = pipeline_names(tuple(search_dirs))
    if sub in names:
        return sub
    prefixed = [n for n in names if n.startswith(sub + "-")]
    return prefixed[0] if len(prefixed) == 1 else None


def check_pipelines(checks: list[tuple[str, str, dict[str, Any]]],
                    search_dirs: list[Path] | tuple = (),
                    pens_dir: Path | None = None) -> tuple[str, str, str] | None:
    """Load each (label, pipeline, overrides) in a child process (loading a pipeline
    imports torch, which the daemon process never does), with ``pens_dir`` as its pens
    folder; the first failure as (label, key, message), else None."""
    import os
    import subprocess
    import sys

    payload = json.dumps({"checks": checks, "dirs": [str(d) for d in search_dirs]})
    env = dict(os.environ, **({PENS_DIR_ENV: str(pens_dir)} if pens_dir else {}))
    proc = subprocess.run([sys.executable, "-c", "from plotterd.service.stages import "
                           "_check_pipelines_main as m; m()"], input=payload,
                          capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode != 0:
        from plotterd.errors import PlotterdError

        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PlotterdError(f"cannot check the folders' pipelines: {tail}")
    bad = json.loads(proc.stdout)
    return None if bad is None else (bad[0], bad[1], bad[2])


def _check_pipelines_main() -> None:
    """The child of :func:`check_pipelines`: JSON checks on stdin, the first error out."""
    import sys

    from plotterd.errors import ConfigError
    from plotterd.pipeline import load_pipeline

    data = json.load(sys.stdin)
    bad = None
    for label, pipeline, overrides in data["checks"]:
        try:
            load_pipeline(pipeline, overrides=overrides or None,
                          search_dirs=tuple(data["dirs"]))
        except ConfigError as e:
            bad = [label, e.key, e.message]
            break
    print(json.dumps(bad))


def page_spec(page: dict[str, Any]):
    from plotterd.vector import PageSpec

    return PageSpec(paper=page["paper"], orientation=page["orientation"],
                    margin_mm=page["margin_mm"])


PENS_DIR_ENV = "PLOTTERD_PENS_DIR"  # where plotterd.pen looks for `pen: {profile: NAME}`


def optimise_image(spec: dict[str, Any], job_dir: Path,
                   progress: Callable[[Progress], None]) -> tuple[Any, dict[str, Path]]:
    """Image -> strokes (resuming from the job's checkpoint) -> the draw artefacts."""
    # from the modules themselves: once plotterd.draw.optimise is imported anywhere, the
    # package's lazy name `optimise` is that module, not the function
    from plotterd.draw.export import write_outputs
    from plotterd.draw.optimise import optimise
    from plotterd.pipeline import load_pipeline

    pens_dir = spec.get("pens_dir")
    pipeline = load_pipeline(spec["pipeline"], overrides=spec.get("overrides") or None,
                             search_dirs=tuple(spec.get("pipeline_dirs", ())),
                             pens_folder=Path(pens_dir) if pens_dir else None)
    result = optimise(
        str(job_dir / spec["input"]), pipeline, device=spec.get("device", "auto"),
        progress=progress, checkpoint=job_dir / "checkpoint.pt",
        checkpoint_every=spec.get("checkpoint_every", 25), iterations=spec.get("iterations"),
        seed=spec.get("seed"),
    )
    paths = write_outputs(result, job_dir)
    return result.strokes, {k: Path(v) for k, v in paths.items()}


def vector_options(vector: dict[str, Any] | None):
    """The job's ``vector`` settings (config ``vector:`` / ``folders.<name>.vector``) as
    VectorOptions; None = the vector stage's defaults. Strokes optimised for paper still
    draw with their own nib (the vector stage reads it from their metadata)."""
    from plotterd.service.config import VectorConfig
    from plotterd.service.config import vector_options as _options

    if not vector:
        return None
    return _options(VectorConfig(**vector))


def sequence_source(path: str | Path, options: dict[str, Any] | None):
    """A QuickDraw / Sketch-RNN file with the job's sidecar options (index, grid, split);
    a bad option fails the job naming it."""
    from plotterd.errors import ConfigError
    from plotterd.vector.sequences import source_with_options

    try:
        return source_with_options(path, options)
    except ConfigError as e:
        raise ConfigError(e.key, e.message, "job options (sidecar)") from e


def pen_nib(pen: Any) -> float | None:
    """The nib of a job's ``pen`` option (a pen's dict, settled at intake), else None."""
    from plotterd.pen import pen_from_dict

    return pen_from_dict(pen, key="pen").nib_mm if isinstance(pen, dict) else None


def with_nib(vector: dict[str, Any], nib: float | None) -> dict[str, Any]:
    """The vector settings with every pen at the job's pen's ``nib``, if it has one.
    Strokes optimised for paper draw with their own nib whatever this says (the vector
    stage reads it from their metadata)."""
    if nib is None:
        return vector
    base = vector.get("pens") or [{"color": "black"}]
    return {**vector, "pens": [{**p, "width_mm": nib} for p in base]}


def at_nib(source: Any, page: Any, options: Any, nib: float):
    """An SVG or stroke-sequence file laid out on the page with every layer at the pen's
    ``nib`` (an SVG's own stroke widths say how it was drawn on screen, not what pen
    the plotter holds): the vector stage's VectorResult."""
    import vpype as vp

    from plotterd.vector import PX_PER_MM, vectorise

    laid_out = vectorise(source, page, options)
    for layer in laid_out.document.layers.values():
        layer.set_property(vp.METADATA_FIELD_PEN_WIDTH, nib * PX_PER_MM)
    return laid_out


# the names the job's artefacts give make_gcode's files (draw's svg is the drawing)
GCODE_ARTEFACTS = {"svg": "page", "stats": "gcode_stats"}
# a drawing clipped by more than this on a plotter's page does not fit that plotter
FIT_CLIPPED_MM = 1.0


def make_gcodes(source: Any, spec: dict[str, Any], job_dir: Path
                ) -> tuple[dict[str, Path], dict]:
    """The job's G-code for each plotter that may draw it (``spec["plotters"]``: name,
    profile, page, vector, out), made once per distinct (profile, page, vector). Returns the
    first plotter's files and stats as :func:`make_gcode` does, with ``stats["gcode_for"]``:
    per plotter its artefact files, whether the drawing fits its page unclipped, and the
    error if its G-code could not be made. When no plotter's could, the first error is
    raised (fails the job, as with one plotter)."""
    from plotterd.errors import PlotterdError

    targets = spec.get("plotters") or [{"name": None, "out": "plot.gcode"}]
    made: dict[str, Any] = {}
    gcode_for: dict[str, Any] = {}
    first: tuple | None = None
    errors: list[PlotterdError] = []
    for t in targets:
        one = {**spec, **{k: v for k, v in t.items() if k not in ("name", "out")}}
        key = json.dumps([one["profile"], one["page"], one.get("vector")], sort_keys=True)
        if key not in made:
            try:
                made[key] = make_gcode(source, one, job_dir, out=t.get("out", "plot.gcode"))
            except PlotterdError as e:
                made[key] = e
        got = made[key]
        if isinstance(got, PlotterdError):
            errors.append(got)
            gcode_for[t["name"]] = {"error": str(got)}
            continue
        paths, stats = got
        first = first or got
        clipped = stats.get("clipped_mm") or 0.0
        files = {GCODE_ARTEFACTS.get(k, k): str(Path(v).relative_to(job_dir))
                 for k, v in paths.items() if Path(v).is_relative_to(job_dir)}
        gcode_for[t["name"]] = {"files": files, "clipped_mm": clipped,
                                "fits": clipped <= FIT_CLIPPED_MM, "error": None}
    if first is None:
        raise errors[0]
    paths, stats = first
    if targets[0].get("name") is not None:
        stats = {**stats, "gcode_for": gcode_for}
    return paths, stats


def make_gcode(source: Any, spec: dict[str, Any], job_dir: Path, out: str = "plot.gcode"
               ) -> tuple[dict[str, Path], dict]:
    """Strokes or an SVG / stroke-sequence path -> page layout -> G-code in
    ``job_dir/<out>`` (and one file per pen with ``vector.per_pen``)."""
    from plotterd.draw.strokes import Strokes
    from plotterd.gcode import load_profile
    from plotterd.gcode import make_gcode as _make_gcode
    from plotterd.vector.sequences import is_sequence_file

    profile = load_profile(spec["profile"])
    if isinstance(source, str | Path) and Path(source).suffix.lower() in FOREIGN_GCODE:
        return _take_foreign_gcode(Path(source), profile, job_dir / out)
    overrides = dict(spec.get("overrides") or {})
    nib = pen_nib(overrides.pop("pen", None))
    vector = with_nib(spec.get("vector") or {}, nib)
    if isinstance(source, str | Path) and is_sequence_file(source):
        source = sequence_source(source, overrides)
    page, options = page_spec(spec["page"]), vector_options(vector)
    if nib is not None and not isinstance(source, Strokes):  # a file's widths are not the pen's
        laid_out = at_nib(source, page, options, nib)
        result = _make_gcode(laid_out.document, profile=profile)
        result.stats = {**laid_out.stats, **result.stats, "source": laid_out.stats.get("source")}
    else:
        result = _make_gcode(source, profile=profile, page=page, options=options)
    out = job_dir / out
    paths = {k: Path(v) for k, v in result.save(out).items()}
    if vector.get("per_pen"):
        # the library function `plotterd gcode --per-pen` uses: plot-penN-COLOUR.gcode
        for k, path in enumerate(result.save_per_pen(out), start=1):
            paths[f"pen{k}"] = Path(path)
    return paths, jsonable(getattr(result, "stats", {}))


def calibration_sheet(pens: list[Any], names: list[str], page: dict[str, Any], profile: str,
                      out_dir: Path) -> dict[str, Any]:
    """The calibration sheet of ``pens`` (PenModels, one row each, called ``names``) on the
    plotter's paper at its margin: ``sheet.svg`` and ``sheet.json`` (the layout a photo is
    fitted against) and the sheet's G-code for ``profile`` in ``out_dir``. Returns their
    paths and the layout. A sheet that does not fit the paper (either way round, with
    orientation auto) is a ConfigError that says how big it is."""
    from plotterd.calibration import make_sheet, write_sheet
    from plotterd.errors import ConfigError
    from plotterd.vector import PX_PER_MM
    from plotterd.vector.layout import paper_size_px

    turns = ["portrait", "landscape"] if page["orientation"] == "auto" else [page["orientation"]]
    for k, turn in enumerate(turns):
        w, h = paper_size_px(page["paper"], turn, None)
        try:
            sheet = make_sheet(pens, (w / PX_PER_MM, h / PX_PER_MM), page["margin_mm"], names)
            break
        except ConfigError as e:
            if e.key != "paper" or k == len(turns) - 1:
                raise
    files = write_sheet(sheet, out_dir)
    spec = {"profile": profile, "page": {**page, "orientation": turn}}
    paths, _stats = make_gcode(sheet.document, spec, out_dir, out="calibration.gcode")
    return {"svg": files["svg"], "json": files["json"], "gcode": paths["gcode"],
            "layout": sheet.layout}


def fit_pen_photo(photo: Path, layout: Path, name: str, row: int, record: str
                  ) -> dict[str, Any]:
    """Fit pen ``name`` from ``photo`` of the sheet ``layout`` (its ``row``), in a child
    process (the fit imports torch, which the daemon process never does). The fit's JSON
    (the pen's dict, residual, swatches); a photo that cannot be measured raises the
    calibration's CalibrationError with its message, nothing saved."""
    import subprocess
    import sys

    from plotterd.calibration.errors import CalibrationError
    from plotterd.errors import PlotterdError

    payload = json.dumps({"photo": str(photo), "layout": str(layout), "name": name,
                          "row": row, "record": record})
    proc = subprocess.run([sys.executable, "-c", "from plotterd.service.stages import "
                           "_fit_pen_main as m; m()"], input=payload,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PlotterdError(f"the pen fit failed: {tail}")
    answer = json.loads(proc.stdout)
    if "error" in answer:
        raise CalibrationError(answer["error"])
    return answer["fit"]


def _fit_pen_main() -> None:
    """The child of :func:`fit_pen_photo`: its JSON on stdin, ``{"fit"}`` or ``{"error"}``
    (an InputError's message: a bad photo or layout) on stdout."""
    import sys

    from plotterd.calibration import read_layout
    from plotterd.calibration.fit import fit_pen
    from plotterd.errors import ConfigError, InputError

    ask = json.load(sys.stdin)
    try:
        fit = fit_pen(ask["photo"], read_layout(ask["layout"]), ask["name"], int(ask["row"]),
                      photo_record=ask["record"])
        answer: dict[str, Any] = {"fit": jsonable(fit.to_json())}
    except (InputError, ConfigError) as e:
        answer = {"error": str(e)}
    print(json.dumps(answer))


FOREIGN_GCODE = (".gcode", ".nc", ".ngc", ".gc")  # G-code made by other tools


def _take_foreign_gcode(source: Path, profile: Any, out: Path
                        ) -> tuple[dict[str, Path], dict]:
    """G-code from another tool (vpype-gcode, DrawingBotV3, by hand): parsed into moves
    and strokes against the daemon's profile, every move bounds-checked and coordinate
    changes refused (an error fails this job only), then saved with its sidecar so
    progress and resume work stroke by stroke."""
    from plotterd.gcode.program import Program

    program = Program.load(source, profile=profile)
    meta = program.save(out)
    header = program.header
    stats = {"source": source.name, "foreign_gcode": True, "profile": profile.name,
             "gcode_lines": len(program.lines),
             "strokes": header.get("strokes") if isinstance(header.get("strokes"), int)
             else len(header.get("strokes") or []),
             "estimated_s": header.get("estimated_s")}
    return {"gcode": out, "gcode_meta": meta}, jsonable(stats)


def sim_url(firmware: str, speed: str, record: Path | None = None, seed: int = 1,
            header: dict[str, Any] | None = None) -> str:
    """The pyserial URL of the simulated plotter (dry-run), shaped like the machine the
    G-code was written for (bounds and pen kind from the program header)."""
    fw = "marlin" if firmware in ("marlin", "klipper") else "grbl"
    url = f"sim://{fw}?speed={speed}&seed={seed}"
    header = header or {}
    bounds = header.get("bounds")
    if isinstance(bounds, list) and len(bounds) == 4:
        url += "&bounds=" + ",".join(f"{float(b):g}" for b in bounds)
    down = " ".join(header.get("pen_down") or []).upper()
    if "M280" in down:
        url += "&pen=m280"
    elif "Z" in down:
        url += "&pen=z"
    elif "M3" in down and fw == "grbl":
        url += "&pen=servo"
    if record is not None:
        url += "&record=" + quote(str(record), safe="/")
    return url


def new_control():
    from plotterd.machine import StreamControl

    return StreamControl()


def connect_plotter(port: str, profile: str, baudrate: int,
                    timeouts: dict[str, float] | None = None,
                    machine: dict[str, Any] | None = None):
    """Open ``port`` and connect to the firmware of ``profile``; the Plotter stays open
    (reopening a port resets Arduino-based boards). ``timeouts`` and ``machine``: fields of
    the machine stage's Timeouts and MachineOptions (config plotter.timeouts / .machine)."""
    from plotterd.gcode import load_profile
    from plotterd.machine import Plotter, Timeouts
    from plotterd.machine.plotter import MachineOptions

    plotter = Plotter(port, load_profile(profile), baudrate=baudrate,
                      timeouts=Timeouts(**(timeouts or {})),
                      options=MachineOptions(**(machine or {})))
    plotter.connect()
    return plotter


def sim_plotter(profile: str, sim_speed: str):
    """A simulated plotter shaped like ``profile`` (dry-run machine commands)."""
    from plotterd.gcode import load_profile
    from plotterd.machine import Plotter

    prof = load_profile(profile)
    header = {"bounds": list(prof.bounds), "pen_down": list(prof.pen.down_commands)}
    plotter = Plotter(sim_url(prof.firmware, sim_speed, header=header), prof)
    plotter.connect()
    return plotter


def list_ports() -> list[dict[str, Any]]:
    """Serial ports found (pyserial), each with its stable /dev/serial/by-id name if any."""
    import os

    import plotterd.machine as machine

    if hasattr(machine, "list_ports"):
        return jsonable(machine.list_ports())
    from serial.tools import list_ports as lp

    by_id: dict[str, str] = {}
    folder = "/dev/serial/by-id"
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            link = os.path.join(folder, name)
            by_id[os.path.realpath(link)] = link
    return [{"device": p.device, "by_id": by_id.get(os.path.realpath(p.device)),
             "description": p.description, "hwid": p.hwid} for p in lp.comports()]


def _start_stroke(program: Any, start_stroke: int | None) -> int | None:
    strokes = sorted({ln.stroke for ln in program.lines if ln.stroke is not None})
    if start_stroke is not None and strokes and start_stroke not in strokes:
        # resuming past the last stroke recorded: redraw from the next one that exists
        later = [s for s in strokes if s >= start_stroke]
        start_stroke = later[0] if later else strokes[-1]
    return start_stroke


def load_program(gcode_path: Path):
    from plotterd.gcode.program import Program

    return Program.load(gcode_path)


def sim_job_plotter(program: Any, sim_speed: str, record: Path | None):
    """Dry-run: a fresh simulated plotter shaped like the program's machine, connected."""
    from plotterd.machine import Plotter

    url = sim_url(program.firmware, sim_speed, record, header=program.header)
    plotter = Plotter(url, program.firmware, header=program.header)
    plotter.connect()
    return plotter


def plot_on(plotter: Any, program: Any, *, start_stroke: int | None,
            progress: Callable[[Progress], None], control: Any,
            render_to: Path | None = None):
    """Stream a job's program over an open Plotter; its StreamResult."""
    return plotter.stream(program, start_stroke=_start_stroke(program, start_stroke),
                          progress=progress, control=control, render_to=render_to)


def jsonable(obj: Any) -> Any:
    """Stats objects (dataclasses, numpy numbers) -> plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, int):
        return int(obj)
    try:
        f = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    return f if math.isfinite(f) else None


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=1, sort_keys=True)
