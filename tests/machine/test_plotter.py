"""Plotter: a connection kept open between jobs, machine controls (bounds-checked), position
known only after homing or a confirmed origin, pen changes as a state, GRBL's settings and
unlock policy, Marlin's refused lines and homing time."""

from __future__ import annotations

import threading
import time

import pytest
import serial

from plotterd.errors import ConfigError, InputError, OutOfBoundsError, PlotterdError
from plotterd.gcode.program import GLine, Program
from plotterd.machine import (
    MachineOptions,
    Plotter,
    StreamControl,
    Timeouts,
    list_ports,
    stream,
)
from plotterd.machine.base import FirmwareError
from plotterd.machine.guard import RefusedLine

from .helpers import check_drawn, expected_strokes, make_program

FAST = Timeouts.fast()


def _plotter(url: str, profile="grbl-servo", **kw) -> Plotter:
    p = Plotter(url, profile, timeouts=FAST, **kw)
    p.connect()
    return p


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def test_connection_stays_open_between_jobs_without_resetting():
    p = _plotter("sim://grbl?speed=instant", "grbl")
    sim = p.simulator
    program = make_program("grbl", strokes=3, segs=3, seed=1)
    for _ in range(2):
        result = p.stream(program)
        assert result.status == "done" and p.connected
    assert sim.resets == 1  # opened once: no DTR reset before the second job
    assert p.status.position_known and p.status.state == "idle"
    p.close()
    assert not p.status.connected and p.status.state == "disconnected"


def test_position_unknown_until_origin_then_jog_is_bounds_checked():
    p = _plotter("sim://grbl?speed=instant")  # grbl-servo: 0..300 x 0..300
    st = p.status
    assert st.connected and not st.position_known and st.position is None
    with pytest.raises(RefusedLine, match="position is unknown"):
        p.jog(10, 0)
    with pytest.raises(RefusedLine, match="position is unknown"):
        p.send_now("G0 X10 Y10")
    p.set_origin()
    assert p.status.position_known and p.status.position == (0.0, 0.0)
    assert p.jog(25, 40) == (25.0, 40.0)
    assert p.refresh().position == (25.0, 40.0)
    assert p.simulator.pos[:2] == [25.0, 40.0]
    with pytest.raises(OutOfBoundsError, match="outside profile 'grbl-servo'"):
        p.jog(-30, 0)
    with pytest.raises(OutOfBoundsError):
        p.send_now("G1 X301 Y10 F1000")
    with pytest.raises(OutOfBoundsError):
        p.send_now("G91 G0 X0 Y270")  # relative, from the known position (25, 40)
    assert p.send_now("G91 G0 X5 Y0") == []
    assert p.refresh().position == (30.0, 40.0)  # and back to absolute afterwards
    assert p.simulator.pos[:2] == [30.0, 40.0] and not p.simulator.out_of_bounds
    p.close()


@pytest.mark.parametrize("line", ["G92 X0 Y0", "G10 L20 P1 X0", "G53 G0 X10", "G20",
                                  "$110=9000", "$J=G91 X10 F100", "$H", "G0 X1 ~"])
def test_send_refuses_what_it_cannot_follow(line):
    p = _plotter("sim://grbl?speed=instant")
    p.set_origin()
    with pytest.raises((RefusedLine, OutOfBoundsError)):
        p.send_now(line)
    p.close()


@pytest.mark.parametrize("line,named", [
    ("M206 X10", "M206"), ("M428", "M428"), ("M92 X80", "M92"), ("M211 S0", "M211"),
    ("M500", "M500"), ("M502", "M502"), ("G5 X1 Y1 I1 J1 P1 Q1", "G5"), ("G18", "G18"),
    ("G19", "G19"), ("G93", "G93"), ("M3 S90", "M3"), ("S1000", "S1000"), ("T1", "T1"),
    ("SET_GCODE_OFFSET X=10", "SET_GCODE_OFFSET"), ("FORCE_MOVE STEPPER=x DISTANCE=5",
                                                     "FORCE_MOVE"),
    ("SET_KINEMATIC_POSITION X=0", "SET_KINEMATIC_POSITION"), ("M84", "M84")])
