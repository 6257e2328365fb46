"""plotterd's own G-code files: every line fits GRBL's 80 characters (header included), the
metadata lives in a sidecar tied to the file, and files without it (or from version 1)
still load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plotterd.draw.strokes import Canvas, StrokeGroup, Strokes
from plotterd.errors import InputError, OutOfBoundsError
from plotterd.gcode import load_profile, make_gcode
from plotterd.gcode.program import Program, sidecar_path
from plotterd.vector import PageSpec, Pen, VectorOptions

PROFILES = ["grbl-servo", "grbl-z", "marlin-servo", "klipper"]


def _job(profile: str):
    rng = np.random.default_rng(2)
    pts = rng.uniform(-0.9, 0.9, (40, 4, 2))
    strokes = Strokes(Canvas(100, 80), [StrokeGroup("polyline", pts, 1.0,
                                                   grey=[1.0] * 20 + [0.5] * 20)])
    return make_gcode(strokes, profile=profile, page=PageSpec(paper="a5"),
                      options=VectorOptions(pens=[Pen("black"), Pen("#808080")]))


@pytest.mark.parametrize("profile", PROFILES)
def test_every_written_line_fits_80_characters(tmp_path: Path, profile: str) -> None:
    res = _job(profile)
    paths = res.save(tmp_path / "plot.gcode")
    text = paths["gcode"].read_text()
    longest = max(len(line) for line in text.splitlines())
    assert longest <= 80, longest
    assert text.startswith("; plotterd gcode 2")
    assert f"; profile: {profile}" in text and "; strokes: " in text
    assert paths["gcode_meta"] == sidecar_path(paths["gcode"]) == tmp_path / "plot.gcode.json"
    meta = json.loads(paths["gcode_meta"].read_text())
    assert meta["header"]["pens"] == res.program.header["pens"]


def test_load_reads_the_sidecar_and_round_trips(tmp_path: Path) -> None:
    prog = _job("grbl-servo").program
    prog.save(tmp_path / "p.gcode")
    back = Program.load(tmp_path / "p.gcode")
    assert back.header == json.loads(json.dumps(prog.header))  # pens, times, feeds
    assert [(ln.text, ln.kind, ln.stroke) for ln in back.lines] == [
        (ln.text, ln.kind, ln.stroke) for ln in prog.lines]
    assert back.lines[-1].t_end == pytest.approx(prog.header["estimated_s"])


def test_without_or_with_a_stale_sidecar_the_file_is_parsed(tmp_path: Path) -> None:
    prog = _job("grbl-z").program
    gcode = tmp_path / "p.gcode"
    prog.save(gcode)
    gcode.write_text(gcode.read_text().replace("G0 X0 Y0", "G0 X1 Y-1"))  # edited by hand
    stale = Program.load(gcode)
    assert "pens" not in stale.header  # the sidecar was not for this text
    assert stale.header["pen_up"] == prog.header["pen_up"]
    assert stale.header["pen_down"] == prog.header["pen_down"]
    assert stale.header["bounds"] == prog.header["bounds"]
    assert stale.header["firmware"] == "grbl" and stale.stroke_count == prog.stroke_count
    sidecar_path(gcode).unlink()
    assert Program.load(gcode).stroke_count == prog.stroke_count


def test_version_1_files_still_load() -> None:
    header = {"version": 1, "profile": "grbl-servo", "firmware": "grbl", "pen_up": ["M5"],
              "pen_down": ["M3 S30"], "bounds": [0, 0, 300, 300], "strokes": 1,
              "setup_t_end": 0.1, "stroke_t_end": [2.0], "estimated_s": 3.0}
    text = ("; plotterd " + json.dumps(header) + "\nG21\nG90\nM5\n; stroke 0\n"
            "G0 X10 Y10 F6000\nM3 S30\nG1 X20 Y10 F3000\nM5\n; end\nG0 X0 Y0\n")
    prog = Program.parse(text)
    assert prog.header == header
    assert [ln.kind for ln in prog.lines] == ["setup"] * 3 + ["travel", "pen_down", "draw",
                                                             "pen_up", "end"]
    assert prog.lines[-1].t_end == 3.0


def test_own_files_are_bounds_checked_too() -> None:
    prog = _job("grbl-servo").program
    text = prog.text().replace("G0 X0 Y0", "G0 X0 Y320")
    with pytest.raises(OutOfBoundsError, match=r"line \d+ .*20\.00 mm beyond y_max"):
        Program.parse(text)
    # against another machine's (smaller) bounds, when the profile is given
    small = load_profile("grbl-servo")
    from dataclasses import replace
    with pytest.raises(OutOfBoundsError, match=r"line 4: the file was written for bounds X "
                                               r"0\.\.300.*larger than profile"):
        Program.parse(prog.text(), profile=replace(small, x_max=50.0))
    with pytest.raises(OutOfBoundsError, match="beyond x_max"):
        Program.parse(prog.text().replace("G0 X0 Y0", "G0 X310 Y0"), profile=small)


def test_machine_profile_not_the_header_decides() -> None:
    """Given the machine's profile, a file without a '; bounds:' line, or one claiming
    bounds bigger than the machine, is refused naming the file's line; a header claiming
    huge bounds cannot carry a move past the profile."""
    prog = _job("grbl-servo").program
    text = prog.text()
    profile = load_profile("grbl-servo")
    no_bounds = "\n".join(ln for ln in text.splitlines() if not ln.startswith("; bounds:"))
    with pytest.raises(InputError, match=r"line 1: the plotterd header has no '; bounds:'"):
        Program.parse(no_bounds, profile=profile)
    big = text.replace("; bounds: 0 0 300 300", "; bounds: 0 0 3000 3000")
    assert big != text
    with pytest.raises(OutOfBoundsError, match=r"line 4: the file was written for bounds "
                                               r"X 0\.\.3000"):
        Program.parse(big, profile=profile)
    Program.parse(big.replace("G0 X0 Y0", "G0 X2000 Y0"))  # header alone: as it claims
    with pytest.raises(OutOfBoundsError):
        Program.parse(text.replace("G0 X0 Y0", "G0 X2000 Y0"), profile=profile)


def test_z_moves_are_bounds_checked() -> None:
    """Z too: a Z pen's travel is between its up and down heights; a machine whose pen is
    not on Z has none."""
    z_prog = _job("grbl-z").program
    text = z_prog.text()
    Program.parse(text, profile=load_profile("grbl-z"))
    with pytest.raises(OutOfBoundsError, match=r"line \d+ .*moves Z to 40.*Z travel 0\.\.3"):
        Program.parse(text.replace("G0 X0 Y0", "G0 X0 Y0 Z40"), profile=load_profile("grbl-z"))
    servo = _job("grbl-servo").program.text().replace("G0 X0 Y0", "G0 X0 Y0 Z-5")
    with pytest.raises(OutOfBoundsError, match="moves Z to -5.*Z travel 0\\.\\.0"):
        Program.parse(servo, profile=load_profile("grbl-servo"))
    with pytest.raises(OutOfBoundsError, match="moves Z to -5"):
        Program.parse(servo)  # the header's own pen commands say the same


def test_per_pen_files_one_pen_each(tmp_path: Path) -> None:
    res = _job("marlin-servo")
    paths = res.save_per_pen(tmp_path / "art.gcode")
    assert [p.name for p in paths] == ["art-pen1-black.gcode", "art-pen2-808080.gcode"]
    whole = res.program.header["pens"]
    for path, pen in zip(paths, whole, strict=True):
        prog = Program.load(path)
        assert prog.stroke_count == pen["strokes"]
        assert not any(ln.text.startswith("M0") for ln in prog.lines)  # no pen change
        assert prog.header["pens"][0]["color"] == pen["color"]
        assert max(len(t) for t in path.read_text().splitlines()) <= 80
    assert sum(Program.load(p).stroke_count for p in paths) == res.program.stroke_count
