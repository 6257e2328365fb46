"""`plotterd gcode` and `plotterd profiles` through the click command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from plotterd.cli import cli
from plotterd.draw.strokes import Canvas, StrokeGroup, Strokes
from plotterd.gcode.program import Program


def _strokes_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    s = Strokes(Canvas(80, 60), [StrokeGroup("cubic", rng.uniform(-1, 1, (8, 4, 2)), 1.0,
                                             grey=rng.uniform(0.2, 1, 8))])
    path = tmp_path / "strokes.json"
    s.save(path)
    return path


def test_gcode_command_writes_outputs(tmp_path: Path) -> None:
    src = _strokes_file(tmp_path)
    out = tmp_path / "out" / "drawing.gcode"
    res = CliRunner().invoke(cli, [
        "gcode", str(src), "-o", str(out), "--profile", "marlin-servo", "--paper", "a5",
        "--margin", "0.5in", "--tolerance", "0.1mm", "--two-opt", "--travel-layer",
        "--grey-levels", "2",
    ])
    assert res.exit_code == 0, res.output
    assert "strokes on a5" in res.output and "estimated" in res.output
    prog = Program.load(out)
    assert prog.header["profile"] == "marlin-servo" and len(prog.header["pens"]) == 2
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["drawable_mm"][0] == 12.7  # 0.5 in margins
    assert out.with_suffix(".svg").exists()


def test_profiles_command_lists_and_reports_bad(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("firmware: grbl\nfeeds: {draw: -1}\n")
    res = CliRunner().invoke(cli, ["profiles", "--profiles-dir", str(tmp_path)])
    assert res.exit_code == 0
    for name in ("grbl-servo", "grbl-z", "marlin-servo", "klipper"):
        assert name in res.stdout
    assert "M280 P0 S30" in res.stdout and "X 0..300" in res.stdout
    assert "broken.yaml" in res.stderr and "feeds.draw" in res.stderr


def test_overflow_is_one_line_and_exit_2(tmp_path: Path) -> None:
    src = _strokes_file(tmp_path)
    out = tmp_path / "x.gcode"
    proc = subprocess.run(
        [sys.executable, "-c", "from plotterd.cli import main; main()", "gcode", str(src),
         "-o", str(out), "--paper", "a3"], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("plotterd: error:")]
    assert len(err) == 1 and "does not fit profile 'grbl-servo'" in err[0]
    assert "beyond" in err[0] and not out.exists()


def test_lengths_must_be_finite(tmp_path: Path) -> None:
    src = _strokes_file(tmp_path)
    for opt in ("--pen-width", "--margin"):
        res = CliRunner().invoke(cli, ["gcode", str(src), "-o", str(tmp_path / "x.gcode"),
                                       opt, "inf"])
        assert res.exit_code == 2 and "not a finite length" in res.output, res.output
    assert not (tmp_path / "x.gcode").exists()
