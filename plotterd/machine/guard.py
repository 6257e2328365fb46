"""The last check before a byte goes to the plotter: every move inside the bounds, and no
line that would change coordinates behind plotterd's back (G92, G10, G53, inches).

Hand-written rather than taken from a G-code library: what is needed is a conservative
follower of the few modal states that move the pen (G90/G91, G0-G3), refusing anything it
cannot follow, not a full interpreter.
"""

from __future__ import annotations

import math
import re

from plotterd.errors import OutOfBoundsError, PlotterdError

_WORD = re.compile(r"([A-Z])\s*([-+]?(?:\d+\.?\d*|\.\d+))")
_EPS = 1e-6

# what a host cannot follow, and why
REFUSED_G = {
    92.0: "G92 (coordinate offset)", 92.1: "G92.1", 10.0: "G10 (coordinate system change)",
    53.0: "G53 (machine coordinates)", 20.0: "G20 (inches)", 28.1: "G28.1", 30.1: "G30.1",
    28.0: "G28 (homing: use home)", 30.0: "G30", 38.2: "G38 (probing)",
    54.0: "G54-G59 (coordinate systems)", 55.0: "G55", 56.0: "G56", 57.0: "G57",
    58.0: "G58", 59.0: "G59",
}
# GRBL '$' commands that only read; everything else ($n=v, $RST, $SLP, $J=...) is refused
READ_ONLY_DOLLAR = {"$", "$$", "$#", "$G", "$I", "$N", "$C", "$X"}


class RefusedLine(PlotterdError):
    """A line plotterd will not send (it cannot follow what it does to coordinates)."""


def strip(text: str) -> str:
    s = re.sub(r"\([^)]*\)", "", text).split(";", 1)[0]
    return "".join(s.split()).upper()


def words(text: str) -> list[tuple[str, float]]:
    return [(k, float(v)) for k, v in _WORD.findall(text)]


class Follower:
    """Follows the modal distance mode and the XY position through G-code lines, checking
    every move against ``bounds`` (xmin, ymin, xmax, ymax)."""

    def __init__(self, bounds: tuple[float, float, float, float],
                 position: tuple[float, float] | None = None, absolute: bool = True):
        self.bounds = bounds
        self.pos = position  # None: unknown (absolute moves make it known)
        self.absolute = absolute
        self.motion = 0.0

    def inside(self, x: float, y: float) -> bool:
        x0, y0, x1, y1 = self.bounds
        return x0 - _EPS <= x <= x1 + _EPS and y0 - _EPS <= y <= y1 + _EPS

    def _check(self, x: float, y: float, line: str) -> None:
        if not self.inside(x, y):
            x0, y0, x1, y1 = self.bounds
            raise OutOfBoundsError(f"{line!r} moves to X{x:g} Y{y:g}, outside the machine's "
                                   f"bounds X{x0:g}..{x1:g} Y{y0:g}..{y1:g}")

    def line(self, text: str) -> tuple[float, float] | None:
        """Follow one line; returns its XY target when it moves. RefusedLine /
        OutOfBoundsError when it cannot be sent."""
        s = strip(text)
        if not s or s.startswith("$") or not s[0].isalpha():
            return None
        ws = words(s)
        gs = [v for k, v in ws if k == "G"]
        for g in gs:
            if g in REFUSED_G:
                raise RefusedLine(f"{text.strip()!r}: {REFUSED_G[g]} is refused: plotterd "
                                  "could not keep the moves inside the bounds after it")
        for g in gs:
            if g == 90.0:
                self.absolute = True
            elif g == 91.0:
                self.absolute = False
            elif g in (0.0, 1.0, 2.0, 3.0):
                self.motion = g
        axes = {k: v for k, v in ws if k in "XYIJR"}
        if "X" not in axes and "Y" not in axes:
            return None
        if any(g == 4.0 for g in gs):
            return None
        if self.absolute:
            base = self.pos if self.pos is not None else (None, None)
        else:
            if self.pos is None:
                raise RefusedLine(f"{text.strip()!r}: a relative move from an unknown "
                                  "position cannot be bounds-checked")
            base = self.pos
        tx = axes.get("X", base[0]) if self.absolute else base[0] + axes.get("X", 0.0)
        ty = axes.get("Y", base[1]) if self.absolute else base[1] + axes.get("Y", 0.0)
        if tx is None or ty is None:
            raise RefusedLine(f"{text.strip()!r}: moves one axis from an unknown position")
        self._check(tx, ty, text.strip())
        if self.motion in (2.0, 3.0):
            self._check_arc(text.strip(), tx, ty, axes)
        self.pos = (tx, ty)
        return self.pos

    def _check_arc(self, line: str, tx: float, ty: float, axes: dict[str, float]) -> None:
        if self.pos is None:
            raise RefusedLine(f"{line!r}: an arc from an unknown position")
        sx, sy = self.pos
        if "R" in axes:
            r = abs(axes["R"])
            # the centre is within r of both ends: the arc stays within 2r of the start
            cx, cy, reach = (sx + tx) / 2, (sy + ty) / 2, r + math.dist((sx, sy), (tx, ty)) / 2
        else:
            cx, cy = sx + axes.get("I", 0.0), sy + axes.get("J", 0.0)
            reach = math.dist((sx, sy), (cx, cy))
        # conservative: the whole circle must fit (an arc never leaves its circle)
        for px, py in ((cx - reach, cy), (cx + reach, cy), (cx, cy - reach), (cx, cy + reach)):
            if not self.inside(px, py):
                raise OutOfBoundsError(f"{line!r}: the arc may leave the machine's bounds")


def check_program_lines(texts: list[str], bounds: tuple[float, float, float, float]) -> None:
    """Every move of a program inside ``bounds``; raises on the first that is not.

    A program starts at the origin (clamped into the bounds), as the G-code stage assumes
    and as GRBL's frame is after a reset or homing; a relative file is followed from there."""
    x0 = min(max(0.0, bounds[0]), bounds[2])
    y0 = min(max(0.0, bounds[1]), bounds[3])
    f = Follower(bounds, position=(x0, y0))
    for i, t in enumerate(texts):
        try:
            f.line(t)
        except (RefusedLine, OutOfBoundsError) as e:
            raise type(e)(f"G-code line {i + 1}: {e}") from None
