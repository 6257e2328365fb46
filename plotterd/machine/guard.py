"""The last check before a byte goes to the plotter, read with the G-code stage's own
interpreter (plotterd.gcode.interpret): every move, Z included, inside the machine's bounds;
nothing that would change coordinates behind plotterd's back (G92, G10, G53, ...).

A job's lines are checked whole before streaming (:func:`check_program_lines`). A line
sent by hand (:func:`check_send`) must also be on the allow-list: motion (G0-G3 within the
bounds), the profile's own pen commands, dwell, status and setting reads, and the commands a
profile adds (``send_allow``). Everything else is refused, naming the command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from plotterd.errors import InputError, OutOfBoundsError, PlotterdError
from plotterd.gcode.interpret import (
    Interpreter,
    PenModel,
    command_words,
    z_range,
)
from plotterd.gcode.tokens import strip_comment

# GRBL '$' commands that only read; everything else ($n=v, $RST, $SLP, $J=...) is refused
READ_ONLY_DOLLAR = {"$", "$$", "$#", "$G", "$I", "$N", "$C", "$X"}
# G-codes a hand-sent line may carry: motion, dwell, the XY plane, millimetres, distance
# and feed modes (anything that changes coordinates is refused by the interpreter anyway)
_SEND_G = {0.0, 1.0, 2.0, 3.0, 4.0, 17.0, 21.0, 90.0, 91.0, 94.0}
# status and setting reads (Marlin, Klipper), and waiting for the planner
_SEND_READS = {"M114", "M115", "M119", "M105", "M503", "M27", "M31", "M400",
               "GET_POSITION", "QUERY_ENDSTOPS", "STATUS", "HELP"}
# the words a motion or dwell line may carry
_SEND_LETTERS = set("GXYZFIJRP")


class RefusedLine(PlotterdError):
    """A line plotterd will not send (it cannot follow what it does to coordinates, or it
    is not on the allow-list)."""


@dataclass(frozen=True)
class Limits:
    """What a line is checked against: the machine's bounds, Z travel, firmware, its pen
    commands and the extra commands its profile allows."""

    bounds: tuple[float, float, float, float]
    firmware: str = "grbl"
    z: tuple[float, float] | None = None  # None: Z is not checked
    pen_commands: frozenset[str] = frozenset()
    allow: frozenset[str] = frozenset()
    machine: str = "the machine"

    @classmethod
    def of(cls, profile) -> Limits:
        """From a firmware profile (plotterd.gcode.profile.Profile)."""
        up, down = profile.pen_up_lines(), profile.pen_down_lines()
        return cls(tuple(profile.bounds), profile.firmware, z_range(up, down),
                   frozenset(_norm(c) for c in (*up, *down)), frozenset(profile.send_allow),
                   f"profile {profile.name!r}")

    @classmethod
    def of_header(cls, bounds: Sequence[float], firmware: str, pen_up: Sequence[str],
                  pen_down: Sequence[str]) -> Limits:
        """From a program header (a plotter without a profile: the simulator)."""
        return cls(tuple(float(v) for v in bounds), firmware, z_range(pen_up, pen_down),
                   machine="the bounds the program was written for")


def _norm(cmd: str) -> str:
    return " ".join(strip_comment(cmd).upper().split())


def _interpreter(limits: Limits, position: tuple[float, float] | None = None) -> Interpreter:
    it = Interpreter(limits.bounds, limits.firmware, PenModel("none"), limits.machine,
                     z_range=limits.z)
    if position is not None:
        it.state.x, it.state.y = position
    return it


def check_program_lines(lines: Sequence[tuple[int, str]], limits: Limits) -> None:
    """Every ``(file line number, text)`` of a program through the interpreter, from the
    origin a program starts at; raises OutOfBoundsError / InputError naming the line."""
    it = _interpreter(limits)
    for n, text in lines:
        it.run(n, strip_comment(text))


def check_send(text: str, limits: Limits, position: tuple[float, float] | None) -> None:
    """One hand-sent line: on the allow-list, and every move inside the limits from the
    known ``position``. RefusedLine / OutOfBoundsError when it may not be sent."""
    cmd = strip_comment(text)
    compact = "".join(cmd.split()).upper()
    if compact.startswith("$"):
        if compact not in READ_ONLY_DOLLAR:
            raise RefusedLine(f"{text!r}: only read-only $ commands ($$, $#, $G, $I, $N, $C) "
                              "and $X may be sent; home with 'home'")
        return
    if _norm(cmd) in limits.pen_commands:
        return  # the profile's own pen commands (a Z pen's are inside its travel)
    name, words = command_words(cmd, limits.firmware)
    if name:
        if name in _SEND_READS or name in limits.allow:
            return
        raise RefusedLine(f"{text!r}: {name} is not on send's allow-list (motion, the "
                          "profile's pen commands, dwell, status and setting reads; a "
                          "profile adds commands with send_allow)")
    _check_words(text, words, limits)
    moves = any(k in "XYZ" for k, _ in words)
    if moves and position is None:
        raise RefusedLine(f"{text!r}: the position is unknown (home, or set the origin "
                          "first): a move cannot be bounds-checked")
    if moves and "Z" in {k for k, _ in words} and 91.0 in {v for k, v in words if k == "G"}:
        raise RefusedLine(f"{text!r}: a relative Z move from an unknown height")
    try:
        _interpreter(limits, position).run(1, cmd)
    except OutOfBoundsError as e:
        raise OutOfBoundsError(str(e).replace("G-code line 1 ", "", 1)) from None
    except InputError as e:
        raise RefusedLine(str(e).replace("G-code line 1 ", "", 1)) from None


def _check_words(text: str, words: list[tuple[str, float]], limits: Limits) -> None:
    """Every G and M word on the allow-list, and no other word than a move's or a dwell's
    (a command a profile allows brings its parameters: M3 S90)."""
    added = any(f"{k}{v:g}" in limits.allow for k, v in words if k in "GM")
    for k, v in words:
        code = f"{k}{v:g}"
        if k == "G":
            ok = v in _SEND_G or code in limits.allow
        elif k == "M":
            ok = code in _SEND_READS or code in limits.allow
        else:
            ok = k in _SEND_LETTERS or added or k in limits.allow
        if not ok:
            raise RefusedLine(f"{text!r}: {code} is not on send's allow-list (motion, the "
                              "profile's pen commands, dwell, status and setting reads; a "
                              "profile adds commands with send_allow)")
