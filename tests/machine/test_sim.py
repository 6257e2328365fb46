"""The simulated plotters through pyserial, as a host sees them."""

from __future__ import annotations

import time

import cv2
import pytest
import serial

import plotterd.machine  # noqa: F401 - registers sim://
from plotterd.machine.marlin import frame
from plotterd.machine.sim import parse_faults, parse_url
from plotterd.machine.sim.core import trapezoid_time


def _open(url: str, timeout: float = 0.2) -> serial.SerialBase:
    port = serial.serial_for_url(url, timeout=timeout, baudrate=115200)
    time.sleep(0.02)  # the banner comes after the (simulated) bootloader
    return port


def _lines(port, n: int, timeout: float = 2.0) -> list[str]:
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        line = port.readline().decode("latin-1").strip()
        if line:
            out.append(line)
    return out


def test_url_and_fault_syntax():
    cfg = parse_url("sim://marlin?speed=scaled:20&seed=3&bounds=0,0,300,200&faults=drop_ok@5")
    assert (cfg.firmware, cfg.factor, cfg.instant, cfg.seed) == ("marlin", 20.0, False, 3)
    assert cfg.bounds == (0, 0, 300, 200) and cfg.blocks == 16
    assert [(f.kind, f.at) for f in parse_faults("drop_ok@120,reset@800,slow:0.1")] == [
        ("drop_ok", 120), ("reset", 800), ("slow", None)]
    for bad, words in [("sim://grbl?speed=fast", "speed"), ("sim://tinyg", "tinyg"),
                       ("sim://grbl?faults=explode@3", "explode"),
                       ("sim://grbl?faults=reset", "reset@"), ("sim://grbl?colour=red", "colour")]:
        with pytest.raises(ValueError, match=words):
            parse_url(bad)
    with pytest.raises(serial.SerialException, match="speed"):
        serial.serial_for_url("sim://grbl?speed=warp")


def test_trapezoid():
    # 100 mm at 50 mm/s, 1000 mm/s^2 from and to rest: 0.05 s up, 0.05 s down, 1.95 s cruise
    assert trapezoid_time(100, 0, 0, 50, 1000) == pytest.approx(2.05)
    # too short to reach full speed: a triangle
    assert trapezoid_time(1, 0, 0, 50, 1000) == pytest.approx(2 * (1 / 1000) ** 0.5)


def test_grbl_banner_info_status_and_drawing():
    port = _open("sim://grbl?speed=instant")
    assert _lines(port, 1) == ["Grbl 1.1h ['$' for help]"]
    port.write(b"$I\n")
    assert _lines(port, 3) == ["[VER:1.1h.20190830:plotterd-sim]", "[OPT:V,15,128]", "ok"]
    port.write(b"G0X10Y10\nM3S30\nG1X20Y10F3000\nM5\n")
    assert _lines(port, 4) == ["ok"] * 4
    port.write(b"?")
    status = _lines(port, 1)[0]
    # stock $10=1: MPos and no Bf:
    assert status.startswith("<Idle|MPos:20.000,10.000,0.000|FS:")
    port.write(b"$10=3\n?")
    assert _lines(port, 2)[1].startswith("<Idle|MPos:20.000,10.000,0.000|Bf:15,128|")
    port.write(b"$10=0\n?")
    assert _lines(port, 2)[1].startswith("<Idle|WPos:20.000,10.000,0.000|FS:")
    sim = port.simulator
    assert sim.segments == [(10.0, 10.0, 20.0, 10.0)] and not sim.pen_down


def test_grbl_errors_and_check_mode():
    port = _open("sim://grbl?speed=instant")
    _lines(port, 1)
    port.write(b"G1X1Y1\n")  # no feed rate yet
    assert _lines(port, 1) == ["error:22"]
    port.write(b"G1X1#Y1F100\nQ7\n$Z\n" + b"G1X1" * 25 + b"\n")
    assert _lines(port, 4) == ["error:1", "error:20", "error:3", "error:11"]
    port.write(b"$C\nG1X50Y50F100\n$C\n")
    assert _lines(port, 5) == ["[MSG:Enabled]", "ok", "ok", "[MSG:Disabled]", "ok"]
    assert port.simulator.pos == [0.0, 0.0, 0.0]  # check mode parses without moving


