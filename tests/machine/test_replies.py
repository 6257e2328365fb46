"""No reply can crash a plot: every parse of what a board sends either reads or is Garbled
(random bytes, truncated lines, NaN, infinity, non-UTF-8), and garbage injected during a plot
ends it with a clear error and the pen up, or is forgiven when it is a single line."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plotterd.errors import PlotterdError
from plotterd.machine import Timeouts, grbl, marlin, stream
from plotterd.machine.base import Garbled, GarbledReply, GarbledWatch
from plotterd.machine.grbl import GrblDriver, setting_number
from plotterd.machine.transport import Transport

from .helpers import check_drawn, expected_strokes, make_program

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
FAST = Timeouts.fast()

GRBL_LINES = ["ok", "error:20", "ALARM:2", "Grbl 1.1h ['$' for help]", "[OPT:V,15,128]",
              "<Run|MPos:10.000,-2.500,0.000|Bf:12,87|FS:3000,30|WCO:1.000,2.000,0.000>",
              "<Hold:0|WPos:1.000,2.000,3.000|Bf:15,128|FS:0,0>", "$22=1", "$10=3",
              "[MSG:'$H'|'$X' to unlock]", "[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]"]
MARLIN_LINES = ["ok", "ok N12 P15 B3", "Resend: 12", "rs N12", "echo:busy: processing",
                "Error:checksum mismatch, Last Line: 11", "start",
                "X:10.00 Y:2.50 Z:0.00 E:0.00 Count X:800 Y:200 Z:0"]
NOT_NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "1.2.3", "1e999", "", "-", "١٢",
               "\xb2", "1_0", "0x1F", "9" * 400]


def _latin1(data: bytes) -> str:
    return data.decode("latin-1")  # how the transport reads every byte


def _mangled(lines: list[str]):
    """A real reply cut short, with one number swapped for something that is not one, or
    with random bytes spliced in."""
    line = st.sampled_from(lines)
    cut = st.tuples(line, st.integers(0, 80)).map(lambda t: t[0][:t[1]])
    swap = st.tuples(line, st.sampled_from(NOT_NUMBERS)).map(
        lambda t: _swap_number(t[0], t[1]))
    splice = st.tuples(line, st.integers(0, 80), st.binary(min_size=1, max_size=8)).map(
        lambda t: t[0][:t[1]] + _latin1(t[2]) + t[0][t[1]:])
    return st.one_of(cut, swap, splice)


def _swap_number(line: str, bad: str) -> str:
    for i, ch in enumerate(line):
        if ch.isdigit():
            j = i
            while j < len(line) and (line[j].isdigit() or line[j] == "."):
                j += 1
            return line[:i] + bad + line[j:]
    return line + bad


def _any_reply(lines: list[str]):
    return st.one_of(st.binary(max_size=120).map(_latin1), st.text(max_size=80),
                     _mangled(lines))


def _finite_fields(ev) -> bool:
    """Every number an event carries is a finite number (no NaN reaches the driver)."""
    for v in vars(ev).values():
        vals = v if isinstance(v, tuple) else (v,)
        for x in vals:
            if isinstance(x, float) and not math.isfinite(x):
                return False
    return True


def _parsed_totally(firmware, line: str):
    """``firmware.parse(line)``: one of its events, a Garbled holding the line, or an event
    whose numbers are all finite."""
    ev = firmware.parse(line)
    assert isinstance(ev, firmware.Event.__args__)
    if isinstance(ev, Garbled):
        assert ev.raw == line
    else:
        assert _finite_fields(ev)
    return ev


@SETTINGS
@given(_any_reply(GRBL_LINES))
def test_grbl_parse_is_total(line):
    ev = _parsed_totally(grbl, line)
    if isinstance(ev, Garbled):
        assert "garbled reply" in str(ev.error())


@SETTINGS
@given(_any_reply(MARLIN_LINES))
def test_marlin_parse_is_total(line):
    _parsed_totally(marlin, line)


@pytest.mark.parametrize("line", [
    "<Run|MPos:nan,0.000,0.000|FS:0,0>", "<Idle|WPos:1.000,inf,0.000|FS:0,0>",
    "<Idle|MPos:0.000,0.000,0.000|WCO:nan,0,0>"])
def test_grbl_nan_position_is_lost_position(line):
    ev = grbl.parse(line)
    assert isinstance(ev, Garbled) and ev.position
    with pytest.raises(GarbledReply, match="position is not a number"):
        GarbledWatch(run=3).garbled(ev, "test")


@pytest.mark.parametrize("line,position", [
    ("X:1.2.3 Y:0.00 Z:0.00", False), ("X:nan Y:0.00 Z:0.00", True), ("X:10.0 Y:", False)])
def test_marlin_bad_position_is_garbled(line, position):
    ev = marlin.parse(line)
    assert isinstance(ev, Garbled) and ev.position == position


@pytest.mark.parametrize("line", ["<Run|MPos:1.2.3,0,0|FS:0,0>", "<Idle|Bf:nan,128|MPos:0,0,0>",
                                  "[OPT:V,\xb2,128]", "$22=nan", "error:\xb2", "<Idle|MPos:0,0"])
def test_grbl_replies_that_used_to_raise_are_garbled(line):
    assert isinstance(grbl.parse(line), Garbled)


@SETTINGS
@given(st.one_of(st.sampled_from(NOT_NUMBERS), st.text(max_size=30)))
def test_setting_numbers_read_or_say_garbled(value):
    try:
        v = setting_number({22: value}, 22, 0)
    except GarbledReply as e:
        assert "$22=" in str(e)
    else:
        assert math.isfinite(v)


def test_watch_forgives_a_few_and_stops_a_run():
    w = GarbledWatch(run=3)
    bad = Garbled("o\x8bk", "test")
    w.garbled(bad, "p")
    w.garbled(bad, "p")
    w.good()
    w.garbled(bad, "p")
    w.garbled(bad, "p")
    with pytest.raises(GarbledReply, match=r"3 in a row.*o\\x8bk"):
        w.garbled(bad, "p")
    assert w.total == 5


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.binary(max_size=60), max_size=8))
def test_grbl_driver_reads_any_bytes_without_a_traceback(chunks):
    """Whatever arrives, the driver raises only plotterd's own errors."""
    t = Transport("loop://", timeouts=FAST)
    t.open()
    drv = GrblDriver(t, FAST)
    t.ser.write(b"\n".join(chunks) + b"\n")
    try:
        while (line := t.readline(0.0)) is not None:
            drv._handle(line)
    except PlotterdError:
        pass
    finally:
        t.close()


