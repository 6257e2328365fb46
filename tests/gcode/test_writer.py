"""The G-code writer: dialects in context, round-trip through Program.parse, bounds and
overflow refusal, paper placement, line length, the time model, outputs."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import vpype as vp
import yaml

from plotterd.draw.strokes import Canvas, StrokeGroup, Strokes
from plotterd.errors import ConfigError, InputError, OutOfBoundsError, PlotterdError
from plotterd.gcode import GcodeResult, load_profile, make_gcode, parse_profile, write_program
from plotterd.gcode.motion import polyline_times, rest_to_rest
from plotterd.gcode.profile import bundled_dir
from plotterd.gcode.program import Program
from plotterd.gcode.writer import to_machine
from plotterd.vector import PX_PER_MM, PageSpec, Pen, VectorOptions

from .interp import run

PROFILES = ["grbl-servo", "grbl-z", "marlin-servo", "klipper"]


def _doc(lines_mm: list[list[tuple[float, float]]], page_mm=(210.0, 297.0), layers=None):
    doc = vp.Document(page_size=(page_mm[0] * PX_PER_MM, page_mm[1] * PX_PER_MM))
    layers = layers or [1] * len(lines_mm)
    for lid in sorted(set(layers)):
        lc = vp.LineCollection(
            [np.array([complex(x, y) for x, y in ln]) * PX_PER_MM
             for ln, k in zip(lines_mm, layers, strict=True) if k == lid]
        )
        doc.add(lc, lid)
        doc.layers[lid].set_property(vp.METADATA_FIELD_NAME, f"pen ({lid})")
    return doc


def _strokes() -> Strokes:
    rng = np.random.default_rng(5)
    return Strokes(Canvas(120, 90), [
        StrokeGroup("polyline", rng.uniform(-0.9, 0.9, (6, 4, 2)), 1.0,
                    grey=[1, 1, 1, 0.4, 0.4, 0.4]),
        StrokeGroup("cubic", rng.uniform(-0.9, 0.9, (3, 4, 2)), 1.0),
        StrokeGroup("catmull_rom", rng.uniform(-0.9, 0.9, (2, 6, 2)), 1.0),
        StrokeGroup("point", rng.uniform(-0.9, 0.9, (3, 1, 2)), 1.0),
    ])


@pytest.mark.parametrize("name", PROFILES)
def test_program_round_trips_and_is_safe(name: str) -> None:
    profile = load_profile(name)
    res = make_gcode(_strokes(), profile=profile, page=PageSpec(paper="a5"),
                     options=VectorOptions(pens=[Pen("black"), Pen("#777777")]))
    prog = res.program
    h = prog.header
    assert h["version"] == 2 and h["profile"] == name and h["firmware"] == profile.firmware
    assert h["pen_up"] == profile.pen_up_lines() and h["pen_down"] == profile.pen_down_lines()
    assert h["bounds"] == [profile.x_min, profile.y_min, profile.x_max, profile.y_max]
    assert h["strokes"] == res.stats["lines"] == prog.stroke_count
    assert len(h["pens"]) == 2 and h["pens"][1]["first_stroke"] > 0
    # Program.parse(text) gives back exactly the same kinds and strokes
    bare = Program.parse(prog.text())  # without the sidecar: from the lines themselves
    assert [(ln.text, ln.kind, ln.stroke) for ln in bare.lines] == [
        (ln.text, ln.kind, ln.stroke) for ln in prog.lines
    ]
    assert bare.header["pen_up"] == h["pen_up"] and bare.header["pen_down"] == h["pen_down"]
    assert bare.header["bounds"] == h["bounds"] and bare.header["strokes"] == h["strokes"]
    assert bare.firmware == profile.firmware
    back = Program.parse(prog.text(), meta=json.loads(json.dumps(h)))
    assert [(ln.text, ln.kind, ln.stroke) for ln in back.lines] == [
        (ln.text, ln.kind, ln.stroke) for ln in prog.lines
    ]
    assert back.header == json.loads(json.dumps(h))
    # the parsed program gets its times back from the header, stroke by stroke
    for s in range(h["strokes"]):
        mine = [ln.t_end for ln in prog.lines if ln.stroke == s]
        theirs = [ln.t_end for ln in back.lines if ln.stroke == s]
        assert theirs[-1] == pytest.approx(mine[-1], abs=0.01)
        start = prog.header["setup_t_end"] if s == 0 else prog.header["stroke_t_end"][s - 1]
        assert all(start - 1e-9 <= t <= mine[-1] + 0.01 for t in theirs)
    assert back.lines[-1].t_end == pytest.approx(h["estimated_s"])
    assert all(b.t_end >= a.t_end for a, b in zip(back.lines, back.lines[1:], strict=False))
    # every line tagged, times increasing to the estimate
    assert all(ln.kind in ("setup", "end") or ln.stroke is not None for ln in prog.lines)
    t = [ln.t_end for ln in prog.lines]
    assert all(b >= a for a, b in zip(t, t[1:], strict=False))
    assert t[-1] == pytest.approx(h["estimated_s"], abs=1e-3)
    # each stroke: travel first, then pen down, draws, pen up
    for s in range(h["strokes"]):
        kinds = [ln.kind for ln in prog.lines if ln.stroke == s]
        assert kinds[0] == "travel" and kinds[-1] == "pen_up" and "draw" in kinds
        assert prog.lines[prog.stroke_start(s)].kind == "travel"
    # the dialect's pen change appears once, at the second pen's first stroke
    if profile.pen_change:
        second = h["pens"][1]["first_stroke"]
        lines = [ln for ln in prog.lines if ln.stroke == second]
        assert lines[1].text.split()[0] == profile.pen_change[0].split()[0]
    r = run(prog.text())
    assert r.pen_downs == h["strokes"]
    assert len(r.dots) == 3
    xs = [m[0] for m in r.moves]
    ys = [m[1] for m in r.moves]
    assert min(xs) >= profile.x_min and max(xs) <= profile.x_max
    assert min(ys) >= profile.y_min and max(ys) <= profile.y_max
    assert all(len(ln.text) <= profile.max_line_length for ln in prog.lines)


@pytest.mark.parametrize(
    "header",
    ['[1, 2]', '{"pen_up": "M5"}', '{"pen_down": [3]}'],
)
def test_a_malformed_header_is_an_input_error(header: str) -> None:
    with pytest.raises(InputError, match="header"):
        Program.parse(f"; plotterd {header}\n; stroke 0\nG0 X1 Y1\n")


def test_header_times_that_are_not_numbers_are_ignored() -> None:
    text = ('; plotterd {"stroke_t_end": [2.0], "setup_t_end": "soon", "estimated_s": [3]}\n'
            "; stroke 0\nG0 X1 Y1\n")
    assert [ln.t_end for ln in Program.parse(text).lines] == [None]


def test_setup_lifts_pen_before_start_block_and_first_move() -> None:
    prog = make_gcode(_strokes(), profile="grbl-servo", page=PageSpec()).program
    text = [ln.text for ln in prog.lines]
    assert text[:4] == ["G21", "G90", "M5", "G4 P0.15"]
    assert prog.lines[-1].text == "G0 X0 Y0" and prog.lines[-1].kind == "end"
    assert "; end\nM5\nG4 P0.15\nG0 X0 Y0\n" in prog.text()


def test_overflow_is_refused_with_the_amount(tmp_path: Path) -> None:
    profile = replace(load_profile("grbl-servo"), x_max=200.0, y_max=280.0)
    doc = _doc([[(10, 10), (250, 20)], [(20, 20), (30, 290)]])
    with pytest.raises(OutOfBoundsError) as e:
        write_program(doc, profile)
    msg = str(e.value)
    # bottom-left origin: page y 290 is machine y 297 - 290 = 7, page y 10 -> 287
    assert "50.00 mm beyond x_max" in msg and "7.00 mm beyond y_max" in msg
    assert "'grbl-servo'" in msg
    # make_gcode refuses before anything is written
    out = tmp_path / "x.gcode"
    with pytest.raises(OutOfBoundsError):
        make_gcode(Strokes(Canvas(10, 10), [StrokeGroup("line", [[[-1, -1], [1, 1]]], 1.0)]),
                   profile=profile, page=PageSpec(paper="a3")).save(out)
    assert not out.exists()


def test_non_finite_coordinates_are_refused() -> None:
    doc = _doc([[(10, 10), (float("nan"), 20)]])
    with pytest.raises(OutOfBoundsError, match="not finite"):
        write_program(doc, load_profile("grbl-servo"))


@pytest.mark.parametrize("move", ["G0 X500 Y0", "G0X500Y0", "G90 G1 X500", "g00x500"])
def test_end_block_moves_are_checked(move: str) -> None:
    d = yaml.safe_load((bundled_dir() / "grbl-servo.yaml").read_text())
    d["end"] = [move]
    profile = parse_profile(d, "grbl-servo")
    with pytest.raises(OutOfBoundsError) as e:
        write_program(_doc([[(10, 10), (20, 20)]]), profile)
    assert "end block" in str(e.value) and "200.00 mm beyond x_max" in str(e.value)


@pytest.mark.parametrize(
    "origin,inv,expect",
    [
        # page (u, v) = (10, 20) mm on a 210 x 297 page, paper corner at offset (5, 7)
        ("bottom-left", (False, False), (5 + 10, 7 + 277)),
        ("top-left", (False, False), (5 + 10, 7 + 20)),
        ("top-left", (False, True), (5 + 10, 7 - 20)),
        ("top-right", (False, False), (5 + 200, 7 + 20)),
        ("bottom-right", (True, False), (5 - 200, 7 + 277)),
    ],
)
def test_paper_placement(origin: str, inv: tuple[bool, bool], expect) -> None:
    p = replace(load_profile("grbl-servo"), origin=origin, offset_x=5.0, offset_y=7.0,
                invert_x=inv[0], invert_y=inv[1])
    got = to_machine(np.array([[10.0, 20.0]]), (210.0, 297.0), p)[0]
    assert got == pytest.approx(expect)


def test_grbl_z_profile_maps_into_negative_y() -> None:
    prog = write_program(_doc([[(10, 20), (30, 40)]]), load_profile("grbl-z"))
    draws = [ln.text for ln in prog.lines if ln.kind in ("travel", "draw")]
    assert draws == ["G0 X10 Y-20 F5000", "G1 X30 Y-40 F2500"]


def test_long_lines_lose_decimals_or_are_refused() -> None:
    base = load_profile("grbl-servo")
    doc = _doc([[(10.12345, 20.98765), (100.55555, 200.44444)]])
    p = replace(base, max_line_length=22, x_max=1000, y_max=1000)
    prog = write_program(doc, p)
    draw = [ln.text for ln in prog.lines if ln.kind == "draw"]
    assert draw == ["G1 X100.6 Y96.6 F3000"]  # 297 - 200.444 = 96.556, one decimal
    assert all(len(ln.text) <= 22 for ln in prog.lines)
    p = replace(base, max_line_length=20, x_min=-10000, y_min=-10000, travel_feed=60000)
    with pytest.raises(ConfigError) as e:
        write_program(_doc([[(-5000, 10), (20, 20)]]), p)
    assert e.value.key == "gcode.max_line_length"


def test_dots_are_a_pen_down_and_up_in_place() -> None:
    prog = write_program(_doc([[(50, 50), (50, 50)]]), load_profile("marlin-servo"))
    body = [(ln.text, ln.kind) for ln in prog.lines if ln.stroke == 0]
    assert body == [
        ("G0 X55 Y252 F6000", "travel"),
        ("M400", "pen_down"), ("M280 P0 S30", "pen_down"), ("G4 P150", "pen_down"),
        ("G1 X55 Y252 F3000", "draw"),
        ("M400", "pen_up"), ("M280 P0 S90", "pen_up"), ("G4 P150", "pen_up"),
    ]


def test_motion_model() -> None:
    a, f = 500.0, 3000.0  # 50 mm/s
    # long move: accelerate 2.5 mm, cruise, decelerate 2.5 mm
    assert rest_to_rest(np.array([100.0]), f, a)[0] == pytest.approx(0.1 + 0.1 + 95 / 50)
    # short move: triangular, 2 sqrt(L / a)
    assert rest_to_rest(np.array([1.0]), f, a)[0] == pytest.approx(2 * math.sqrt(1 / 500))
    # collinear segments plan like one move
    straight = np.array([[0, 0], [25, 0], [50, 0], [100, 0]], dtype=float)
    t = polyline_times([straight], f, a, 0.01)[0]
    assert t.sum() == pytest.approx(rest_to_rest(np.array([100.0]), f, a)[0])
    # a right-angle corner costs time; a reversal costs a full stop
    corner = np.array([[0, 0], [50, 0], [50, 50]], dtype=float)
    reverse = np.array([[0, 0], [50, 0], [0, 0]], dtype=float)
    t_c = polyline_times([corner], f, a, 0.01)[0].sum()
    t_r = polyline_times([reverse], f, a, 0.01)[0].sum()
    assert rest_to_rest(np.array([100.0]), f, a)[0] < t_c < t_r
    assert t_r == pytest.approx(2 * rest_to_rest(np.array([50.0]), f, a)[0])
    # paths are planned independently even when planned together
    both = polyline_times([straight, corner], f, a, 0.01)
    assert both[0].sum() == pytest.approx(t.sum()) and both[1].sum() == pytest.approx(t_c)


def test_estimate_includes_pen_changes_and_travel() -> None:
    p = load_profile("grbl-servo")
    prog = write_program(_doc([[(10, 10), (110, 10)]]), p)
    # travel from (0, 0) to (10, 287), pen down, 100 mm draw, pen up (x2 with the end),
    # travel home
    travel = rest_to_rest(np.array([math.hypot(10, 287), math.hypot(110, 287)]),
                          p.travel_feed, p.acceleration).sum()
    expect = travel + 3 * 0.15 + 0.15 + rest_to_rest(np.array([100.0]), p.draw_feed,
                                                     p.acceleration)[0]
    assert prog.header["estimated_s"] == pytest.approx(expect, abs=1e-3)


def test_save_writes_gcode_svg_stats(tmp_path: Path) -> None:
    res = make_gcode(_strokes(), profile="klipper", page=PageSpec())
    assert isinstance(res, GcodeResult)
    paths = res.save(tmp_path / "sub" / "drawing.gcode", travel_layer=True)
    assert paths["gcode"].read_text() == res.program.text()
    assert res.stats["gcode_bytes"] == paths["gcode"].stat().st_size
    stats = json.loads(paths["stats"].read_text())
    assert stats["strokes"] == res.program.header["strokes"]
    assert stats["estimated_s"] > 0 and stats["travel_mm_after"] <= stats["travel_mm_before"]
    svg = vp.read_multilayer_svg(str(paths["svg"]), 0.1)
    assert len(svg.layers) == 2  # the pen and the pen-up travel layer
    names = {lc.property(vp.METADATA_FIELD_NAME) for lc in svg.layers.values()}
    assert "pen-up travel" in names
    plain = res.save(tmp_path / "plain.gcode")
    assert len(vp.read_multilayer_svg(str(plain["svg"]), 0.1).layers) == 1
    # an output that cannot be written is one PlotterdError naming it, not an OSError
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(PlotterdError, match="a-file/x.gcode: cannot write"):
        res.save(blocker / "x.gcode")


def test_progress_reports_and_cancel() -> None:
    from plotterd.progress import Cancelled

    seen: list[tuple[str, str]] = []
    make_gcode(_strokes(), profile="grbl-servo", page=PageSpec(),
               progress=lambda p: seen.append((p.stage, p.info["step"])))
    assert seen[0] == ("vectorise", "sample") and seen[-1] == ("gcode", "done")

    def cancel(p) -> None:
        if p.info["step"] == "order":
            raise Cancelled()

    with pytest.raises(Cancelled):
        make_gcode(_strokes(), profile="grbl-servo", page=PageSpec(), progress=cancel)


def test_concurrent_calls_give_identical_programs() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def job(name: str) -> str:
        return make_gcode(_strokes(), profile=name, page=PageSpec(),
                          options=VectorOptions(two_opt=True)).program.text()

    names = PROFILES * 2
    expected = {n: job(n) for n in PROFILES}
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(job, names))
    assert got == [expected[n] for n in names]
