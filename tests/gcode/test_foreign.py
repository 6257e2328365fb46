"""Foreign G-code (vpype-gcode, DrawingBotV3 style, hand-written): parsed into moves and
strokes against a profile, every move bounds-checked, what cannot be followed refused, and
a resume from stroke k draws what the whole file draws from stroke k on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from plotterd.errors import InputError, OutOfBoundsError
from plotterd.gcode import load_profile
from plotterd.gcode.interpret import Interpreter, PenModel
from plotterd.gcode.program import Program
from plotterd.gcode.tokens import strip_comment

DATA = Path(__file__).parent / "data"
SERVO = load_profile("grbl-servo")


def load(name: str, profile: str = "grbl-servo") -> Program:
    return Program.load(DATA / name, profile=load_profile(profile))


def parse(text: str, profile: str = "grbl-servo") -> Program:
    return Program.parse(text, profile=load_profile(profile))


def drawn(lines: list[str], profile: str = "grbl-servo") -> list[tuple]:
    """Pen-down segments a machine draws running ``lines`` from power-up (at the origin),
    rounded to 0.01 mm."""
    p = load_profile(profile)
    pen = PenModel.from_commands(p.pen.up_commands, p.pen.down_commands)
    it = Interpreter(p.bounds, p.firmware, pen, "test")
    out = []
    for n, text in enumerate(lines):
        x, y = it.state.x, it.state.y
        step = it.run(n + 1, strip_comment(text))
        if step.pen_before and step.pen_after:
            for px, py in step.points:
                out.append((round(x, 2), round(y, 2), round(px, 2), round(py, 2)))
                x, y = px, py
    return out


def resume_plan(prog: Program, k: int) -> list[str]:
    """What the streamer sends to resume at stroke k: the setup lines, a pen lift, then the
    lines from the stroke's first line on (plotterd.machine.stream._plan)."""
    setup = [ln.text for ln in prog.lines if ln.kind == "setup"]
    first = prog.stroke_start(k)
    return setup + prog.header["pen_up"] + [ln.text for ln in prog.lines[first:]]


def test_vpype_gcode_absolute_file_has_its_strokes_and_bounds():
    prog = load("vpype_gcode_servo_abs.gcode")
    h = prog.header
    # make_vpype_samples.py: a rectangle, a circle, a zigzag on A5 with vertical flip
    assert prog.stroke_count == h["strokes"] == 3
    assert h["drawing_bounds"] == pytest.approx([20, 28, 180, 118], abs=0.01)
    assert h["source"] == "foreign" and h["pen_up"] == SERVO.pen_up_lines()
    kinds = [ln.kind for ln in prog.lines if ln.stroke == 0]
    assert kinds[0] == "travel" and kinds.count("pen_down") == 2 and kinds[-1] == "pen_up"
    assert kinds.count("draw") == 4  # the rectangle's four sides
    assert [ln.kind for ln in prog.lines[-2:]] == ["end", "end"]  # G00 X0 Y0, M2
    assert prog.lines[0].kind == "setup" and prog.lines[0].source_line == 1
    assert all(ln.t_end is not None for ln in prog.lines)
    assert prog.lines[-1].t_end == pytest.approx(h["estimated_s"], abs=1e-3)


def test_vpype_gcode_relative_file_is_tracked():
    rel = load("vpype_gcode_servo_rel.gcode")
    ab = load("vpype_gcode_servo_abs.gcode")
    assert rel.stroke_count == 3
    assert rel.header["drawing_bounds"] == pytest.approx(ab.header["drawing_bounds"], abs=0.01)
    rel_segs = drawn((DATA / "vpype_gcode_servo_rel.gcode").read_text().splitlines())
    abs_segs = drawn((DATA / "vpype_gcode_servo_abs.gcode").read_text().splitlines())
    assert len(rel_segs) == len(abs_segs) == 329
    # the relative file's 4-decimal steps add up to within 0.02 mm of the absolute one
    assert max(abs(a - b) for r, s in zip(rel_segs, abs_segs, strict=True)
               for a, b in zip(r, s, strict=True)) < 0.02


def test_drawingbotv3_style_file_with_z_pen_modal_lines_and_arcs():
    prog = load("drawingbotv3_style_grbl_z.gcode", "grbl-z")
    h = prog.header
    assert prog.stroke_count == 7  # square, triangle, circle (two G2), four hooks
    # the circle's G2 arcs reach Y -40 and -80 (their extent, not only their end points)
    assert h["drawing_bounds"] == pytest.approx([30, -230, 240, -30], abs=0.01)
    circle = [ln for ln in prog.lines if ln.stroke == 2 and ln.kind == "draw"]
    assert [ln.text.split()[0] for ln in circle] == ["G2", "G2"]
    modal = [ln for ln in prog.lines if ln.stroke == 0 and ln.kind == "draw"]
    assert len(modal) == 4 and modal[0].text.startswith("X")  # modal X.. Y.. lines
    segs = drawn([ln.text for ln in prog.lines], "grbl-z")
    ys = [p for s in segs for p in (s[1], s[3])]
    assert min(ys) == pytest.approx(-230) and max(ys) == pytest.approx(-30)