def _noise_job(fw: str, fault: str):
    program = make_program(fw, strokes=8, segs=5, seed=3)
    at = 3 + len(program.lines) // 2  # past connecting's lines, mid-job
    url = f"sim://{fw}?speed=instant&seed=5&faults={fault.format(at=at)}"
    return program, stream(program, url, timeouts=FAST)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fw", ["grbl", "marlin"])
def test_one_noise_line_is_forgiven(fw):
    program, result = _noise_job(fw, "noise@{at}:1")
    assert result.status == "done", result.error
    assert result.simulator.faults.fired == [("noise", 3 + len(program.lines) // 2)]
    check_drawn(result.simulator.segments, expected_strokes(program), 0)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fw,fault", [("grbl", "noise@{at}:5"), ("marlin", "noise@{at}:5"),
                                      ("grbl", "nan_status@{at}")])
def test_garbage_mid_plot_stops_safely(fw, fault):
    """A run of garbage, or a position that is not a number: feed hold, pen up, a clear
    error naming the bytes; the position is no longer trusted (resume needs the origin)."""
    program, result = _noise_job(fw, fault)
    sim = result.simulator
    assert [k for k, _ in sim.faults.fired] == [fault.split("@")[0]]
    assert result.status == "failed" and result.reason == "garbled"
    assert result.error.startswith("garbled reply")
    assert ("position is not a number" in result.error) == fault.startswith("nan")
    assert "confirm the pen is at the origin" in result.error
    assert result.pen_up is True and not sim.pen_down
    assert result.position_lost and not result.resumable
    assert not sim.out_of_bounds
    assert result.lines_executed < len(program.lines)


