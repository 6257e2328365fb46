"""``Program``: G-code lines that know which stroke they belong to.

The G-code stage produces it, the machine stage streams it. Resume-from-stroke, progress
by stroke and "what was drawn against what was meant" all need the stroke of each line,
so the ``.gcode`` file keeps it in comments that any sender ignores:

    ; plotterd {"version": 1, "profile": "grbl-servo", "firmware": "grbl", ...}
    G21                          <- kind "setup", no stroke
    ; stroke 0
    G0 X10.000 Y10.000           <- kind "travel",   stroke 0
    M3 S30                       <- kind "pen_down", stroke 0
    G4 P0.15                     <- kind "pen_down", stroke 0
    G1 X12.000 Y10.500 F3000     <- kind "draw",     stroke 0
    M5                           <- kind "pen_up",   stroke 0
    ; end
    G0 X0 Y0                     <- kind "end"

The header carries what the machine stage needs to resume without the profile file
(pen up/down commands, travel feed, bounds) and the motion model's time estimate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plotterd import atomic
from plotterd.errors import InputError

LINE_KINDS = ("setup", "travel", "pen_down", "draw", "pen_up", "end")
HEADER_PREFIX = "; plotterd "
STROKE_PREFIX = "; stroke "
END_MARK = "; end"


@dataclass
class GLine:
    text: str  # the command, no comment
    kind: str  # one of LINE_KINDS
    stroke: int | None = None  # stroke index for travel/pen_down/draw/pen_up lines
    t_end: float | None = None  # estimated machine time (s) from program start to this line's end


@dataclass
class Program:
    lines: list[GLine]
    header: dict[str, Any] = field(default_factory=dict)
    # header keys written by plotterd.gcode: version, profile, firmware ("grbl" | "marlin" |
    # "klipper"), pen_up (list[str]), pen_down (list[str]), travel_feed (mm/min),
    # bounds ([xmin, ymin, xmax, ymax] mm), estimated_s, strokes (count); setup_t_end and
    # stroke_t_end (estimated time at the end of the setup and of each stroke) let
    # Program.parse give the lines their t_end back

    @property
    def firmware(self) -> str:
        return str(self.header.get("firmware", "grbl"))

    @property
    def stroke_count(self) -> int:
        strokes = {ln.stroke for ln in self.lines if ln.stroke is not None}
        return len(strokes)

    def stroke_start(self, stroke: int) -> int:
        """Index of the first line (the travel) of ``stroke``."""
        for i, ln in enumerate(self.lines):
            if ln.stroke == stroke:
                return i
        raise KeyError(f"no stroke {stroke} in program")

    def text(self) -> str:
        out = [HEADER_PREFIX + json.dumps(self.header, sort_keys=True)]
        current: int | None = None
        ended = False
        for ln in self.lines:
            if ln.stroke is not None and ln.stroke != current:
                out.append(f"{STROKE_PREFIX}{ln.stroke}")
                current = ln.stroke
            if ln.kind == "end" and not ended:
                out.append(END_MARK)
                ended = True
                current = None
            out.append(ln.text)
        return "\n".join(out) + "\n"

    def save(self, path: str | Path) -> None:
        atomic.write_text(path, self.text())

    @classmethod
    def parse(cls, text: str) -> Program:
        """Parse plotterd G-code, or any G-code (then every line is 'setup' or classified
        by the simplest rules: G0 = travel, G1 = draw, no strokes)."""
        header: dict[str, Any] = {}
        lines: list[GLine] = []
        stroke: int | None = None
        in_end = False
        for raw in text.splitlines():
            s = raw.strip()
            if not s:
                continue
            if s.startswith(HEADER_PREFIX):
                header = _parse_header(s[len(HEADER_PREFIX):])
                continue
            if s.startswith(STROKE_PREFIX):
                try:
                    stroke = int(s[len(STROKE_PREFIX):])
                except ValueError as e:
                    raise InputError(f"bad stroke marker {s!r}") from e
                continue
            if s == END_MARK:
                in_end, stroke = True, None
                continue
            cmd = _strip_comment(s)
            if not cmd:
                continue
            prev = lines[-1].kind if lines else "setup"
            lines.append(GLine(cmd, _classify(cmd, stroke, in_end, header, prev), stroke))
        _restore_times(lines, header)
        return cls(lines, header)

    @classmethod
    def load(cls, path: str | Path) -> Program:
        path = Path(path)
        try:
            return cls.parse(path.read_text())
        except FileNotFoundError as e:
            raise InputError(f"{path}: no such file") from e
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot read G-code: {e}") from e


def _parse_header(text: str) -> dict[str, Any]:
    """The JSON header, checked where the parser relies on its shape."""
    try:
        header = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"bad plotterd G-code header: {e}") from e
    if not isinstance(header, dict):
        raise InputError("bad plotterd G-code header: not a JSON object")
    for key in ("pen_up", "pen_down"):
        cmds = header.get(key, [])
        if not isinstance(cmds, list) or not all(isinstance(c, str) for c in cmds):
            raise InputError(f"bad plotterd G-code header: {key} must be a list of commands")
    return header


def _restore_times(lines: list[GLine], header: dict[str, Any]) -> None:
    """Give parsed lines their estimated t_end back from the header's per-stroke times
    (``setup_t_end``, ``stroke_t_end`` written by plotterd.gcode): the lines of a stroke
    share its time span evenly, end lines reach ``estimated_s``. No times: left as None."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    ends = header.get("stroke_t_end")
    if not isinstance(ends, list) or not all(number(t) for t in ends):
        return
    t_setup = header.get("setup_t_end") or 0.0
    total = header.get("estimated_s") or (ends[-1] if ends else t_setup)
    if not (number(t_setup) and number(total)):
        return
    t_setup, total = float(t_setup), float(total)
    counts: dict[int, int] = {}
    for ln in lines:
        if ln.stroke is not None:
            counts[ln.stroke] = counts.get(ln.stroke, 0) + 1
    seen: dict[int, int] = {}
    last = t_setup
    for ln in lines:
        s = ln.stroke
        if s is None:
            ln.t_end = total if ln.kind == "end" else t_setup
            continue
        if not 0 <= s < len(ends):
            return  # times do not match the strokes: leave the rest unknown
        start = t_setup if s == 0 else float(ends[s - 1])
        seen[s] = seen.get(s, 0) + 1
        ln.t_end = max(last, start + (float(ends[s]) - start) * seen[s] / counts[s])
        last = ln.t_end


def _strip_comment(s: str) -> str:
    """Remove ';' and '(...)' comments and surrounding whitespace."""
    out, depth = [], 0
    for ch in s:
        if ch == ";" and depth == 0:
            break
        if ch == "(":
            depth += 1
            continue
        if ch == ")" and depth:
            depth -= 1
            continue
        if depth == 0:
            out.append(ch)
    return "".join(out).strip()


def _classify(
    cmd: str, stroke: int | None, in_end: bool, header: dict[str, Any], prev: str
) -> str:
    if in_end:
        return "end"
    if stroke is None:
        return "setup"
    # pen-up and pen-down blocks may share lines (a dwell): after drawing, it is a pen-up
    if prev in ("draw", "pen_up") and cmd in header.get("pen_up", []):
        return "pen_up"
    if cmd in header.get("pen_down", []):
        return "pen_down"
    if cmd in header.get("pen_up", []):
        return "pen_up"
    word = cmd.split()[0].upper()
    if word in ("G0", "G00"):
        return "travel"
    if word in ("G1", "G01"):
        return "draw"
    return "pen_down"
