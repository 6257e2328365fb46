"""Follow any G-code the way the firmware will: modal state, positions, arcs, pen state.

``Program.parse`` runs every line of a file through :class:`Interpreter` before anything is
streamed, so that

- every move (G0/G1, the extent of every G2/G3 arc, homing, modal ``X.. Y..`` lines without
  a G word, absolute and relative, millimetres and inches) is checked against the machine's
  bounds, and a move outside is refused with its line number and the overflow in mm;
- what cannot be followed is refused with its line number: coordinate-system changes
  (G92, G10, G53, G55-G59, G28/G30 with axis words, ...), other planes, probing, G-codes
  plotterd does not know;
- the pen state is known on every line, from the machine's own pen commands (the
  profile's, or the header's for plotterd's files), so foreign files get strokes (a stroke
  is a pen-down run) for progress and resume.

Hand-written rather than a library: the G-code readers on PyPI (gcodeparser, pygcode)
neither know GRBL's and Marlin's dwell units nor the modal rules this needs to be safe.
Lines are read with :mod:`plotterd.gcode.tokens`, the one tokeniser the profile checks,
the drivers and the simulated boards use too; a GRBL line is read as GRBL's receive filter
leaves it (no spaces, so ``X1 0`` is ``X10``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from plotterd.errors import InputError, OutOfBoundsError
from plotterd.gcode.profile import trapezoid_time
from plotterd.gcode.tokens import command, gcode_words, grbl_line, named_params, scan

MM_PER_INCH = 25.4
# modal codes that do not change where a move goes
_HARMLESS_G = {17.0, 40.0, 49.0, 54.0, 61.0, 61.1, 64.0, 80.0, 94.0, 91.1}
_REFUSED_G = {
    10.0: "G10 (sets coordinate offsets)",
    18.0: "G18 (XZ plane)", 19.0: "G19 (YZ plane)",
    28.1: "G28.1 (sets the G28 position)", 30.1: "G30.1 (sets the G30 position)",
    43.1: "G43.1 (tool length offset)",
    53.0: "G53 (machine coordinates)",
    90.1: "G90.1 (absolute arc centres)",
    92.0: "G92 (sets the position)", 92.1: "G92.1", 92.2: "G92.2", 92.3: "G92.3",
    93.0: "G93 (inverse-time feed)",
    38.2: "G38.2 (probing)", 38.3: "G38.3 (probing)", 38.4: "G38.4 (probing)",
    38.5: "G38.5 (probing)",
    55.0: "G55", 56.0: "G56", 57.0: "G57", 58.0: "G58", 59.0: "G59",
    59.1: "G59.1", 59.2: "G59.2", 59.3: "G59.3",
}
# Klipper commands that move or redefine the position outside G-code's rules
_REFUSED_EXTENDED = ("SET_KINEMATIC_POSITION", "FORCE_MOVE", "SET_GCODE_OFFSET",
                     "MANUAL_STEPPER", "MANUAL_MOVE")
# Marlin M-codes whose parameters are free text (M0 Load pen 2, M117 Hello)
_TEXT_M = {0.0, 1.0, 23.0, 28.0, 117.0, 118.0, 928.0}
_CLASSIC = re.compile(r"^(\s*[A-Z]\s*[-+]?(\d+\.?\d*|\.\d+))*\s*$", re.IGNORECASE)
_EXTENDED = re.compile(r"^([A-Z_][A-Z0-9_]*)(\s|$)", re.IGNORECASE)


def overflow(lo: Any, hi: Any, bounds: tuple[float, float, float, float]) -> list[str]:
    """How far the box lo..hi sticks out of bounds (xmin, ymin, xmax, ymax), in words."""
    x_min, y_min, x_max, y_max = bounds
    eps = 1e-9
    over = []
    if lo[0] < x_min - eps:
        over.append(f"{x_min - lo[0]:.2f} mm below x_min")
    if hi[0] > x_max + eps:
        over.append(f"{hi[0] - x_max:.2f} mm beyond x_max")
    if lo[1] < y_min - eps:
        over.append(f"{y_min - lo[1]:.2f} mm below y_min")
    if hi[1] > y_max + eps:
        over.append(f"{hi[1] - y_max:.2f} mm beyond y_max")
    return over


# ---- pen models: is the pen down, from the machine's own pen commands ----

def _effective(cmds: list[str] | tuple[str, ...]) -> list[str]:
    """Pen commands without dwells and planner syncs (they say nothing about the pen)."""
    out = []
    for c in cmds:
        w = gcode_words(c)
        if w and w[0] in (("G", 4.0), ("M", 400.0)):
            continue
        out.append(c)
    return out


def _norm(cmd: str) -> str:
    return " ".join(cmd.upper().split())


@dataclass
class PenModel:
    """Which machine state means "pen down", learnt from the pen-up/pen-down commands."""

    kind: str  # spindle | z | m280 | servo | commands | none
    down: float = 0.0
    up: float = 0.0
    servo: str = ""
    up_cmds: frozenset[str] = frozenset()
    down_cmds: frozenset[str] = frozenset()

    @classmethod
    def from_commands(cls, up: list[str] | tuple[str, ...], down: list[str] | tuple[str, ...]
                      ) -> PenModel:
        ups, downs = _effective(up), _effective(down)
        if not ups or not downs:
            return cls("none")
        dw = dict(gcode_words(downs[0]))
        uw = dict(gcode_words(ups[0]))
        if dw.get("M") in (3.0, 4.0) and "S" in dw:
            up_s = uw.get("S", 0.0) if uw.get("M") in (3.0, 4.0) else 0.0
            return cls("spindle", down=dw["S"], up=up_s)
        if "Z" in dw and "Z" in uw and dw.get("G") in (0.0, 1.0):
            return cls("z", down=dw["Z"], up=uw["Z"])
        if dw.get("M") == 280.0 and "S" in dw and "S" in uw:
            return cls("m280", down=dw["S"], up=uw["S"], servo=str(int(dw.get("P", 0))))
        dp, up_p = named_params(downs[0]), named_params(ups[0])
        if downs[0].upper().startswith("SET_SERVO") and "ANGLE" in dp and "ANGLE" in up_p:
            try:
                return cls("servo", down=float(dp["ANGLE"]), up=float(up_p["ANGLE"]),
                           servo=dp.get("SERVO", "").upper())
            except ValueError:
                pass
        only_up = {_norm(c) for c in ups} - {_norm(c) for c in downs}
        only_down = {_norm(c) for c in downs} - {_norm(c) for c in ups}
        return cls("commands", up_cmds=frozenset(only_up), down_cmds=frozenset(only_down))

    def nearer_down(self, value: float) -> bool:
        return abs(value - self.down) < abs(value - self.up)


# ---- the interpreter ----

@dataclass
class Step:
    """What one line did."""

    moved: bool = False  # an X/Y move (G0..G3, homing)
    feed_move: bool = False  # G1/G2/G3 (uses the modal feed)
    rapid: bool = False
    bare: bool = False  # axis words without a G word (modal motion)
    xy_absolute: bool = False  # an absolute G0/G1 naming both X and Y
    sets_feed: bool = False
    sets_s: bool = False
    pen_before: bool | None = None
    pen_after: bool | None = None
    points: list[tuple[float, float]] = field(default_factory=list)  # path, after the start
    seconds: float = 0.0


@dataclass
class State:
    x: float = 0.0
    y: float = 0.0
    z: float | None = None
    inches: bool = False
    relative: bool = False
    motion: float = 0.0  # GRBL starts in G0
    feed: float | None = None  # mm/min
    spindle_on: bool = False
    s: float | None = None
    servo_angle: float | None = None
    pen_cmd: bool | None = None  # commands dialect: last pen command seen


class Interpreter:
    """Runs lines one by one; raises InputError/OutOfBoundsError naming the line number."""

    def __init__(self, bounds: tuple[float, float, float, float], firmware: str,
                 pen: PenModel, machine: str, travel_feed: float = 6000.0,
                 acceleration: float = 500.0, z_range: tuple[float, float] | None = None):
        """``z_range``: the Z travel every Z move must stay in (:func:`z_range`); None:
        Z is not checked."""
        self.bounds = tuple(float(b) for b in bounds)
        self.z_range = z_range
        self.firmware = firmware
        self.pen = pen
        self.machine = machine  # "profile 'grbl-servo'", for messages
        self.travel_feed = travel_feed
        self.acceleration = acceleration
        x0 = min(max(0.0, self.bounds[0]), self.bounds[2])
        y0 = min(max(0.0, self.bounds[1]), self.bounds[3])
        self.home = (x0, y0)  # where a program starts and homing ends: the origin
        self.state = State(x=x0, y=y0)
        self.lo = [math.inf, math.inf]  # every position checked, for the header
        self.hi = [-math.inf, -math.inf]

    # -- pen --
    def pen_down(self) -> bool | None:
        st, pen = self.state, self.pen
        if pen.kind == "spindle":
            if not st.spindle_on:
                return False
            return None if st.s is None else pen.nearer_down(st.s)
        if pen.kind == "z":
            return None if st.z is None else pen.nearer_down(st.z)
        if pen.kind in ("m280", "servo"):
            return None if st.servo_angle is None else pen.nearer_down(st.servo_angle)
        if pen.kind == "commands":
            return st.pen_cmd
        return None

    # -- helpers --
    def _err(self, n: int, cmd: str, message: str) -> InputError:
        return InputError(f"G-code line {n} ({cmd[:40]!r}): {message}")

    def _mm(self, v: float) -> float:
        return v * MM_PER_INCH if self.state.inches else v

    def _check(self, n: int, cmd: str, pts: list[tuple[float, float]]) -> None:
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        if not all(math.isfinite(v) for v in xs + ys):
            raise self._err(n, cmd, "a coordinate is not a finite number")
        lo = (min(xs), min(ys))
        hi = (max(xs), max(ys))
        b = self.bounds
        if lo[0] < b[0] - 1e-9 or lo[1] < b[1] - 1e-9 or hi[0] > b[2] + 1e-9 \
                or hi[1] > b[3] + 1e-9:
            over = overflow(lo, hi, b)
            raise OutOfBoundsError(
                f"G-code line {n} ({cmd[:40]!r}) moves outside {self.machine}: it overflows "
                f"{', '.join(over)} (to X {hi[0] if hi[0] > b[2] else lo[0]:.2f}, "
                f"Y {hi[1] if hi[1] > b[3] else lo[1]:.2f}; the machine X {b[0]:g}..{b[2]:g}, "
                f"Y {b[1]:g}..{b[3]:g} mm). Nothing was sent.")
        self.lo = [min(self.lo[0], lo[0]), min(self.lo[1], lo[1])]
        self.hi = [max(self.hi[0], hi[0]), max(self.hi[1], hi[1])]

    # -- one line --
    def run(self, n: int, raw_cmd: str) -> Step:
        """Execute one command (comments already removed); ``n`` is its line number."""
        cmd = command(raw_cmd)
        step = Step(pen_before=self.pen_down())
        if not cmd or cmd == "%":
            step.pen_after = step.pen_before
            return step
        if cmd.startswith("$"):
            self._system(n, cmd, step)
        else:
            name, words = command_words(cmd, self.firmware)
            if name:
                self._extended(n, cmd)
            else:
                self._classic(n, cmd, words, step)
        step.pen_after = self.pen_down()
        return step

    def _system(self, n: int, cmd: str, step: Step) -> None:
        up = cmd.upper().replace(" ", "")
        if up == "$H":
            self._home(n, cmd, step)
        elif up.startswith(("$J=", "$RST", "$N")):
            raise self._err(n, cmd, "jogging, resets and startup blocks are not followed; "
                                    "plotterd will not stream a move it cannot check")

    def _extended(self, n: int, cmd: str) -> None:
        m = _EXTENDED.match(cmd)
        name = m.group(1).upper() if m else cmd.split()[0].upper()
        if name in _REFUSED_EXTENDED:
            raise self._err(n, cmd, f"{name} changes the position in a way plotterd cannot "
                                    "follow")
        if self.pen.kind == "servo" and name == "SET_SERVO":
            p = named_params(cmd)
            if p.get("SERVO", "").upper() == self.pen.servo and "ANGLE" in p:
                try:
                    self.state.servo_angle = float(p["ANGLE"])
                except ValueError as e:
                    raise self._err(n, cmd, "ANGLE is not a number") from e
        elif self.pen.kind == "commands":
            self._pen_command(cmd)

    def _pen_command(self, cmd: str) -> None:
        c = _norm(cmd)
        if c in self.pen.down_cmds:
            self.state.pen_cmd = True
        elif c in self.pen.up_cmds:
            self.state.pen_cmd = False

    def _classic(self, n: int, cmd: str, words: list[tuple[str, float]], step: Step) -> None:
        st = self.state
        gs = [v for k, v in words if k == "G"]
        ms = [v for k, v in words if k == "M"]
        vals: dict[str, list[float]] = {}
        for k, v in words:
            vals.setdefault(k, []).append(v)
        if "O" in vals:
            raise self._err(n, cmd, "subroutines (O words) are not followed")
        if self.pen.kind == "commands":
            self._pen_command(cmd)
        motion: float | None = None
        dwell = home = False
        for g in gs:
            g = round(g, 1)
            if g in _REFUSED_G:
                raise self._err(n, cmd, f"{_REFUSED_G[g]} is refused: plotterd could not "
                                        "follow where later moves go")
            if g in (0.0, 1.0, 2.0, 3.0):
                motion = g
            elif g == 4.0:
                dwell = True
            elif g == 20.0:
                if self.firmware == "klipper":
                    raise self._err(n, cmd, "Klipper has no inch mode (G20)")
                st.inches = True
            elif g == 21.0:
                st.inches = False
            elif g == 90.0:
                st.relative = False
            elif g == 91.0:
                st.relative = True
            elif g in (28.0, 30.0):
                if any(a in vals for a in "XYZ"):
                    raise self._err(n, cmd, f"G{g:g} with axis words moves through a "
                                            "position plotterd cannot check; refused")
                home = True
            elif g not in _HARMLESS_G:
                raise self._err(n, cmd, f"G{g:g} is not understood; plotterd will not "
                                        "stream what it cannot follow")
        if "F" in vals and not dwell:
            f = self._mm(vals["F"][-1])
            if f <= 0:
                raise self._err(n, cmd, f"feed F{vals['F'][-1]:g} must be > 0")
            st.feed, step.sets_feed = f, True
        self._m_words(ms, vals, step)
        if dwell:
            step.seconds += self._dwell(n, cmd, vals)
            return
        if home:
            self._home(n, cmd, step)
            return
        if motion is not None:
            st.motion = motion
        if any(a in vals for a in "XYZ"):
            self._move(n, cmd, vals, step, bare=motion is None)
        elif motion in (2.0, 3.0):
            raise self._err(n, cmd, "an arc needs an end point")

    def _m_words(self, ms: list[float], vals: dict[str, list[float]], step: Step) -> None:
        st = self.state
        spindle_s = self.firmware == "grbl" or any(m in (3.0, 4.0, 5.0) for m in ms)
        if "S" in vals and spindle_s and not any(m == 280.0 for m in ms):
            st.s, step.sets_s = vals["S"][-1], True
        for m in ms:
            if m in (3.0, 4.0):
                st.spindle_on = True
            elif m in (5.0, 2.0, 30.0):
                st.spindle_on = False
            elif m == 280.0 and self.pen.kind == "m280":
                p = vals.get("P", [0.0])[-1]
                if str(int(p)) == self.pen.servo and "S" in vals:
                    st.servo_angle = vals["S"][-1]
        if any(m in (2.0, 30.0) for m in ms):  # program end resets the modal state
            st.relative, st.motion = False, 1.0

    def _dwell(self, n: int, cmd: str, vals: dict[str, list[float]]) -> float:
        if self.firmware == "grbl":
            if "S" in vals and "P" not in vals:
                raise self._err(n, cmd, "GRBL's dwell is G4 P<seconds>; G4 S is Marlin's")
            p = vals.get("P", [0.0])[-1]
            if p >= 60:
                raise self._err(n, cmd, f"G4 P{p:g} would pause GRBL {p:g} s (its P is "
                                        "seconds); was the file written for Marlin (ms)?")
            return p
        if "S" in vals:
            return vals["S"][-1]
        return vals.get("P", [0.0])[-1] / 1000.0

    def _home(self, n: int, cmd: str, step: Step) -> None:
        st = self.state
        self._check(n, cmd, [self.home])
        step.moved, step.rapid = True, True
        step.points = [self.home]
        step.seconds += self._time(math.dist((st.x, st.y), self.home), self.travel_feed)
        st.x, st.y = self.home

    def _time(self, length: float, feed: float | None) -> float:
        f = feed or self.travel_feed
        return trapezoid_time(length, f / 60.0, self.acceleration)

    def _target(self, vals: dict[str, list[float]]) -> tuple[list[float], list[float]]:
        """Every value an axis word names (all checked), and the resulting X and Y."""
        st = self.state
        xs, ys = [st.x], [st.y]
        for axis, cur, out in (("X", st.x, xs), ("Y", st.y, ys)):
            if axis in vals:
                out[:] = [cur + self._mm(v) if st.relative else self._mm(v)
                          for v in vals[axis]]
        if "Z" in vals:
            z = self._mm(vals["Z"][-1])
            st.z = (st.z or 0.0) + z if st.relative else z
        return xs, ys

    def _check_z(self, n: int, cmd: str) -> None:
        z, zr = self.state.z, self.z_range
        if zr is None or z is None:
            return
        if not math.isfinite(z) or not zr[0] - 1e-9 <= z <= zr[1] + 1e-9:
            raise OutOfBoundsError(
                f"G-code line {n} ({cmd[:40]!r}) moves Z to {z:g}, outside {self.machine}'s "
                f"Z travel {zr[0]:g}..{zr[1]:g} mm (its pen's up and down heights). "
                "Nothing was sent.")

    def _move(self, n: int, cmd: str, vals: dict[str, list[float]], step: Step,
              bare: bool) -> None:
        st = self.state
        start = (st.x, st.y)
        xs, ys = self._target(vals)
        self._check_z(n, cmd)
        end = (xs[-1], ys[-1])
        self._check(n, cmd, [(x, ys[-1]) for x in xs] + [(xs[-1], y) for y in ys])
        if not ("X" in vals or "Y" in vals):
            return  # Z only: a pen move for Z pens
        step.moved, step.bare = True, bare
        step.xy_absolute = not st.relative and "X" in vals and "Y" in vals \
            and st.motion in (0.0, 1.0)
        if st.motion == 0.0:
            step.rapid = True
            step.points = [end]
            step.seconds += self._time(math.dist(start, end), self.travel_feed)
        elif st.motion == 1.0:
            step.feed_move = True
            step.points = [end]
            step.seconds += self._time(math.dist(start, end), st.feed)
        else:
            step.feed_move = True
            step.points = self._arc(n, cmd, vals, start, end)
            length = sum(math.dist(a, b) for a, b in zip([start, *step.points], step.points,
                                                          strict=False))
            step.seconds += self._time(length, st.feed)
        st.x, st.y = end

    def _arc(self, n: int, cmd: str, vals: dict[str, list[float]],
             start: tuple[float, float], end: tuple[float, float]) -> list[tuple[float, float]]:
        """The arc's extent checked (axis extremes inside its sweep) and its samples."""
        cw = self.state.motion == 2.0
        if "R" in vals:
            cx, cy = _centre_from_radius(start, end, self._mm(vals["R"][-1]), cw)
            if cx is None:
                raise self._err(n, cmd, "the arc's radius is shorter than half its chord")
        elif "I" in vals or "J" in vals:
            cx = start[0] + self._mm(vals.get("I", [0.0])[-1])
            cy = start[1] + self._mm(vals.get("J", [0.0])[-1])
        else:
            raise self._err(n, cmd, "an arc needs I/J or R")
        r = math.dist(start, (cx, cy))
        r_end = math.dist(end, (cx, cy))
        if abs(r - r_end) > max(0.5, 0.001 * r):  # GRBL's error:33 limit
            raise self._err(n, cmd, f"the arc's end is {abs(r - r_end):.3f} mm off its "
                                    "circle")
        a0 = math.atan2(start[1] - cy, start[0] - cx)
        a1 = math.atan2(end[1] - cy, end[0] - cx)
        sweep = (a0 - a1) if cw else (a1 - a0)
        sweep %= 2 * math.pi
        if sweep < 1e-9:
            sweep = 2 * math.pi  # same start and end: a full circle
        sign = -1.0 if cw else 1.0
        # 0.01 mm chordal error: samples for the drawing, and the extremes for the bounds
        steps = max(4, math.ceil(sweep / (2 * math.acos(max(-1.0, 1 - 0.01 / max(r, 1e-6))))))
        steps = min(steps, 2000)
        pts = [(cx + r * math.cos(a0 + sign * sweep * k / steps),
                cy + r * math.sin(a0 + sign * sweep * k / steps)) for k in range(1, steps)]
        extremes = []
        for q in range(4):  # the axis extremes the sweep passes
            ang = q * math.pi / 2
            rel = ((ang - a0) * sign) % (2 * math.pi)
            if rel <= sweep:
                extremes.append((cx + r * math.cos(ang), cy + r * math.sin(ang)))
        self._check(n, cmd, [end, *extremes, *pts])
        return [*pts, end]