@pytest.mark.timeout(60)
def test_missing_status_replies_while_oks_flow_do_not_kill_the_link():
    """Status reports lost for several poll periods (longer than two status timeouts) while
    the board keeps acknowledging lines: the link is alive, the job completes unbroken."""
    program = make_program("grbl", strokes=12, segs=8, seed=2)
    url = "sim://grbl?speed=scaled:10&seed=1&faults=mute_status@30:12"
    result = stream(program, url, timeouts=FAST)
    sim = result.simulator
    assert sim.faults.fired == [("mute_status", 30)]
    assert result.status == "done", result.error
    assert result.resumes == 0
    assert not [e for t, e in sim.events if e == "reset" and t > sim.first_line_at]
    check_drawn(sim.segments, expected_strokes(program), 0)


def test_grbl_text_status_fields_are_read():
    ev = grbl.parse("<Idle|MPos:0.000,0.000,0.000|FS:0,0|Pn:PXYZRHS|Ov:100,100,100|A:SFM>")
    assert isinstance(ev, grbl.Status) and ev.mpos == (0.0, 0.0, 0.0)
    assert isinstance(grbl.parse("<Idle|MPos:0,0,0|Ov:100,x,100>"), Garbled)


@pytest.mark.timeout(30)
def test_no_bare_value_error_escapes_a_plot(monkeypatch):
    """Should a ValueError ever come out of reading the board mid-plot (every parser is
    total; this is the net under them), the plot stops as for garbage: pen up, an error
    naming it, never a traceback."""
    program = make_program("grbl", strokes=6, segs=5, seed=3)
    real_tick = GrblDriver.tick
    calls = {"n": 0}

    def tick(self):
        calls["n"] += 1
        if calls["n"] == 20:
            raise ValueError("could not convert string to float: '1.2.3'")
        return real_tick(self)

    monkeypatch.setattr(GrblDriver, "tick", tick)
    result = stream(program, "sim://grbl?speed=scaled:20&seed=1", timeouts=FAST)
    assert result.status == "failed" and result.reason == "internal"
    assert "unexpected ValueError" in result.error and "'1.2.3'" in result.error
    assert result.pen_up is True and not result.simulator.pen_down


def test_transport_hands_on_endless_bytes_as_lines():
    """Bytes that never end a line (noise on an idle link) come out as capped lines, read
    as garbled; every byte counts as a sign of life."""
    t = Transport("loop://", timeouts=FAST)
    t.open()
    t.ser.write(bytes(range(128, 256)) * 20)
    line = t.readline(0.2)
    assert line is not None and len(line) == 1024
    assert isinstance(grbl.parse(line), Garbled) and isinstance(marlin.parse(line), Garbled)
    assert t.quiet_for() < 0.5
    t.close()


@pytest.mark.timeout(30)
def test_after_a_garbled_stop_resume_needs_the_origin():
    """As after a reset: the link is closed, the position untrusted; a resume is refused
    until the origin is confirmed, then it goes on."""
    from plotterd.machine import Plotter

    program = make_program("grbl", strokes=8, segs=5, seed=3)
    url = f"sim://grbl?speed=instant&seed=5&faults=noise@{3 + len(program.lines) // 2}:4"
    plotter = Plotter(url, "grbl", timeouts=FAST, header=program.header)
    first = plotter.stream(program)
    assert first.reason == "garbled" and first.resume_stroke is not None
    assert not plotter.status.connected and not plotter.status.position_known
    again = plotter.stream(program, start_stroke=first.resume_stroke)
    assert again.status == "interrupted" and "position is not known" in again.error
    plotter.set_origin()
    done = plotter.stream(program, start_stroke=first.resume_stroke)
    assert done.status == "done", done.error
    plotter.close()