def test_grbl_soft_limit_alarm_does_not_move():
    port = _open("sim://grbl?speed=instant&bounds=0,0,100,100")
    _lines(port, 1)
    port.write(b"G0X50Y50\nG0X150Y50\n")
    got = _lines(port, 3)
    assert got == ["ok", "ALARM:2", "[MSG:Reset to continue]"]
    sim = port.simulator
    assert sim.pos[:2] == [50.0, 50.0] and sim.out_of_bounds == [(150.0, 50.0, 0.0)]
    port.write(b"G0X0Y0\n?")  # nothing is read, not even '?', until a reset
    port.write(b"\x18")
    # the aborted line's ok on the way out, as grbl-sim does
    assert _lines(port, 3) == ["ok", "Grbl 1.1h ['$' for help]", "[MSG:'$H'|'$X' to unlock]"]
    port.write(b"G0X0Y0\n")
    assert _lines(port, 1) == ["error:9"]  # locked
    port.write(b"$X\nG0X0Y0\n")
    assert _lines(port, 3) == ["[MSG:Caution: Unlocked]", "ok", "ok"]


def test_grbl_rx_buffer_drops_overflow_and_holds_ok_while_planner_full():
    # a host that ignores flow control: 40 moves at once into a 128-byte buffer
    port = _open("sim://grbl?speed=scaled:5")
    _lines(port, 1)
    port.write(b"G1F6000\n" + b"".join(b"G1X%d0.000Y0\n" % i for i in range(1, 40)))
    time.sleep(0.03)
    sim = port.simulator
    early = port.read(port.in_waiting).count(b"ok")  # any I/O brings the simulator up to date
    done = round(sim.pos[0] / 10)  # 10 mm moves completed so far
    assert sim.dropped_bytes > 0
    # one ok per line planned: the oks stop while the 15-block planner is full
    assert early == 1 + 15 + done


def test_grbl_hold_resume_and_reset_while_moving():
    port = _open("sim://grbl?speed=scaled:2")
    _lines(port, 1)
    port.write(b"G1X100Y0F6000\n")
    _lines(port, 1)
    port.write(b"!")
    time.sleep(0.05)
    port.write(b"?")
    assert _lines(port, 1)[0].startswith("<Hold:1|")  # finishing the block in progress
    port.write(b"\x18")  # soft reset while moving
    got = _lines(port, 2)
    assert got == ["ALARM:3", "Grbl 1.1h ['$' for help]"]
    assert 0 < port.simulator.pos[0] < 100  # stopped dead mid-move


def test_marlin_checksums_resend_and_busy():
    port = _open("sim://marlin?speed=scaled:10")
    assert _lines(port, 1) == ["start"]
    _lines(port, 2)
    port.write((frame(0, "M110 N0") + "\n").encode())
    assert _lines(port, 1)[0].startswith("ok")
    port.write(b"N1 G0 X10 Y10*12\n")  # wrong checksum
    got = _lines(port, 3)
    assert got == ["Error:checksum mismatch, Last Line: 0", "Resend: 1", "ok N0 P16 B4"]
    port.write((frame(2, "G0 X10 Y10") + "\n").encode())  # skipped a number
    assert _lines(port, 2) == ["Error:Line Number is not Last Line Number+1, Last Line: 0",
                               "Resend: 1"]
    _lines(port, 1)
    # a 4 s dwell: busy keep-alives every 2 s (scaled 10x: 0.2 s)
    port.write((frame(1, "G4 P4000") + "\n").encode())
    got = _lines(port, 3, timeout=1.0)
    assert got[:2] == ["echo:busy: processing"] * 2 and got[2].startswith("ok N1")


def test_marlin_servo_is_not_synchronised():
    """M280 acts at once, not after queued moves: without M400 the pen drops early."""
    port = _open("sim://marlin?speed=scaled:5")
    _lines(port, 3)
    port.write(b"G1 X50 Y0 F3000\nM280 P0 S30\n")
    time.sleep(0.05)
    sim = port.simulator
    _ = port.in_waiting  # the simulator is lazy: any I/O brings it up to date
    with sim.lock:
        assert sim.moving() and sim.pen_down


