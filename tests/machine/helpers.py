"""Programs built by hand (the G-code writer is another stage) and the check that what a
simulator drew is what the program meant."""

from __future__ import annotations

import math
import random
import re

from plotterd.gcode.program import GLine, Program

DIALECTS = {
    "grbl": {"pen_up": ["M5", "G4 P0.15"], "pen_down": ["M3 S30", "G4 P0.15"]},
    "grbl-z": {"pen_up": ["G0 Z5"], "pen_down": ["G1 Z0 F1000"]},
    "marlin": {"pen_up": ["M400", "M280 P0 S90", "G4 P150"],
               "pen_down": ["M400", "M280 P0 S30", "G4 P150"]},
}


def make_program(dialect: str = "grbl", strokes: int = 10, segs: int = 5, seed: int = 0,
                 seg_len: float = 3.0, feed: float = 3000.0, area=(20.0, 20.0, 200.0, 150.0),
                 travel_feed: float = 6000.0) -> Program:
    """Random short polyline strokes inside ``area``, tagged like plotterd.gcode output."""
    rng = random.Random(seed)
    d = DIALECTS[dialect]
    firmware = "marlin" if dialect == "marlin" else "grbl"
    header = {"version": 1, "profile": f"test-{dialect}", "firmware": firmware,
              "pen_up": d["pen_up"], "pen_down": d["pen_down"], "travel_feed": travel_feed,
              "draw_feed": feed, "bounds": [0, 0, 420, 300], "strokes": strokes}
    lines = [GLine("G21", "setup"), GLine("G90", "setup")]
    lines += [GLine(c, "setup") for c in d["pen_up"]]
    x0, y0, x1, y1 = area
    t = 0.0
    px, py = 0.0, 0.0
    for s in range(strokes):
        x, y = rng.uniform(x0 + 10, x1 - 10), rng.uniform(y0 + 10, y1 - 10)
        t += math.dist((px, py), (x, y)) / (travel_feed / 60)
        lines.append(GLine(f"G0 X{x:.3f} Y{y:.3f}", "travel", s, t))
        for c in d["pen_down"]:
            lines.append(GLine(c, "pen_down", s, t))
        ang = rng.uniform(0, 2 * math.pi)
        for k in range(segs):
            ang += rng.uniform(-0.8, 0.8)
            nx = min(max(x + seg_len * math.cos(ang), x0), x1)
            ny = min(max(y + seg_len * math.sin(ang), y0), y1)
            t += math.dist((x, y), (nx, ny)) / (feed / 60)
            f = f" F{feed:.0f}" if k == 0 else ""
            lines.append(GLine(f"G1 X{nx:.3f} Y{ny:.3f}{f}", "draw", s, t))
            x, y = nx, ny
        for c in d["pen_up"]:
            lines.append(GLine(c, "pen_up", s, t))
        px, py = x, y
    lines.append(GLine("G0 X0 Y0", "end", None, t))
    header["estimated_s"] = t
    return Program(lines, header)


_XY = re.compile(r"([XYZ])\s*([-+]?\d*\.?\d+)", re.I)


def expected_strokes(program: Program) -> list[list[tuple[float, float, float, float]]]:
    """The pen-down segments of each stroke, from the program's own lines."""
    out: dict[int, list] = {}
    x = y = 0.0
    down = False
    for ln in program.lines:
        if ln.kind == "pen_down":
            down = True
        elif ln.kind == "pen_up":
            down = False
        words = {k.upper(): float(v) for k, v in _XY.findall(ln.text)}
        if ln.text.upper().startswith(("G0", "G1")) and ("X" in words or "Y" in words):
            nx, ny = words.get("X", x), words.get("Y", y)
            if down and ln.stroke is not None and (nx, ny) != (x, y):
                out.setdefault(ln.stroke, []).append((x, y, nx, ny))
            x, y = nx, ny
    return [out[k] for k in sorted(out)]


def _same(a, b, tol=1e-3) -> bool:
    return all(abs(p - q) <= tol for p, q in zip(a, b, strict=False))


def _partial(d, e, tol=1e-3) -> bool:
    """d starts where e starts and ends on e (a move cut short by a reset)."""
    if not _same(d[:2], e[:2], tol):
        return False
    ex, ey = e[2] - e[0], e[3] - e[1]
    dx, dy = d[2] - d[0], d[3] - d[1]
    n2 = ex * ex + ey * ey
    if n2 == 0:
        return False
    f = (dx * ex + dy * ey) / n2
    cross = abs(dx * ey - dy * ex) / math.sqrt(n2)
    return -tol <= f <= 1 + tol and cross <= tol


def check_drawn(drawn, expected, max_restarts: int = 0) -> int:
    """Assert that ``drawn`` is ``expected`` stroke by stroke, in order, nothing lost or
    duplicated, except that after a resume a stroke may be redrawn from its start (up to
    ``max_restarts`` times). Returns the number of restarts seen."""
    s, j, restarts, i = 0, 0, 0, 0
    while i < len(drawn):
        d = drawn[i]
        if s < len(expected) and _same(d, expected[s][j]):
            j += 1
            if j == len(expected[s]):
                s, j = s + 1, 0
            i += 1
            continue
        if s < len(expected) and _partial(d, expected[s][j]):
            i += 1  # cut short: a restart must follow
            if i < len(drawn) and not any(_same(drawn[i], expected[k][0])
                                          for k in range(0, s + 1)):
                raise AssertionError(f"segment {i}: after a cut-short move, expected a "
                                     f"stroke restart, got {drawn[i]}")
            continue
        # after a resume the host goes back to the first stroke not known to be drawn:
        # the stroke in progress, or an earlier one when its knowledge is conservative
        back = [k for k in range(0, min(s, len(expected) - 1) + 1)
                if _same(d, expected[k][0])]
        if back and (s, j) != (back[-1], 0):
            restarts += 1
            if restarts > max_restarts:
                raise AssertionError(f"segment {i}: stroke {back[-1]} redrawn without a resume")
            s, j = back[-1], 0
            continue
        want = expected[s][j] if s < len(expected) else None
        raise AssertionError(f"segment {i}: drew {d}, expected {want} (stroke {s}, "
                             f"segment {j})")
    if s != len(expected):
        raise AssertionError(f"drawing stops in stroke {s} segment {j} of {len(expected)}")
    return restarts