@pytest.mark.parametrize("name,profile", [
    ("vpype_gcode_servo_abs.gcode", "grbl-servo"),
    ("vpype_gcode_servo_rel.gcode", "grbl-servo"),
    ("drawingbotv3_style_grbl_z.gcode", "grbl-z"),
])
def test_resume_from_stroke_k_draws_the_rest(name, profile):
    prog = load(name, profile)
    full = drawn([ln.text for ln in prog.lines], profile)
    for k in range(1, prog.stroke_count):
        first = prog.stroke_start(k)
        # the stroke starts right after the previous stroke's pen-up (and its dwell)
        assert prog.lines[first - 1].kind == "pen_up" and prog.lines[first - 1].stroke == k - 1
        tail = full[_first_segment(prog, k, profile):]
        assert drawn(resume_plan(prog, k), profile) == tail, k


def _first_segment(prog: Program, k: int, profile: str) -> int:
    return len(drawn([ln.text for ln in prog.lines[:prog.stroke_start(k)]], profile))


def test_anchor_restores_feed_given_once_and_relative_mode():
    rel = load("vpype_gcode_servo_rel.gcode")
    i = rel.stroke_start(1)
    anchor = [ln.text for ln in rel.lines[i:i + 4]]
    assert anchor[0] == "G90" and anchor[1].startswith("G0 X20.000 Y118.000")
    assert anchor[2] == "G91" and rel.lines[i + 3].source_line is not None
    ab = load("vpype_gcode_servo_abs.gcode")
    i = ab.stroke_start(1)
    assert ab.lines[i].text == "G0 X20.000 Y118.000 F3000"  # the F3000 set at the top
    assert ab.lines[i].source_line is None and ab.lines[i + 1].source_line is not None


def test_a_move_out_of_bounds_is_refused_with_line_and_overflow():
    text = (DATA / "vpype_gcode_servo_abs.gcode").read_text().splitlines()
    n = next(i for i, t in enumerate(text) if t.startswith("G01")) + 5
    text[n] = "G01 X312.5 Y100"
    with pytest.raises(OutOfBoundsError, match=rf"line {n + 1} .*12\.50 mm beyond x_max"):
        parse("\n".join(text))


def test_arc_extent_is_checked_not_only_its_end():
    # from (290, 150) a half circle to (290, 170) bulging to X 300 + 10 = 300.0? no: r 10
    # around (290, 160) counter-clockwise from -90 deg through 0 deg: reaches X 300 - ok
    ok = "G21\nG90\nG0 X290 Y150\nG3 X290 Y170 I0 J10 F1000\n"
    assert parse(ok).header["moves_bounds"][2] == pytest.approx(300)
    bad = "G21\nG90\nG0 X291 Y150\nG3 X291 Y170 I0 J10 F1000\n"  # bulges to X 301
    with pytest.raises(OutOfBoundsError, match=r"line 4 .*1\.00 mm beyond x_max"):
        parse(bad)
    r_form = "G90\nG0 X10 Y10\nG2 X30 Y10 R10 F1000\n"  # upper half: Y reaches 20
    assert parse(r_form).header["moves_bounds"][3] == pytest.approx(20)


def test_relative_moves_and_inches_are_followed_to_the_overflow():
    text = "G21\nG91\nG0 X100 Y100\nG0 X100\nG0 X100\nG0 X5\n"  # 305: out on the 4th move
    with pytest.raises(OutOfBoundsError, match=r"line 6 .*5\.00 mm beyond x_max"):
        parse(text)
    inches = "G20\nG90\nG0 X11 Y1\nG0 X12 Y1\n"  # 279.4 mm is in, 304.8 mm is out
    with pytest.raises(OutOfBoundsError, match=r"line 4 .*4\.80 mm beyond x_max"):
        parse(inches)


