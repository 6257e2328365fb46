"""The pen in the daemon: a plotter's `pen:` (a fitted profile from the pens folder) and a
job's own (sidecar) pen reach the optimiser, the G-code and the simulator's render."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plotterd.errors import ConfigError
from plotterd.pen import FittedPen, RoundNib, save_pen_profile
from plotterd.service.config import parse_config

from .daemon_proc import DaemonProc, drop
from .helpers import DATA

FINE = FittedPen("fine-liner", nib_mm=0.42, darkness=0.8, colour="#202838",
                 nominal_nib_mm=0.3, fitted_at="2026-12-07T22:00:00Z", residual=0.01)
BROAD = FittedPen("broad", nib_mm=0.9, darkness=0.6, colour="#303030", nominal_nib_mm=0.8)


SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="40mm" height="30mm" '
       'viewBox="0 0 40 30"><path d="M 2 2 L 38 28 M 2 28 L 38 2" stroke="black" '
       'fill="none"/></svg>\n')


def test_plotter_pen_is_a_fitted_profile_and_sets_the_vector_nib(tmp_path):
    save_pen_profile(FINE, tmp_path / "pens")
    cfg = parse_config({"state_dir": str(tmp_path / "state"), "pens_dir": str(tmp_path / "pens"),
                        "plotters": [{"name": "a", "pen": {"profile": "fine-liner"}},
                                     {"name": "b", "pen": {"nib_mm": 0.5, "darkness": 0.9}},
                                     {"name": "c"}],
                        "folders": {"fine": {"set": {"pen.profile": "fine-liner"}}}})
    # a folder's profile is the fitted pen, whole (not merged over the pipeline's pen)
    assert cfg.folders["fine"].overrides == {"pen": FINE.to_dict()}
    a, b, c = cfg.plotters
    assert a.pen == FINE and b.pen == RoundNib(0.5, 0.9) and c.pen is None
    assert [p["width_mm"] for p in cfg.vector_of(a, None).pens] == [0.42]
    assert [p["width_mm"] for p in cfg.vector_of(c, None).pens] == [0.3]


def test_pens_dir_defaults_to_the_environment_then_the_state_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("PLOTTERD_PENS_DIR", raising=False)
    state = tmp_path / "state"
    assert parse_config({"state_dir": str(state)}).pens_dir == state / "pens"
    monkeypatch.setenv("PLOTTERD_PENS_DIR", str(tmp_path / "env-pens"))
    assert parse_config({"state_dir": str(state)}).pens_dir == tmp_path / "env-pens"
    assert parse_config({"state_dir": str(state), "pens_dir": str(tmp_path / "p")}
                        ).pens_dir == tmp_path / "p"


@pytest.mark.parametrize("data, key", [
    ({"plotter": {"pen": {"profile": "missing"}}}, "plotter.pen.profile"),
    ({"plotters": [{"name": "a"}, {"name": "b", "pen": {"profile": "missing"}}]},
     "plotters[1].pen.profile"),
    ({"plotter": {"pen": {"profile": "../etc/passwd"}}}, "plotter.pen.profile"),
    ({"plotter": {"pen": {"nib_mm": 0}}}, "plotter.pen.nib_mm"),
    ({"plotter": {"pen": "fine-liner"}}, "plotter.pen"),
    ({"folders": {"x": {"set": {"pen.profile": "missing"}}}}, "folders.x.set.pen.profile"),
])
def test_a_bad_plotter_pen_is_refused_naming_its_key(tmp_path, data, key):
    save_pen_profile(FINE, tmp_path / "pens")
    with pytest.raises(ConfigError) as e:
        parse_config({"state_dir": str(tmp_path), "pens_dir": str(tmp_path / "pens"), **data})
    assert e.value.key == key


def test_the_daemon_refuses_to_start_with_a_missing_profile(tmp_path):
    conf = tmp_path / "plotterd.yaml"
    conf.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                    "plotter": {"pen": {"profile": "missing"}}}))
    r = subprocess.run([sys.executable, "-m", "plotterd.service", "--config", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "plotter.pen.profile: no pen profile 'missing'" in r.stderr


def _svg_nib_mm(svg: str) -> float:
    """The stroke width of a drawing.svg (1 px = 1 nib) in mm."""
    width_mm = float(re.search(r'width="([\d.]+)mm"', svg).group(1))
    view_w = float(re.search(r'viewBox="[-\d.]+ [-\d.]+ ([\d.]+) ', svg).group(1))
    widths = {float(w) for w in re.findall(r'stroke-width="([\d.]+)"', svg)}
    assert len(widths) == 1, widths
    return widths.pop() * width_mm / view_w


def _render_pen(job_dir: Path) -> tuple[float, float, float]:
    """(stroke width, opacity) of the simulator's render.svg and its PNG's darkest grey."""
    import cv2

    svg = (job_dir / "render.svg").read_text()
    width = float(re.search(r'stroke-width="([\d.]+)"', svg).group(1))
    opacity = float(re.search(r'opacity="([\d.]+)"', svg).group(1))
    png = cv2.imread(str(job_dir / "render.png"), cv2.IMREAD_GRAYSCALE)
    return width, opacity, float(png.min())


def _pens_and_pipeline(tmp_path: Path, **pipeline) -> tuple[Path, Path]:
    """A pens folder with FINE and BROAD, and a folder with `tinypaper`: the tiny pipeline
    sized for paper (30 mm, so the pen's nib sets its canvas)."""
    pens, pipes = tmp_path / "pens", tmp_path / "pipelines"
    save_pen_profile(FINE, pens)
    save_pen_profile(BROAD, pens)
    pipes.mkdir()
    tiny = yaml.safe_load((Path(__file__).parents[2] / "pipelines" / "tiny.yaml").read_text())
    del tiny["resolution"]  # with a page, the canvas follows from the page and the nib
    tiny.update(name="tinypaper", page={"long_side_mm": 30}, iterations=5, **pipeline)
    (pipes / "tinypaper.yaml").write_text(yaml.safe_dump(tiny))
    return pens, pipes


def test_a_pipelines_own_profile_is_read_from_the_daemons_pens_folder(tmp_path):
    """No plotter pen: the pipeline's `pen: {profile}` is loaded by the optimiser process
    from the daemon's pens_dir; a folder's `set: {pen.profile}` is checked at start."""
    pens, pipes = _pens_and_pipeline(tmp_path, pen={"profile": "broad"})
    d = DaemonProc(tmp_path, pens_dir=str(pens), pipeline_dirs=[str(pipes)],
                   pipeline="tinypaper",
                   folders={"fine": {"set": {"pen.profile": "fine-liner"}}}).start()
    try:
        drop(DATA / "camera_small.png", d.inbox, "own.png")
        drop(DATA / "camera_small.png", d.inbox / "fine", "fine.png")
        jobs = {j["name"]: j for j in d.wait_states(2, timeout=180)}
    finally:
        d.stop()
    for name, pen in (("own.png", BROAD), ("fine.png", FINE)):
        assert jobs[name]["state"] == "done", jobs[name]["error"]
        meta = yaml.safe_load((Path(jobs[name]["dir"]) / "strokes.json").read_text())
        assert meta["metadata"]["pen"] == pen.to_dict()


def test_plotter_and_sidecar_pens_reach_every_stage(tmp_path):
    """A plotter with a fitted pen: its jobs are optimised, laid out and rendered with that
    pen; a job whose sidecar names another profile gets that one; a sidecar naming a
    missing profile fails its job at intake, with the reason."""
    pens, pipes = _pens_and_pipeline(tmp_path)
    d = DaemonProc(tmp_path, pens_dir=str(pens), pipeline_dirs=[str(pipes)],
                   pipeline="tinypaper", plotter={"pen": {"profile": "fine-liner"}}).start()
    try:
        d.inbox.mkdir(parents=True, exist_ok=True)
        (d.inbox / "broad.yaml").write_text("pen: {profile: broad}\n")
        (d.inbox / "nope.yaml").write_text("pen: {profile: nope}\n")
        drop(DATA / "camera_small.png", d.inbox, "plotter-pen.png")
        drop(DATA / "camera_small.png", d.inbox, "broad.png")
        drop(DATA / "camera_small.png", d.inbox, "nope.png")
        (d.inbox / "lines.yaml").write_text("pen: {profile: broad}\n")
        (tmp_path / "lines.svg").write_text(SVG)
        drop(tmp_path / "lines.svg", d.inbox)
        jobs = {j["name"]: j for j in d.wait_states(4, timeout=180)}
    finally:
        d.stop()
    for name, pen in (("plotter-pen.png", FINE), ("broad.png", BROAD)):
        job = jobs[name]
        assert job["state"] == "done", job["error"]
        job_dir = Path(job["dir"])
        meta = yaml.safe_load((job_dir / "strokes.json").read_text())["metadata"]
        assert meta["pen"] == pen.to_dict()
        assert _svg_nib_mm((job_dir / "drawing.svg").read_text()) == pytest.approx(pen.nib_mm)
        header = yaml.safe_load((job_dir / "plot.gcode.json").read_text())
        assert {p["width_mm"] for p in header["header"]["pens"]} == {pen.nib_mm}
        width, opacity, darkest = _render_pen(job_dir)
        assert (width, opacity) == (pen.nib_mm, pen.darkness)
        # crossings saturate at the pen's darkness, never darker
        assert darkest == pytest.approx(255 * (1 - pen.darkness), abs=2)
    svg_dir = Path(jobs["lines.svg"]["dir"])  # no strokes: the nib of the pen it asked for
    assert jobs["lines.svg"]["state"] == "done", jobs["lines.svg"]["error"]
    header = yaml.safe_load((svg_dir / "plot.gcode.json").read_text())
    assert {p["width_mm"] for p in header["header"]["pens"]} == {BROAD.nib_mm}
    assert _render_pen(svg_dir)[:2] == (BROAD.nib_mm, BROAD.darkness)
    nope = jobs["nope.png"]
    assert nope["state"] == "failed"
    assert "pen.profile: no pen profile 'nope'" in nope["error"]
