"""A job's planned drawing for the web page, from its stroke-tagged G-code.

The page draws the plan in grey and, as the plot's progress reports the executed G-code
line, highlights what has been drawn so far and puts the pen where the last executed move
left it. So the plan is a *track*: every line that moves X/Y, as ``[line, x, y]`` in the
order sent, and each stroke as a slice of it (its travel target, where the pen goes down,
then its drawing moves). A point is drawn once the line that reaches it has executed.

Coordinates are page millimetres (origin top-left, y down, like SVG) when the program's
firmware profile can be loaded to undo the machine mapping; otherwise machine millimetres
with y flipped so that +Y points up the screen.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

# a colour the page may put in an SVG attribute as it is
_COLOR = re.compile(r"#[0-9a-fA-F]{3,8}|[a-zA-Z]{3,20}")


def _to_page(profile: Any, paper: tuple[float, float]):
    """The inverse of plotterd.gcode.writer.to_machine for one point."""
    w, h = paper
    sx = -1.0 if profile.invert_x else 1.0
    sy = -1.0 if profile.invert_y else 1.0

    def convert(x: float, y: float) -> tuple[float, float]:
        a = (x - profile.offset_x) * sx
        b = (y - profile.offset_y) * sy
        u = w - a if profile.origin.endswith("right") else a
        v = h - b if profile.origin.startswith("bottom") else b
        return u, v

    return convert


def _frame(header: dict[str, Any], profile_names: list[str]):
    """(point converter, view box [x, y, w, h], paper-or-machine) for a program header."""
    from plotterd.errors import PlotterdError
    from plotterd.gcode import load_profile

    paper = header.get("paper_mm")
    if isinstance(paper, list) and len(paper) == 2:
        for name in profile_names:
            try:
                profile = load_profile(name)
            except (PlotterdError, OSError):
                continue
            if profile.name == header.get("profile"):
                w, h = float(paper[0]), float(paper[1])
                return _to_page(profile, (w, h)), [0.0, 0.0, w, h], "paper"
    bounds = header.get("bounds") or header.get("drawing_bounds") or [0, 0, 100, 100]
    x0, y0, x1, y1 = (float(b) for b in bounds)
    return (lambda x, y: (x, y1 + y0 - y)), [x0, y0, x1 - x0, y1 - y0], "machine"


def _width(value: Any, default: float) -> float:
    """A pen width (mm) from the header, or ``default`` where it is missing or not a width."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return round(float(value), 4) if ok and 0.01 <= value <= 20 else default


def _pens(header: dict[str, Any], strokes: list[dict[str, int]],
          pen_mm: float) -> list[dict[str, Any]]:
    """Each pen's colour, its nib width (mm: the page draws its strokes that wide, so the
    view's tone is the drawing's) and its range of stroke ids (one black pen of ``pen_mm``
    when not recorded)."""
    pens = []
    for pen in header.get("pens") or []:
        if isinstance(pen, dict) and isinstance(pen.get("first_stroke"), int):
            color = str(pen.get("color") or "#000000")
            pens.append({"name": str(pen.get("name") or ""), "first_stroke": pen["first_stroke"],
                         "strokes": int(pen.get("strokes") or 0),
                         "color": color if _COLOR.fullmatch(color) else "#000000",
                         "width_mm": _width(pen.get("width_mm"), pen_mm)})
    if not pens:
        pens = [{"name": "", "first_stroke": 0, "strokes": len(strokes), "color": "#000000",
                 "width_mm": pen_mm}]
    return pens


def job_plan(gcode: Path, profile_names: list[str], pen_mm: float = 0.3) -> dict[str, Any]:
    """The plan of the program in ``gcode`` (see the module doc); ``pen_mm``: the nib of
    pens whose width the program does not record."""
    from plotterd.gcode.profile import xy_target
    from plotterd.gcode.program import Program

    program = Program.load(gcode)
    convert, view, frame = _frame(program.header, profile_names)
    track: list[list[float]] = []
    strokes: list[dict[str, int]] = []
    x = y = 0.0
    current: int | None = None
    for i, line in enumerate(program.lines):
        target = xy_target(line.text)
        if target is None:
            continue
        x = x if target[0] is None else target[0]
        y = y if target[1] is None else target[1]
        u, v = convert(x, y)
        if line.stroke is not None and line.kind in ("travel", "draw"):
            if line.stroke != current:
                current = line.stroke
                strokes.append({"id": current, "start": len(track), "end": len(track)})
            strokes[-1]["end"] = len(track) + 1
        track.append([i, round(u, 2), round(v, 2)])
    # the same mapping as an axis-wise affine (u = ku x + cu, v = kv y + cv: the mapping only
    # shifts and flips axes), so that the page can place the machine's reported position
    (u0, v0), (u1, v1) = convert(0.0, 0.0), convert(1.0, 1.0)
    affine = [u1 - u0, u0, v1 - v0, v0]
    return {"lines": len(program.lines), "view": [round(b, 2) for b in view], "frame": frame,
            "pens": _pens(program.header, strokes, pen_mm),
            "machine_to_view": [round(a, 6) for a in affine],
            "track": track, "strokes": strokes,
            "estimated_s": program.header.get("estimated_s")}


class PlanCache:
    """Plans by G-code file, remade when the file changes (a replot after a re-run)."""

    def __init__(self, size: int = 8):
        self.size = size
        self._plans: dict[tuple[str, int, int, float], dict[str, Any]] = {}
        self._lock = threading.Lock()  # the API answers from a thread pool

    def get(self, gcode: Path, profile_names: list[str], pen_mm: float = 0.3
            ) -> dict[str, Any]:
        st = gcode.stat()
        key = (str(gcode), st.st_mtime_ns, st.st_size, pen_mm)
        with self._lock:
            plan = self._plans.get(key)
        if plan is None:
            plan = job_plan(gcode, profile_names, pen_mm)
            with self._lock:
                while len(self._plans) >= self.size:
                    self._plans.pop(next(iter(self._plans)))
                self._plans[key] = plan
        return plan
