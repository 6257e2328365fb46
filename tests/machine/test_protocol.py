"""Parsing firmware lines into typed events, error/alarm tables, Marlin framing and resends."""

from __future__ import annotations

import time

import pytest
import serial

from plotterd.gcode.tokens import grbl_line
from plotterd.machine import Timeouts, grbl, marlin
from plotterd.machine.base import FirmwareError, make_item
from plotterd.machine.grbl_codes import ALARMS, ERRORS, alarm_text, error_text
from plotterd.machine.transport import Transport


def test_grbl_status_parse():
    ev = grbl.parse("<Run|MPos:10.000,-2.500,0.000|Bf:12,87|FS:3000,30|WCO:1.000,2.000,0.000>")
    assert isinstance(ev, grbl.Status)
    assert ev.state == "Run" and ev.sub is None
    assert ev.mpos == (10.0, -2.5, 0.0) and ev.wco == (1.0, 2.0, 0.0)
    assert (ev.planner_free, ev.rx_free, ev.feed, ev.spindle) == (12, 87, 3000.0, 30.0)
    hold = grbl.parse("<Hold:0|WPos:1.000,2.000,3.000|Bf:15,128|FS:0,0>")
    assert hold.state == "Hold" and hold.sub == 0 and hold.wpos == (1.0, 2.0, 3.0)
    assert hold.mpos is None


@pytest.mark.parametrize("line,expected", [
    ("ok", grbl.Ok()),
    ("error:9", grbl.Error(9)),
    ("ALARM:2", grbl.Alarm(2)),
    ("Grbl 1.1h ['$' for help]", grbl.Banner("1.1h")),
    ("GrblHAL 1.1f ['$' or '$HELP' for help]", grbl.Banner("1.1f")),
    ("[OPT:V,15,128]", grbl.Opt("V", 15, 128)),
    ("[MSG:'$H'|'$X' to unlock]", grbl.Message("MSG:'$H'|'$X' to unlock")),
    ("$32=0", grbl.Setting(32, "0")),
    ("$N0=G54", grbl.Unknown("$N0=G54")),
    (">G54:ok", grbl.Unknown(">G54:ok")),
])
def test_grbl_parse_each_kind(line, expected):
    assert grbl.parse(line) == expected


def test_grbl_tables_complete():
    assert set(ERRORS) == set(range(1, 18)) | set(range(20, 39))
    assert set(ALARMS) == set(range(1, 11))
    assert "Soft limit" in alarm_text(2)
    assert error_text(11).startswith("error:11 (Line overflow")
    assert grbl.Error(9).text == error_text(9)
    assert "unknown" in error_text(99)


def test_grbl_line_and_items():
    assert grbl_line("G1 X1.5 Y2 ; comment") == "G1X1.5Y2"
    assert grbl_line("g0 (move) x1 (y9) y2") == "G0X1Y2"
    assert grbl_line("M3 S30 ?!~") == "M3S30"  # real-time bytes never go in a line
    it = make_item("G4 P0.15", "grbl")
    assert it.wait == pytest.approx(0.15) and not it.motion
    assert make_item("G4 P150", "marlin").wait == pytest.approx(0.15)  # Marlin: ms
    assert make_item("G1 X1 Y2", "grbl").motion
    assert not make_item("G1 F3000", "grbl").motion
    assert not make_item("G10 L2 X0", "grbl").motion
    assert make_item("$H", "grbl").wait < 0  # homing timeout


def test_marlin_checksum_and_frame():
    # the example in docs: N1 G1 X10 Y10 F3000*77 -- recompute, not copy
    body = "N1 G1 X10 Y10 F3000"
    c = 0
    for ch in body.encode():
        c ^= ch
    assert marlin.checksum(body) == c
    assert marlin.frame(1, "G1 X10 Y10 F3000") == f"{body}*{c}"


@pytest.mark.parametrize("line,expected", [
    ("ok", marlin.Ok()),
    ("ok N12 P15 B3", marlin.Ok(12, 15, 3)),
    ("ok T:25.00 /0.00", marlin.Ok()),
    ("Resend: 12", marlin.Resend(12)),
    ("Resend:12", marlin.Resend(12)),
    ("rs N12", marlin.Resend(12)),
    ("rs 12", marlin.Resend(12)),
    ("Error:checksum mismatch, Last Line: 11", marlin.Error("checksum mismatch, Last Line: 11")),
    ("Error:Printer halted. kill() called!", marlin.Halted("Error:Printer halted. kill() called!")),
    ("echo:busy: processing", marlin.Busy("echo:busy: processing")),
    ("start", marlin.Start()),
    ("X:10.00 Y:2.50 Z:0.00 E:0.00 Count X:800", marlin.Position(10.0, 2.5, 0.0)),
    ("echo:Unknown command: \"G99\"", marlin.Echo("echo:Unknown command: \"G99\"")),
])
def test_marlin_parse(line, expected):
    assert marlin.parse(line) == expected