def test_send_allows_only_its_list(line, named):
    """send passes motion, the profile's pen commands, dwell and reads; anything else is
    refused naming the command (before: passed on to the board)."""
    p = _plotter("sim://grbl?speed=instant")
    p.set_origin()
    with pytest.raises((RefusedLine, OutOfBoundsError), match=named):
        p.send_now(line)
    p.close()


def test_send_checks_z_and_passes_the_allowed():
    p = _plotter("sim://grbl?speed=instant&pen=z", "grbl-z")  # Z travel 0..3
    p.set_origin()
    with pytest.raises(OutOfBoundsError, match="moves Z to 40"):
        p.send_now("G0 Z40")
    with pytest.raises(OutOfBoundsError, match="moves Z to -2"):
        p.send_now("G1 X10 Y-10 Z-2 F1000")
    assert p.send_now("G0 Z3") == []  # the profile's own pen-up
    assert p.send_now("G1 X10 Y-10 Z1 F1000") == []
    assert p.send_now("G4 P0.01") == []
    assert p.send_now("?")[0].startswith("<Idle|")
    assert p.send_now("$G")[0].startswith("[GC:")
    assert not p.simulator.out_of_bounds
    p.close()


def test_a_profile_extends_the_allow_list(tmp_path):
    import yaml

    from plotterd.gcode.profile import bundled_dir, load_profile

    data = yaml.safe_load((bundled_dir() / "grbl-servo.yaml").read_text())
    data["send_allow"] = ["M3", "s"]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_profile(path).send_allow == ("M3", "S")
    p = _plotter("sim://grbl?speed=instant", str(path))
    p.set_origin()
    assert p.send_now("M3 S90") == []
    with pytest.raises(RefusedLine, match="M206"):
        p.send_now("M206 X1")
    with pytest.raises(RefusedLine, match="G92"):
        p.send_now("G92 X0")  # an allow-list never lets through what cannot be followed
    p.close()
    data["send_allow"] = ["M3 S90"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"send_allow\[0\]"):
        load_profile(path)


def test_send_answers_and_pen_controls():
    p = _plotter("sim://grbl?speed=instant")
    out = p.send_now("$$")
    assert "$10=1" in out and "$22=0" in out
    p.pen_down()
    assert p.simulator.pen_down
    p.pen_up()
    assert not p.simulator.pen_down
    with pytest.raises(InputError):
        p.send_now("G0 X1\nG0 X2")
    p.close()


def test_controls_need_a_profile_for_bounds_and_pens():
    p = _plotter("sim://grbl?speed=instant", "grbl")
    p.set_origin()
    with pytest.raises(ConfigError, match="profile"):
        p.jog(1, 1)
    with pytest.raises(ConfigError, match="profile"):
        p.pen_up()
    p.close()


def test_motors_off_loses_the_position_and_pushing_the_head_shows_why():
    p = _plotter("sim://grbl?speed=instant")
    p.set_origin()
    p.jog(50, 50)
    p.motors_off()
    sim = p.simulator
    assert sim.state_name() == "Sleep" and not p.status.position_known
    sim.move_head_by_hand(10, 20)
    with pytest.raises(RefusedLine):
        p.jog(1, 1)  # woken (Ctrl-X, unlocked as at connect), but where is the head?
    assert sim.state_name() == "Idle"
    p.pen_down()  # the board answers again
    assert sim.pen_down
    p.set_origin()
    p.jog(5, 5)
    assert sim.pos[:2] == [15.0, 25.0]  # from where the head was pushed
    p.close()


def test_home_grbl_with_and_without_homing():
    p = _plotter("sim://grbl?speed=instant")
    with pytest.raises(FirmwareError, match=r"\$22=0"):
        p.home()
    p.close()
    p = _plotter("sim://grbl?speed=instant&homing=1")  # $22=1: connect homes
    assert p.status.position_known and p.status.message == "homed"
    assert p.simulator.alarm is None
    p.jog(10, 10)
    p.home()
    assert p.simulator.pos[:2] == [0.0, 0.0]
    p.close()


