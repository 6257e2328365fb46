"""stream(): character counting, pause/resume/cancel, resume from a stroke, progress, the pty
simulator and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import serial

from plotterd.errors import ConfigError, InputError
from plotterd.gcode.program import GLine, Program
from plotterd.machine import MachineOptions, Plotter, StreamControl, Timeouts, stream
from plotterd.machine.grbl import GrblDriver
from plotterd.machine.sim.pty_server import PtyServer
from plotterd.machine.transport import Transport

from .helpers import check_drawn, expected_strokes, make_program

FAST = Timeouts.fast()


def _port(url: str) -> serial.SerialBase:
    return serial.serial_for_url(url, do_not_open=True, baudrate=115200)


def _flat(expected, first: int = 0):
    return [seg for stroke in expected[first:] for seg in stroke]


def _pen_downs(sim) -> int:
    return sum(1 for _, what in sim.events if what == "pen down")


@pytest.mark.timeout(30)
def test_character_counting_keeps_buffer_full_without_overflow():
    port = _port("sim://grbl?speed=scaled:20&rx=256")
    t = Transport(port, 115200, FAST)
    t.open()
    drv = GrblDriver(t, FAST)
    drv.connect()
    assert (drv.rx_size, drv.blocks) == (256, 15)  # learned from $I [OPT:V,15,256]
    items = [drv.make_item("G1F6000")] + [drv.make_item(f"G1 X{(i % 50) + 1}.000 Y{i % 7}.000")
                                          for i in range(120)]
    max_bytes = max_lines = acked = 0
    for it in items:
        while not drv.can_send(it):
            acked += len(drv.poll(0.01))
            drv.tick()
        drv.send(it)
        max_bytes = max(max_bytes, drv.in_flight_bytes)
        max_lines = max(max_lines, drv.in_flight)
    acked += len(drv.wait_idle())
    assert acked == len(items)
    assert max_bytes <= 255 and max_lines >= 10  # streaming ahead, never past the buffer
    assert port.simulator.dropped_bytes == 0
    assert drv.executed_seq == drv.seq
    t.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("dialect", ["grbl", "marlin", "grbl-z"])
def test_stream_draws_the_program(dialect, tmp_path):
    program = make_program(dialect, strokes=6, segs=4, seed=1)
    fw = "marlin" if dialect == "marlin" else "grbl"
    opts = "&pen=z" if dialect == "grbl-z" else ""
    reports = []
    result = stream(program, f"sim://{fw}?speed=instant{opts}", progress=reports.append,
                    timeouts=FAST, render_to=tmp_path / "r.png")
    assert result.status == "done" and result.error is None
    check_drawn(result.simulator.segments, expected_strokes(program))
    assert [p.name for p in result.renders] == ["r.png", "r.svg"]
    assert all(p.exists() for p in result.renders)
    last = reports[-1]
    assert last.stage == "plot" and last.done == last.total == len(program.lines)
    assert last.info["completed_stroke"] == 5 and last.info["state"] == "done"
    assert {"acked", "executed", "stroke"} <= set(last.info)
    assert all(p.info["executed"] <= p.info["acked"] for p in reports)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fw", ["grbl", "marlin"])
def test_pause_lifts_pen_and_resume_lowers_it(fw):
    program = make_program(fw, strokes=4, segs=20, seed=2)  # long strokes: pause mid-stroke
    port = _port(f"sim://{fw}?speed=scaled:20")
    ctl = StreamControl()
    out = []
    etas = []

    def progress(p):
        etas.append((p.done, p.eta_s, p.info["executed"] <= p.info["acked"]))
        if p.info["executed"] >= 40 and not out:
            out.append("asked")
            ctl.pause()

    th = threading.Thread(target=lambda: out.append(
        stream(program, port, control=ctl, progress=progress, timeouts=FAST)))
    th.start()
    deadline = time.monotonic() + 20
    while ctl.state != "paused" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ctl.state == "paused"
    sim = port.simulator
    _ = port.in_waiting  # bring the lazy simulator up to date
    assert not sim.pen_down and not sim.moving()
    n = len(sim.segments)
    time.sleep(0.2)  # = 4 machine seconds: nothing moves while paused
    _ = port.in_waiting
    assert len(sim.segments) == n and 0 < n < sum(map(len, expected_strokes(program)))
    ctl.resume()
    th.join(20)
    result = out[-1]
    assert result.status == "done", result.error
    # paused mid-stroke: the pen went down once more than there are strokes, and the
    # drawing is still exactly the program's (lifted and lowered at a vertex)
    assert _pen_downs(sim) == 5
    check_drawn(sim.segments, expected_strokes(program))
    # ETA from the program's motion model (t_end), falling as lines run
    mid = [e for d, e, _ in etas if 0 < d < len(program.lines) and e is not None]
    assert len(mid) > 3 and mid[0] > mid[-1] >= 0
    assert all(ok for _, _, ok in etas)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fw,speed", [("grbl", "instant"), ("grbl", "scaled:20"),
                                      ("marlin", "instant"), ("marlin", "scaled:20")])
def test_cancel_stops_safely_with_pen_up(fw, speed):
    program = make_program(fw, strokes=5, segs=10, seed=3)
    port = _port(f"sim://{fw}?speed={speed}")
    ctl = StreamControl()

    def progress(p):
        if p.info["executed"] >= 30:
            ctl.cancel()

    result = stream(program, port, control=ctl, progress=progress, timeouts=FAST)
    sim = port.simulator
    assert result.status == "cancelled" and result.error is None
    assert ctl.state == "cancelled" and result.pen_up is True and not sim.pen_down
    flat = _flat(expected_strokes(program))
    assert 0 < len(sim.segments) < len(flat)
    assert sim.segments == flat[: len(sim.segments)]  # stopped cleanly: a prefix
    if fw == "grbl" and speed != "instant":
        assert any(what == "reset" for _, what in sim.events)  # hold, then Ctrl-X
        assert sim.alarm is None  # stopped before the reset: position kept, no ALARM:3
    assert result.resume_stroke is not None


@pytest.mark.timeout(30)
def test_cancel_while_paused():
    program = make_program("grbl", strokes=4, segs=10, seed=4)
    port = _port("sim://grbl?speed=instant")
    ctl = StreamControl()
    ctl.pause()  # paused before it starts, as the daemon does when the queue is paused
    out = []
    th = threading.Thread(target=lambda: out.append(stream(program, port, control=ctl,
                                                           timeouts=FAST)))
    th.start()
    deadline = time.monotonic() + 10
    while ctl.state != "paused" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ctl.state == "paused"
    ctl.cancel()
    th.join(10)
    assert out[0].status == "cancelled" and port.simulator.segments == []
    assert not port.simulator.pen_down


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fw", ["grbl", "marlin"])
def test_start_stroke_redraws_from_that_stroke(fw):
    program = make_program(fw, strokes=6, segs=4, seed=5)
    # a fresh connection to a board that does not home: where would stroke 3 land?
    refused = stream(program, f"sim://{fw}?speed=instant", start_stroke=3, timeouts=FAST)
    assert refused.status == "interrupted" and refused.position_lost
    assert refused.resume_stroke == 3 and refused.resumable and refused.connected
    assert refused.simulator.segments == []
    result = stream(program, f"sim://{fw}?speed=instant&homing=1", start_stroke=3,
                    timeouts=FAST, options=MachineOptions(homing=True))
    assert result.status == "done"
    assert result.simulator.segments == _flat(expected_strokes(program), 3)
    with pytest.raises(InputError, match="start stroke 9"):
        stream(program, f"sim://{fw}?speed=instant", start_stroke=9, timeouts=FAST)


@pytest.mark.timeout(30)
def test_interrupted_job_resumes_after_restart_with_record(tmp_path):
    """The device vanishes; later (a daemon restart) the job resumes from the stroke the
    result names; the record file holds the whole drawing."""
    program = make_program("grbl", strokes=8, segs=4, seed=6)
    rec = tmp_path / "plot.record"
    first = stream(program, f"sim://grbl?speed=instant&record={rec}&faults=unplug@50",
                   timeouts=FAST)
    assert first.status == "interrupted" and "reconnection attempts" in first.error
    k = first.resume_stroke
    assert k is not None and 0 < k < 8
    assert k == first.last_completed_stroke + 1
    # the restarted daemon's plotter: the user confirms the pen is at the origin
    plotter = Plotter(f"sim://grbl?speed=instant&record={rec}", "grbl", timeouts=FAST,
                      header=program.header)
    plotter.connect()
    plotter.set_origin()
    second = plotter.stream(program, start_stroke=k, render_to=tmp_path / "all.png")
    plotter.close()
    assert second.status == "done"
    drawn = second.simulator.segments
    assert len(drawn) == len(rec.read_text().splitlines())
    check_drawn(drawn, expected_strokes(program), max_restarts=1)


def test_bad_options_and_programs():
    program = make_program("grbl", strokes=2, segs=2)
    with pytest.raises(ConfigError, match="firmware"):
        stream(program, "sim://grbl", firmware="tinyg")
    long = Program([GLine("G1 X1 Y1 " + "X1" * 40, "setup")], {"firmware": "grbl"})
    with pytest.raises(InputError, match="line 1 .* at most 79"):
        stream(long, "sim://grbl?speed=instant")
    result = stream(program, "/dev/does-not-exist-plotter", timeouts=FAST)
    assert result.status == "failed" and "cannot open" in result.error
    assert not result.connected and result.resume_stroke == 0
    result = stream(program, "/dev/does-not-exist-plotter", start_stroke=1, timeouts=FAST)
    assert not result.connected and result.resume_stroke == 1  # the resume point is kept
    assert stream(program, "sim://grbl?speed=instant", timeouts=FAST).connected


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fw", ["grbl", "marlin"])
def test_pty_simulator(fw):
    program = make_program(fw, strokes=3, segs=3, seed=7)
    with PtyServer(f"sim://{fw}?speed=instant") as server:
        assert server.path.startswith("/dev/")
        result = stream(program, server.path, timeouts=FAST)
        assert result.status == "done", result.error
        assert result.simulator is None  # a real serial port as far as stream() knows
        check_drawn(server.sim.segments, expected_strokes(program))


@pytest.mark.timeout(60)
def test_cli_plot_and_sim(tmp_path):
    from click.testing import CliRunner

    from plotterd.cli.machine_cmd import plot

    program = make_program("grbl", strokes=3, segs=3, seed=8)
    gcode = tmp_path / "job.gcode"
    program.save(gcode)
    res = CliRunner().invoke(plot, [str(gcode), "--port", "sim://grbl?speed=instant",
                                   "--render", str(tmp_path / "out.png")])
    assert res.exit_code == 0, res.output
    assert "done: " in res.output and (tmp_path / "out.png").exists()
    res = CliRunner().invoke(plot, [str(gcode), "--port",
                                   "sim://grbl?speed=instant&faults=error@9"])
    assert res.exit_code == 1 and "error:20" in res.output

    code = "from plotterd.cli.machine_cmd import sim; sim()"
    proc = subprocess.Popen([sys.executable, "-c", code, "--speed", "instant"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/")
        with serial.Serial(path, 115200, timeout=2) as port:
            port.write(b"\x18")  # no DTR on a pty: soft-reset for a banner
            assert b"Grbl 1.1h" in port.read_until(b"help]\r\n")
            port.write(b"$I\n")
            assert b"[OPT:V,15,128]" in port.read_until(b"ok\r\n")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fw,change", [("grbl", "M0"), ("marlin", "M0 Load pen 2")])
def test_pen_change_waits_for_resume(fw, change):
    """A pen change (M0) holds the machine until the user resumes (GRBL '~', Marlin M108)."""
    program = make_program(fw, strokes=4, segs=3, seed=9)
    first = program.stroke_start(2)
    program.lines.insert(first + 1, GLine(change, "pen_down", 2))
    port = _port(f"sim://{fw}?speed=instant")
    ctl = StreamControl()
    out = []
    th = threading.Thread(target=lambda: out.append(stream(program, port, control=ctl,
                                                           timeouts=FAST)))
    th.start()
    exp = expected_strokes(program)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (port.simulator is None
                                           or len(port.simulator.segments) < 6):
        time.sleep(0.01)
    time.sleep(0.6)  # longer than the ok timeout: a held machine is waited for, not failed
    assert port.simulator.segments == _flat(exp)[:6] and not out
    ctl.resume()
    th.join(10)
    assert out[0].status == "done", out[0].error
    check_drawn(port.simulator.segments, exp)


def test_sim_url_completed_from_header():
    from plotterd.machine.stream import sim_url_for

    header = {"bounds": [0, -300, 300, 0], "pen_down": ["G1 Z0 F1000", "G4 P0.05"],
              "pen_up": ["G0 Z3"]}
    assert sim_url_for("sim://grbl?speed=instant", header) == (
        "sim://grbl?speed=instant&bounds=0,-300,300,0&pen=z&z_down=1.5")
    assert sim_url_for("sim://grbl?bounds=0,0,9,9&pen=servo", header) == (
        "sim://grbl?bounds=0,0,9,9&pen=servo")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("profile", ["grbl-servo", "grbl-z", "marlin-servo", "klipper"])
def test_bundled_profiles_stream_on_the_simulator(profile):
    """Programs from the real G-code writer, for every bundled profile, draw exactly."""
    vp = pytest.importorskip("vpype")
    import numpy as np

    from plotterd.gcode import load_profile, write_program

    rng = np.random.default_rng(0)
    lines = vp.LineCollection()
    for _ in range(4):
        pts = rng.uniform(20, 120, 2) + np.cumsum(rng.normal(0, 3, (6, 2)), axis=0)
        lines.append(pts[:, 0] + 1j * pts[:, 1])
    doc = vp.Document()
    doc.add(lines, 1)
    doc.page_size = (210, 297)
    program = write_program(doc, load_profile(profile))
    fw = "grbl" if program.firmware == "grbl" else "marlin"
    result = stream(program, f"sim://{fw}?speed=instant", timeouts=FAST)
    assert result.status == "done", result.error
    check_drawn(result.simulator.segments, expected_strokes(program))
    assert len(result.simulator.segments) == 20 and not result.simulator.out_of_bounds


def test_eta_is_calibrated_against_the_clock_in_scaled_time():
    """In scaled time the model's seconds pass faster than the wall's; the ETA must follow
    the wall clock, not the model."""
    import numpy as np

    from plotterd.draw.strokes import Canvas, StrokeGroup, Strokes
    from plotterd.gcode import load_profile, make_gcode
    from plotterd.machine import stream
    from plotterd.vector import PageSpec

    rng = np.random.default_rng(3)
    start = rng.uniform(-0.9, 0.9, (150, 1, 2))
    pts = np.concatenate([start, start + rng.uniform(-0.3, 0.3, (150, 1, 2))], axis=1)
    strokes = Strokes(Canvas(100, 100), [StrokeGroup("line", pts, np.ones(150))])
    program = make_gcode(strokes, profile=load_profile("grbl-servo"), page=PageSpec()).program
    seen = []
    result = stream(program, "sim://grbl?speed=scaled:50&seed=1",
                    progress=lambda p: seen.append((p.elapsed_s, p.eta_s, p.fraction)))
    assert result.status == "done"
    total_wall = result.elapsed_s
    mid = [(el, eta) for el, eta, f in seen if 0.4 < f < 0.6 and eta is not None]
    assert mid, "no progress reported mid-job"
    el, eta = mid[-1]
    # model-only ETA would be ~50x the remaining wall time
    assert eta < 3 * (total_wall - el) + 1.0