@pytest.mark.parametrize("line,what", [
    ("G92 X0 Y0", "G92"), ("G10 L20 P1 X0 Y0", "G10"), ("G53 G0 X10", "G53"),
    ("G55", "G55"), ("G28 X0 Y0", "G28 with axis words"), ("G18", "G18"),
    ("G38.2 Z-5 F100", "G38.2"), ("$J=G91 X10 F1000", "jogging"), ("G5 X1 Y1 I1 J1 P1 Q1",
                                                                   "G5 is not understood"),
])
def test_coordinate_changes_and_the_unknown_are_refused_naming_the_line(line, what):
    text = f"G21\nG90\nG0 X10 Y10\n{line}\nG0 X20 Y20\n"
    with pytest.raises(InputError, match=rf"line 4 .*{what}"):
        parse(text)


def test_g4_dwell_in_both_spellings():
    grbl = parse("G90\nG4 P1.5\n")
    assert grbl.lines[-1].t_end == pytest.approx(1.5)
    marlin = parse("G90\nG4 P1500\nG4 S2\n", "marlin-servo")
    assert [ln.t_end for ln in marlin.lines[1:]] == pytest.approx([1.5, 3.5])
    with pytest.raises(InputError, match="G4 S is Marlin's"):
        parse("G4 S2\n")
    with pytest.raises(InputError, match="written for Marlin"):
        parse("G4 P150\n")


def test_comments_both_kinds_and_line_numbers():
    text = ("%\n(header comment)\n; another\nN10 G21 (mm) ; units\nG90*33\n"
            "G0 X10 Y10 (go)\nM3 S30\nG1 X20 Y10 F1000\nM5\n")
    prog = parse(text)
    assert [ln.text for ln in prog.lines][:2] == ["N10 G21", "G90*33"]
    assert prog.stroke_count == 1
    assert [ln.kind for ln in prog.lines] == ["setup", "setup", "travel", "pen_down", "draw",
                                              "pen_up"]
    assert prog.lines[0].source_line == 4  # the "%" line is not sent
    with pytest.raises(InputError, match="Klipper has no inch mode"):
        parse("G20\nG0 X1 Y1\n", "klipper")


def test_pen_state_from_each_dialect():
    marlin = parse("G90\nG0 X10 Y10\nM400\nM280 P0 S30\nG1 X20 Y10 F900\nM400\n"
                   "M280 P0 S90\n", "marlin-servo")
    assert marlin.stroke_count == 1
    klipper = parse("G90\nG0 X10 Y10\nSET_SERVO SERVO=pen ANGLE=32\nG1 X20 Y10 F900\n"
                    "SET_SERVO SERVO=pen ANGLE=88\nG0 X30 Y30\nSET_SERVO SERVO=pen ANGLE=30\n"
                    "G1 X40 Y30\nSET_SERVO SERVO=pen ANGLE=90\n", "klipper")
    assert klipper.stroke_count == 2
    # a spindle pen lowered with a bare M3 after S set elsewhere: the resume restores S
    spindle = parse("G90\nS30\nG0 X10 Y10\nM3\nG1 X20 Y10 F900\nM5\nG0 X30 Y30\nM3\n"
                    "G1 X40 Y30\nM5\n")
    assert spindle.stroke_count == 2
    i = spindle.stroke_start(1)
    assert "S30" in [ln.text for ln in spindle.lines[i:i + 4]]


def test_foreign_gcode_without_a_profile_is_refused():
    with pytest.raises(InputError, match="not written by plotterd.*profile"):
        Program.parse("G21\nG90\nG0 X10 Y10\n")


def test_no_pen_commands_of_the_profile_is_reported():
    prog = parse("G21\nG90\nG0 X10 Y10\nG1 X20 Y20 F1000\n")  # vpype-gcode's gcodemm style
    assert prog.stroke_count == 0 and "no pen-down found" in prog.header["warning"]


def test_homing_returns_to_the_origin():
    text = "G90\nG0 X100 Y100\nG28\nG91\nG0 X-1\n"  # from the origin, 1 mm below x_min
    with pytest.raises(OutOfBoundsError, match=r"line 5 .*1\.00 mm below x_min"):
        parse(text, "marlin-servo")
    assert math.isfinite(parse("G90\n$H\nG0 X5 Y5\n").header["estimated_s"])


@pytest.mark.timeout(60)
def test_a_vpype_gcode_file_streams_stroke_by_stroke_on_the_simulator():
    from plotterd.machine import stream

    prog = load("vpype_gcode_servo_abs.gcode")
    seen = []
    result = stream(prog, "sim://grbl?speed=instant",
                    progress=lambda p: seen.append(p.info.get("completed_stroke")))
    assert result.status == "done", result.error
    assert result.last_completed_stroke == 2
    assert {s for s in seen if s is not None} == {0, 1, 2}  # progress by stroke
    expected = drawn([ln.text for ln in prog.lines])
    got = [tuple(round(v, 2) for v in seg) for seg in result.simulator.segments]
    assert got == expected and len(got) == 329