def test_grbl_alarm_unlocked_only_where_allowed():
    """A homing machine told not to home: connecting must not clear its alarm with $X."""
    url = "sim://grbl?speed=instant&homing=1"
    p = Plotter(url, "grbl-servo", timeouts=FAST, options=MachineOptions(homing=False))
    with pytest.raises(FirmwareError, match="locked in Alarm"):
        p.connect()
    assert not p.connected
    p = Plotter(url, "grbl-servo", timeouts=FAST,
                options=MachineOptions(homing=False, unlock_alarm=True))
    p.connect()
    assert p.simulator.alarm is None and not p.status.position_known
    p.close()


def test_write_settings_adds_the_buffer_report():
    p = _plotter("sim://grbl?speed=instant", options=MachineOptions(write_settings=True))
    assert p.simulator.settings[10] == 3
    assert p.driver.reports_buffer
    p.close()
    p = _plotter("sim://grbl?speed=instant")
    assert p.simulator.settings[10] == 1 and not p.driver.reports_buffer
    p.close()


@pytest.mark.timeout(30)
def test_lost_oks_recovered_with_status_mask_zero():
    """$10=0: WPos, no Bf:. A lost ok is recovered from the Idle state alone."""
    program = make_program("grbl", strokes=4, segs=3, seed=2)
    p = Plotter("sim://grbl?speed=instant&faults=drop_ok@20", "grbl", timeouts=FAST,
                header=program.header)
    p.connect()
    p.driver.write_settings({10: 0})
    p.driver.read_settings()
    assert p.driver.status_mask == 0
    result = p.stream(program)
    assert result.status == "done", result.error
    assert p.driver.status.wpos is not None and p.driver.status.planner_free is None
    check_drawn(p.simulator.segments, expected_strokes(program))
    p.close()


def test_unhomed_redraw_lands_offset_in_the_simulator():
    """What the position rule prevents: after a reset the board counts from where the head
    stopped, so the same absolute move lands elsewhere on the paper."""
    port = serial.serial_for_url("sim://grbl?speed=instant", do_not_open=True)
    port.open()
    sim = port.simulator
    time.sleep(0.05)  # the banner: bytes sent to the bootloader are lost
    port.read(port.in_waiting)
    port.write(b"G0X40Y30\n")
    time.sleep(0.02)
    port.read(port.in_waiting)
    sim.hard_reset(sim.now())
    time.sleep(0.05)
    port.read(port.in_waiting)
    port.write(b"G0X10Y10\n?")
    time.sleep(0.02)
    answer = port.read(port.in_waiting).decode()
    assert "MPos:10.000,10.000" in answer
    assert sim.pos[:2] == [50.0, 40.0]  # physically offset by where the reset happened
    port.write(b"$22=1\n$H\n")
    time.sleep(0.02)
    port.read(port.in_waiting)
    assert sim.pos[:2] == [0.0, 0.0] and sim.zero == [0.0, 0.0]  # homing restores it
    port.close()


def test_automatic_resume_only_after_homing_and_draws_in_place():
    program = make_program("grbl", strokes=6, segs=4, seed=8)
    at = 3 + len(program.lines) // 2
    homes = stream(program, f"sim://grbl?speed=instant&homing=1&faults=reset@{at}",
                   timeouts=FAST)
    assert homes.status == "done" and homes.resumes == 1
    check_drawn(homes.simulator.segments, expected_strokes(program), 1)
    lost = stream(program, f"sim://grbl?speed=instant&faults=reset@{at - 2}", timeouts=FAST)
    assert lost.status == "interrupted" and lost.position_lost and lost.resumable
    assert "position was lost" in lost.error
    assert not lost.simulator.pen_down


def _stream_to_pen_change(url: str, fw: str, program: Program):
    """Stream ``program`` in a thread until it stops at its pen change; the plotter, the
    control, the dict the result lands in ("r") and the thread."""
    p = Plotter(url, fw, timeouts=FAST, header=program.header)
    p.connect()
    control = StreamControl()
    out: dict = {}
    th = threading.Thread(target=lambda: out.update(r=p.stream(program, control=control)))
    th.start()
    _wait(lambda: control.pen_change_pending)
    return p, control, out, th