def _loop_driver() -> tuple[marlin.MarlinDriver, serial.SerialBase]:
    """A Marlin driver on pyserial's loop:// port: what it writes can be read back."""
    t = Transport("loop://", timeouts=Timeouts.fast())
    t.open()
    return marlin.MarlinDriver(t, Timeouts.fast()), t.ser


def _sent(ser) -> list[str]:
    return ser.read(ser.in_waiting).decode().splitlines()


def test_marlin_resend_from_history_and_stale_duplicates():
    drv, ser = _loop_driver()
    items = [drv.make_item(f"G1 X{i} Y0", i, "draw") for i in range(3)]
    for it in items:
        drv.send(it)
        drv._handle("ok")
    assert _sent(ser) == [marlin.frame(i + 1, f"G1 X{i} Y0") for i in range(3)]
    drv.send(drv.make_item("G1 X9 Y9", 3, "draw"))  # line 4
    _sent(ser)
    # Marlin lost line 3 and 4: asks for 3 (twice, as some firmwares do) then ok
    drv._handle("Error:Line Number is not Last Line Number+1, Last Line: 2")
    drv._handle("Resend: 3")
    drv._handle("Resend: 3")  # repeated within the same answer: ignored
    drv._handle("ok")
    assert drv.resend_counts == {3: 1}
    drv.pump()
    assert _sent(ser) == [marlin.frame(3, "G1 X2 Y0")]
    # a stale request answering a line sent before the rewind is ignored
    drv.fifo[0].gen -= 1
    drv._handle("Resend: 3")
    assert drv.resend_counts == {3: 1}
    drv.fifo[0].gen += 1


def test_marlin_resend_cap():
    drv, ser = _loop_driver()
    drv.send(drv.make_item("G1 X1 Y1", 0, "draw"))
    with pytest.raises(FirmwareError, match="more than 10 times"):
        for _ in range(11):
            drv._handle("Resend: 1")
            drv._handle("ok")
            drv.pump()


def test_marlin_probe_recovers_lost_ok():
    drv, ser = _loop_driver()
    it = drv.make_item("G1 X1 Y1", 0, "draw")
    drv.send(it)
    drv.fifo[0].since -= 10  # the ok is long overdue
    drv._alive -= 10
    drv.tick()
    assert _sent(ser)[-1] == "M114"
    drv._handle("X:1.00 Y:1.00 Z:0.00 E:0.00 Count X:80 Y:80 Z:0")
    drv._handle("ok")
    acks = drv.poll(0)
    assert [(a.item, a.lost) for a in acks] == [(it, True)]
    assert not drv.fifo


@pytest.mark.parametrize("line", ["G4 P1.2.3", "G4 S..", "G4 P-", "G4 P1e9"])
def test_items_never_raise_on_odd_numbers(line):
    for fw in ("grbl", "marlin"):
        assert make_item(line, fw).wait >= 0


def test_grbl_idle_with_an_ok_overdue_gets_a_cycle_start_before_oks_count_as_lost():
    """GRBL idle, a block planned but never started (a lost auto-start) and the line in its
    sync unanswered: a '~' first (idle, it starts what is planned and nothing else), and the
    ok that then comes is the line's own, not a lost one."""
    t = Transport("loop://", timeouts=Timeouts.fast())
    t.open()
    drv, ser = grbl.GrblDriver(t, Timeouts.fast()), t.ser
    it = drv.make_item("M5")
    drv.send(it)
    ser.read(ser.in_waiting)
    drv.fifo[0].since -= 10  # the ok is long overdue
    drv._handle("<Idle|MPos:1.000,1.000,0.000|FS:0,0>")
    drv._last_poll = time.monotonic()  # no status query due now
    drv.tick()
    assert ser.read(ser.in_waiting) == b"~"
    drv._handle("<Idle|MPos:1.000,1.000,0.000|FS:0,0>")
    drv.tick()
    assert drv.fifo and not ser.in_waiting  # not yet given up, and only one '~'
    drv._handle("ok")
    assert [(a.item, a.lost) for a in drv.poll(0)] == [(it, False)]
