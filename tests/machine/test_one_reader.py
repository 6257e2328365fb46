"""One G-code reader: the interpreter (plot, stream and send guards), the drivers' line items
and both simulated boards read the same odd lines the same way, each through its firmware's
own receive rules (GRBL drops every space, Marlin's words end at one)."""

from __future__ import annotations

import time

import pytest
import serial

import plotterd.machine  # noqa: F401 - registers sim://
from plotterd.gcode import tokens
from plotterd.gcode.interpret import Interpreter, PenModel, command_words
from plotterd.gcode.tokens import gcode_words, grbl_line, scan
from plotterd.machine.base import make_item
from plotterd.machine.marlin import frame
from plotterd.machine.sim import grbl as grbl_sim
from plotterd.machine.sim import marlin as marlin_sim

BOUNDS = (0.0, 0.0, 200.0, 200.0)
ODD = ["g0 x10 y5", "G0 X1 0 Y5", "G0 X12 (Y99) Y3 ; X50", "G0X+7.Y.5", "G0 X2 Y9 (a (b) c)",
       "g0 X 3 y 4", "G0 X20 Y20 ?"]


def _port(url: str) -> serial.SerialBase:
    port = serial.serial_for_url(url, timeout=0.2, baudrate=115200)
    time.sleep(0.02)
    port.reset_input_buffer()
    return port


def _reply(port, starts: str, timeout: float = 2.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = port.readline().decode("latin-1").strip()
        if line.startswith(starts):
            return line
    raise AssertionError(f"no reply starting {starts!r}")


def _grbl_xy(port) -> tuple[float, float]:
    port.write(b"?")
    x, y, _ = _reply(port, "<").split("MPos:")[1].split("|")[0].split(",")
    return float(x), float(y)


def _marlin_xy(port) -> tuple[float, float]:
    port.write(b"M114\n")
    fields = dict(f.split(":") for f in _reply(port, "X:").split()[:2])
    return float(fields["X"]), float(fields["Y"])


def test_grbl_sim_moves_where_the_interpreter_says():
    port = _port("sim://grbl?speed=instant")
    it = Interpreter(BOUNDS, "grbl", PenModel("none"), "test")
    seen = []
    for text in ODD:
        port.write(make_item(text, "grbl").text.encode() + b"\n")
        assert _reply(port, ("ok", "error")) == "ok", text
        it.run(1, text)
        assert _grbl_xy(port) == pytest.approx((it.state.x, it.state.y)), text
        seen.append((it.state.x, it.state.y))
    assert seen[1] == (10.0, 5.0)  # GRBL never sees the space: X1 0 is X10
    assert seen[2] == (12.0, 3.0)  # the comments hold no words
    # a checksum is no G-code to GRBL: the board refuses it, so the driver drops it (the
    # interpreter reads the line without it)
    port.write(b"G0X6Y7*33\n")
    assert _reply(port, ("ok", "error")) == "error:1"
    assert make_item("N3 G0 X6 Y7*33", "grbl").text == "N3G0X6Y7"
    assert command_words("N3 G0 X6 Y7*33", "grbl")[1] == [("G", 0.0), ("X", 6.0), ("Y", 7.0)]


def test_marlin_sim_moves_where_the_interpreter_says():
    port = _port("sim://marlin?speed=instant")
    it = Interpreter(BOUNDS, "marlin", PenModel("none"), "test")
    seen = []
    for text in [*ODD[:-1], frame(1, "G0 X4 Y4")]:
        port.write(make_item(text, "marlin").text.encode() + b"\n")
        assert _reply(port, ("ok", "Error")).startswith("ok"), text
        it.run(1, text)
        assert _marlin_xy(port) == pytest.approx((it.state.x, it.state.y)), text
        seen.append((it.state.x, it.state.y))
    assert seen[1] == (1.0, 5.0)  # Marlin's word ends at the space: X1 0 is X1
    assert seen[-1] == (4.0, 4.0)  # line number and checksum read off


@pytest.mark.parametrize("text", [*ODD, "N12 G1 X1 Y2 F300", "M3 S90", "G4 P0.5", "M400"])
def test_every_reader_gets_the_same_words(text):
    words = words_grbl = command_words(text, "grbl")[1]
    parsed = grbl_sim._parse_block(grbl_line(text))
    if not isinstance(parsed, int):
        gs, ms, rest = parsed
        assert sorted(words) == sorted([("G", g) for g in gs] + [("M", m) for m in ms]
                                       + [(k, v) for k, v in rest.items() if k != "N"])
        assert rest.get("N") == (12.0 if text.startswith("N") else None)  # read, not used
    _, words = command_words(text, "marlin")
    # the Marlin board reads the line number off first (it would ask for a checksum)
    body = tokens.frame(make_item(text, "marlin").text).body
    code, rest = marlin_sim._code_and_words(body.upper())
    assert words[0] == (code[0], float(code[1:])) and dict(words[1:]) == rest
    assert gcode_words(tokens.command(make_item(text, "grbl").text)) == words_grbl


@pytest.mark.parametrize(("line", "code"), [("G1X1.2.3", 1), ("G1X-", 2), ("G1X1X2", 25),
                                            ("G1Q5", 20), ("G1X1*5", 1), ("G38.2X1", 20)])
def test_grbl_sim_errors_come_from_the_tokens(line, code):
    assert grbl_sim._parse_block(line) == code
    assert any(not t.word for t in scan(line)) == (code in (1, 2))


def test_a_move_behind_junk_is_still_checked():
    # Marlin skips what is not a word, so the Y300 here would move: the guard must see it
    name, words = command_words("G1 X5 & Y300", "marlin")
    assert name == "" and ("Y", 300.0) in words
    assert command_words("PEN_G20 X1", "klipper")[0] == "PEN_G20"
    assert command_words("SET_SERVO SERVO=pen ANGLE=90", "klipper") == ("SET_SERVO", [])