def _pen_program(fw: str, change: list[str]) -> Program:
    """Two pens: stroke 0 with the first, stroke 1 after a pen change."""
    program = make_program("marlin" if fw != "grbl" else "grbl", strokes=2, segs=3, seed=4)
    lines = program.lines
    first = next(i for i, ln in enumerate(lines) if ln.stroke == 1)
    for k, c in enumerate(change):
        lines.insert(first + 1 + k, GLine(c, "pen_down", 1))
    program.header["pen_change"] = change if fw != "klipper" else ["PAUSE"]
    program.header["pens"] = [{"name": "black", "first_stroke": 0},
                              {"name": "red", "first_stroke": 1}]
    if fw == "klipper":
        program.header["firmware"] = "klipper"
    return program


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fw,change", [("grbl", ["M0"]), ("marlin", ["M0 Load pen red"]),
                                       ("klipper", ["PAUSE"])])
def test_pen_change_is_a_state_and_continue_goes_on(fw, change):
    program = _pen_program(fw, change)
    proto = "grbl" if fw == "grbl" else "marlin"
    p, control, out, th = _stream_to_pen_change(f"sim://{proto}?speed=instant", fw, program)
    assert control.state == "pen change" and control.pen == "red"
    st = p.status
    assert st.pen_change_pending and st.pen == "red" and st.state == "pen change"
    time.sleep(0.3)  # waiting is not a timeout, and nothing of stroke 1 is drawn yet
    assert control.pen_change_pending and th.is_alive()
    drawn = len(p.simulator.segments)
    assert drawn == len(expected_strokes(program)[0])
    if fw == "grbl":
        assert p.simulator.m0_line is not None  # GRBL holds M0's ok until cycle start
    p.continue_after_pen_change()
    th.join(10)
    assert out["r"].status == "done", out["r"].error
    assert not p.status.pen_change_pending
    check_drawn(p.simulator.segments, expected_strokes(program))
    if fw == "klipper":
        assert not any("PAUSE" in t for _, d, t in p.transport.log if d == ">")
    p.close()


def test_continue_without_a_pen_change_is_refused():
    p = _plotter("sim://grbl?speed=instant")
    with pytest.raises(PlotterdError, match="no pen change"):
        p.continue_after_pen_change()
    p.close()


@pytest.mark.timeout(30)
def test_marlin_refused_line_stops_the_job_with_the_pen_up():
    program = make_program("marlin", strokes=4, segs=3, seed=2)
    pen_up_line = 2 + next(i for i, ln in enumerate(program.lines) if ln.kind == "pen_up"
                           and ln.stroke == 1 and "M280" in ln.text) + 1
    result = stream(program, f"sim://marlin?speed=instant&faults=error@{pen_up_line}",
                    timeouts=FAST)
    assert result.status == "failed" and "Marlin refused" in result.error
    assert "Error:" in result.error and result.pen_up is True
    assert not result.simulator.pen_down
    assert result.last_completed_stroke is not None and result.last_completed_stroke <= 1


@pytest.mark.timeout(30)
def test_marlin_homing_gets_the_homing_timeout():
    """G28 takes longer than the command timeout: it must get Timeouts.homing."""
    t = Timeouts(banner=0.5, ok=0.3, status=0.3, command=0.2, homing=20.0, idle=10.0,
                 poll=0.05, reconnect_attempts=2, reconnect_backoff=0.05)
    p = Plotter("sim://marlin?speed=scaled:2&boot=0.01", "marlin-servo", timeouts=t)
    p.connect()
    p.simulator.pos[:2] = [200.0, 150.0]  # far from the switches
    started = time.monotonic()
    p.home()
    assert time.monotonic() - started > 0.5  # longer than command + ok timeouts
    assert p.status.position_known and p.simulator.pos[:2] == [0.0, 0.0]
    p.close()


def test_list_ports_returns_port_infos():
    ports = list_ports()
    assert isinstance(ports, list)
    for info in ports:
        assert info.device and info.tty
        assert all(link.startswith("/dev/serial/by-id/") for link in info.by_id)