def z_range(up: list[str] | tuple[str, ...], down: list[str] | tuple[str, ...]
            ) -> tuple[float, float]:
    """The Z travel a machine allows: between its pen's up and down heights for a pen on
    Z; none at all (0..0) when the pen is not on Z."""
    pen = PenModel.from_commands(up, down)
    if pen.kind == "z":
        return (min(pen.up, pen.down), max(pen.up, pen.down))
    return (0.0, 0.0)


def command_words(cmd: str, firmware: str = "") -> tuple[str, list[tuple[str, float]]]:
    """How the interpreter reads one command: ("", its words) for classic G-code, (NAME, [])
    for an extended command (Klipper's SET_SERVO ...), ("", its first word only) for an
    M-code with free text (M117 Hello). GRBL reads the line as its receive filter leaves it."""
    cmd = grbl_line(command(cmd)) if firmware == "grbl" else command(cmd)
    words = gcode_words(cmd)
    if _text_m(cmd, words):
        return "", words[:1]
    toks = scan(cmd)
    # a line that starts with a word is classic, whatever follows: the firmware skips
    # what is not a word (Marlin reads "G1 X5 & Y300" as G1 X5 Y300) or refuses the line
    if not (toks and toks[0].word) and not _CLASSIC.match(cmd):
        m = _EXTENDED.match(cmd)
        return (m.group(1).upper() if m else cmd.split()[0].upper()), []
    return "", words


def _text_m(cmd: str, words: list[tuple[str, float]]) -> bool:
    """An M-code whose parameters are free text (``M0 Load pen 2``, ``M117 Hello``)."""
    return bool(words) and words[0][0] == "M" and words[0][1] in _TEXT_M \
        and cmd.lstrip()[:1] in "Mm"


def _centre_from_radius(start: tuple[float, float], end: tuple[float, float], r: float,
                        cw: bool) -> tuple[float | None, float | None]:
    """GRBL's R-form arc centre: a negative R takes the longer way round."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    d2 = dx * dx + dy * dy
    h2 = 4 * r * r - d2
    if d2 == 0 or h2 < -1e-9:
        return None, None
    h = -math.sqrt(max(h2, 0.0)) / math.sqrt(d2)
    if not cw:
        h = -h
    if r < 0:
        h = -h
    return start[0] + 0.5 * (dx - dy * h), start[1] + 0.5 * (dy + dx * h)