def test_record_survives_a_new_simulator_and_renders(tmp_path):
    rec = tmp_path / "job.record"
    url = f"sim://grbl?speed=instant&record={rec}"
    port = _open(url)
    port.write(b"G0X10Y10\nM3S30\nG1X20Y10F3000\nM5\n")
    _lines(port, 5)
    port.close()
    port.simulator.close()
    port2 = _open(url)  # e.g. after a daemon restart
    port2.write(b"G0X10Y20\nM3S30\nG1X20Y20F3000\nM5\n")
    _lines(port2, 5)
    sim = port2.simulator
    assert sim.segments == [(10, 10, 20, 10), (10, 20, 20, 20)]
    png, svg = sim.render(tmp_path / "drawn.png", px_per_mm=2, pen_width_mm=1)
    img = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert img.shape == (600, 840)
    # machine +Y up: y=10 and y=20 on a 300 mm tall bed land at rows 580 and 560
    assert img[580, 30] < 128 and img[560, 30] < 128 and img[570, 30] > 200
    assert svg.read_text().count("<line ") == 2


def test_disconnect_and_unplug_through_pyserial():
    port = _open("sim://grbl?speed=instant&faults=disconnect@2,unplug@4")
    _lines(port, 1)
    port.write(b"G0X1\nG0X2\n")
    with pytest.raises(serial.SerialException):
        time.sleep(0.01)
        port.read(10)
    port.close()
    port.open()  # the same device comes back, freshly reset
    time.sleep(0.02)
    assert "Grbl" in "".join(_lines(port, 1))
    port.write(b"G0X3\nG0X4\n")
    time.sleep(0.01)
    with pytest.raises(serial.SerialException):
        port.read(10)
    port.close()
    with pytest.raises(serial.SerialException, match="unplugged"):
        port.open()


def test_dtr_pulse_resets_the_board():
    port = _open("sim://grbl?speed=instant")
    assert _lines(port, 1) == ["Grbl 1.1h ['$' for help]"]
    port.write(b"G0X5Y5\n")
    assert _lines(port, 1) == ["ok"]
    port.dtr = False
    port.dtr = True  # like an Arduino's auto-reset capacitor on DTR
    time.sleep(0.02)
    assert _lines(port, 1) == ["Grbl 1.1h ['$' for help]"]
    assert port.simulator.resets == 2 and port.simulator.pos[:2] == [5.0, 5.0]


def test_grbl_driver_unlock_home_and_settings():
    from plotterd.machine import Timeouts
    from plotterd.machine.base import FirmwareError
    from plotterd.machine.grbl import GrblDriver
    from plotterd.machine.transport import Transport

    port = serial.serial_for_url("sim://grbl?speed=instant&homing=1", do_not_open=True)
    t = Transport(port, 115200, Timeouts.fast())
    t.open()
    drv = GrblDriver(t, Timeouts.fast())
    drv.connect()  # boots locked (homing enabled): connecting does not unlock
    assert drv.query_status().state == "Alarm" and drv.settings[22] == "1"
    drv.home()
    assert drv.query_status().state == "Idle"
    drv.command("G0 X40 Y30")
    drv.home()
    assert port.simulator.pos[:2] == [0.0, 0.0]
    drv.write_settings({32: 0, 110: 5000})
    assert port.simulator.settings[32] == 0 and port.simulator.settings[110] == 5000
    with pytest.raises(FirmwareError, match="error:3 .Invalid statement"):
        drv.command("$Q")
    t.close()


def test_render_puts_machine_plus_y_at_the_top(tmp_path):
    """A segment near y_max must land in the top rows of the PNG (view from above the bed)."""
    import cv2

    from plotterd.machine.sim.render import render_segments

    png, svg = render_segments([(10.0, 90.0, 20.0, 90.0)], (0.0, 0.0, 100.0, 100.0),
                               tmp_path / "r.png", px_per_mm=2.0)
    img = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    # the 0.5 mm line is 1 px wide here and centred on a row edge: exact ink is half grey
    # (128) in the two rows it straddles, so "inked" is anything clearly below paper white
    rows = (img < 192).any(axis=1).nonzero()[0]
    assert rows.size and rows.max() < img.shape[0] * 0.2
    assert "matrix(1 0 0 -1 0 100)" in svg.read_text()


