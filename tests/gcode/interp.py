"""A tiny G-code interpreter for the tests: pen state, moves, drawn segments."""

from __future__ import annotations

from dataclasses import dataclass, field

from plotterd.gcode.profile import gcode_words
from plotterd.gcode.program import Program


class PenStateError(AssertionError):
    pass


@dataclass
class Run:
    segments: list[tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=list)
    dots: list[tuple[float, float]] = field(default_factory=list)
    travel_mm: float = 0.0
    moves: list[tuple[float, float]] = field(default_factory=list)
    pen_downs: int = 0


def run(text: str) -> Run:
    """Execute plotterd G-code: checks that the pen is up at the start, at every G0 travel and
    at the end, that X/Y only change with G0 (pen up) or G1 (pen down) and that feeds are > 0.
    Pen state changes on the header's pen commands that are only in one of the two lists."""
    prog = Program.parse(text)
    ups, downs = set(prog.header["pen_up"]), set(prog.header["pen_down"])
    only_up, only_down = ups - downs, downs - ups
    assert only_up and only_down, "pen commands cannot be told apart"
    pen_down: bool | None = None  # unknown until the program lifts it
    x = y = None
    out = Run()
    stroke_drew = False
    for ln in prog.lines:
        t = ln.text
        if t in only_up:
            if pen_down and not stroke_drew:
                out.dots.append((x, y))
            pen_down = False
            continue
        if t in only_down:
            if not pen_down:
                out.pen_downs += 1
                stroke_drew = False
            pen_down = True
            continue
        if t in ups or t in downs:
            continue
        head = t.split()[0]
        words = dict(gcode_words(t[len(head):]))
        if head not in ("G0", "G1"):
            continue
        if "F" in words and words["F"] <= 0:
            raise PenStateError(f"non-positive feed: {t}")
        if "X" not in words and "Y" not in words:
            continue
        nx, ny = words.get("X", x), words.get("Y", y)
        if head == "G0":
            if pen_down is not False:
                raise PenStateError(f"travel with the pen {'down' if pen_down else 'unknown'}: {t}")
            if x is not None:
                out.travel_mm += ((nx - x) ** 2 + (ny - y) ** 2) ** 0.5
        else:
            if pen_down is not True:
                raise PenStateError(f"G1 X/Y with the pen up: {t}")
            if (nx, ny) != (x, y):
                out.segments.append(((x, y), (nx, ny)))
                stroke_drew = True
        x, y = nx, ny
        out.moves.append((x, y))
    if pen_down is not False:
        raise PenStateError("pen not up at the end")
    return out