def test_streaming_refuses_moves_outside_the_bounds_before_sending():
    program = make_program("grbl", strokes=2, segs=2, seed=1)
    program.lines.insert(5, GLine("G1 X500 Y10", "draw", 0))
    with pytest.raises(OutOfBoundsError, match="line 6"):
        stream(program, "sim://grbl?speed=instant", timeouts=FAST)
    program.lines[5] = GLine("G92 X0 Y0", "setup")
    with pytest.raises(InputError, match="line 6 .*G92"):
        stream(program, "sim://grbl?speed=instant", timeouts=FAST)
    program.lines[5] = GLine("G0 Z7", "draw", 0)  # servo pen (M3/M5): no Z travel
    with pytest.raises(OutOfBoundsError, match="line 6 .*moves Z to 7"):
        stream(program, "sim://grbl?speed=instant", timeouts=FAST)


def test_a_tty_path_is_replaced_by_its_serial_by_id_link(tmp_path):
    from plotterd.machine.plotter import prefer_by_id

    tty = tmp_path / "ttyUSB0"
    tty.write_text("")
    other = tmp_path / "ttyUSB1"
    other.write_text("")
    by_id = tmp_path / "serial" / "by-id"
    by_id.mkdir(parents=True)
    link = by_id / "usb-Arduino_Uno_8573-if00-port0"
    link.symlink_to(tty)
    assert prefer_by_id(str(tty), str(by_id)) == str(link)
    assert prefer_by_id(str(link), str(by_id)) == str(link)
    assert prefer_by_id(str(other), str(by_id)) == str(other)
    assert prefer_by_id("sim://grbl?speed=instant", str(by_id)).startswith("sim://")
    assert prefer_by_id("/dev/does-not-exist", str(by_id)) == "/dev/does-not-exist"


def test_firmware_tests_skip_with_a_message_without_a_compiler(monkeypatch):
    from pathlib import Path

    from . import grbl_firmware

    monkeypatch.setattr(grbl_firmware, "BUILD", Path(__file__))  # as if the sources were there
    monkeypatch.setattr(grbl_firmware.shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="no C compiler"):
        grbl_firmware.build()


def test_a_pty_readiness_race_is_not_a_lost_link_but_a_lasting_one_is():
    import serial as pyserial

    from plotterd.machine.base import LinkLost
    from plotterd.machine.transport import Transport

    port = pyserial.serial_for_url("sim://grbl?speed=instant", do_not_open=True)
    t = Transport(port, 115200, FAST)
    t.open()
    real_read = port.read
    failures = {"n": 1}

    def flaky(size=1):
        if failures["n"] > 0:
            failures["n"] -= 1
            raise pyserial.SerialException("device reports readiness to read but returned no "
                                           "data (device disconnected or multiple access on "
                                           "port?)")
        return real_read(size)

    port.read = flaky
    assert t.readline(1.0).startswith("Grbl")  # one spurious report: read on
    failures["n"] = 100
    t.write(b"?")
    with pytest.raises(LinkLost, match="returned no data"):
        t.readline(1.0)
    t.close()


@pytest.mark.timeout(30)
def test_klipper_host_pause_with_the_pen_down_lifts_and_lowers_it():
    """Foreign G-code may PAUSE mid-stroke: the host lifts the pen for the change and lowers
    it again after, so the stroke goes on where it was."""
    program = make_program("marlin", strokes=2, segs=4, seed=6)
    lines = program.lines
    k = next(i for i, ln in enumerate(lines) if ln.kind == "draw" and ln.stroke == 1) + 1
    lines.insert(k, GLine("PAUSE", "draw", 1))
    program.header.update(firmware="klipper", pen_change=["PAUSE"])
    p, control, out, th = _stream_to_pen_change("sim://marlin?speed=instant", "klipper",
                                                program)
    assert not p.simulator.pen_down  # lifted for the change
    control.continue_after_pen_change()
    th.join(10)
    assert out["r"].status == "done", out["r"].error
    check_drawn(p.simulator.segments, expected_strokes(program))
    p.close()