@pytest.mark.parametrize("pen", ["servo", "z"])
def test_a_zero_length_pen_down_move_is_recorded_as_a_dot(pen):
    """A point stroke is plotted as pen down, a zero-length move, pen up: the paper gets a
    dot. Lowering and lifting the pen with no move at all (a pause) records nothing."""
    if pen == "servo":
        down, up = b"M3S30\n", b"M5\n"
        port = _open("sim://grbl?speed=instant")
    else:
        down, up = b"G1Z0F1000\n", b"G0Z5\n"
        port = _open("sim://grbl?speed=instant&pen=z")
        port.write(b"G0Z5\n")
        _lines(port, 1)
    port.write(b"G0X10Y10\n" + down + b"G1X10Y10F3000\n" + up)
    _lines(port, 4)
    port.write(b"G0X30Y30\n" + down + up)  # no move while down: not a dot
    _lines(port, 3)
    port.write(b"G0X40Y40\n" + down + b"G1X40Y40F3000\nG1X45Y40\n" + up)  # a stroke, no dot
    _lines(port, 5)
    assert port.simulator.segments == [(10, 10, 10, 10), (40, 40, 45, 40)]


def test_grbl_reads_comments_as_they_arrive_and_flags_long_lines():
    """protocol.c: comment and whitespace characters are dropped on arrival, so a long
    comment never fills the 128-byte buffer; more than 79 kept characters is error:11."""
    port = _open("sim://grbl?speed=scaled:5")
    _lines(port, 1)
    sim = port.simulator
    port.write(b"; " + b"x" * 8000 + b"\n")  # one 8000-character comment line
    port.write(b"G1 X10 (a (comment) Y5 F3000 ; more\n")
    assert _lines(port, 2) == ["ok", "ok"]
    assert sim.dropped_bytes == 0
    port.write(b"G4P0" + b" " * 200 + b"\n")  # waits for the move; spaces do not count
    assert _lines(port, 1) == ["ok"]
    assert sim.pos[:2] == [10.0, 5.0]  # '(' to the first ')' dropped: X10 Y5 F3000 kept
    port.write(b"G1X2Y2" + b"0" * 74 + b"\n")  # 80 characters kept: overflow
    assert _lines(port, 1) == ["error:11"]
    port.write(b"G1X2Y2F10" + b"0" * 70 + b"\n")  # 79: fine
    assert _lines(port, 1) == ["ok"]


def test_grbl_m0_holds_its_ok_until_cycle_start():
    port = _open("sim://grbl?speed=instant")
    _lines(port, 1)
    port.write(b"G0X5Y5\nM0\nG0X9Y9\n")
    assert _lines(port, 1) == ["ok"]
    assert _lines(port, 1, timeout=0.3) == []  # M0's ok is withheld, G0X9Y9 not read
    port.write(b"?")
    assert _lines(port, 1)[0].startswith("<Hold:0|")
    assert port.simulator.pos[:2] == [5.0, 5.0]
    port.write(b"~")
    assert _lines(port, 2) == ["ok", "ok"]
    time.sleep(0.02)
    port.write(b"?")
    assert _lines(port, 1)[0].startswith("<Idle|MPos:9.000,9.000")


def test_power_on_loses_the_position_homing_restores_it():
    port = _open("sim://grbl?speed=instant&homing=1")
    assert _lines(port, 2) == ["Grbl 1.1h ['$' for help]", "[MSG:'$H'|'$X' to unlock]"]
    port.write(b"$H\nG0X30Y20\n")
    assert _lines(port, 2) == ["ok", "ok"]
    port.dtr = False
    port.dtr = True  # a reset: the board counts from where the head is
    time.sleep(0.02)
    _lines(port, 2)
    port.write(b"?")
    assert "MPos:0.000,0.000" in _lines(port, 1)[0]
    sim = port.simulator
    assert sim.pos[:2] == [30.0, 20.0] and sim.zero == [30.0, 20.0]
    port.write(b"$H\n?")
    got = _lines(port, 2)
    assert got[0] == "ok" and "MPos:0.000,0.000" in got[1]
    assert sim.pos[:2] == [0.0, 0.0] and sim.zero == [0.0, 0.0]
