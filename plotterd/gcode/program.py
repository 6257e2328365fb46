"""``Program``: G-code lines that know which stroke they belong to.

The G-code stage produces it, the machine stage streams it. Resume-from-stroke, progress
by stroke and "what was drawn against what was meant" all need the stroke of each line.
plotterd's own ``.gcode`` keeps them in short comments that any sender ignores, and every
line it writes fits GRBL's 80 characters:

    ; plotterd gcode 2 (metadata: NAME.gcode.json beside this file)
    ; profile: grbl-servo
    ; firmware: grbl
    ; bounds: 0 0 300 300
    ; ...
    G21                          <- kind "setup", no stroke
    ; stroke 0
    G0 X10.000 Y10.000           <- kind "travel",   stroke 0
    M3 S30                       <- kind "pen_down", stroke 0
    G4 P0.15                     <- kind "pen_down", stroke 0
    G1 X12.000 Y10.500 F3000     <- kind "draw",     stroke 0
    M5                           <- kind "pen_up",   stroke 0
    ; end
    G0 X0 Y0                     <- kind "end"

The full header (pen commands, feeds, bounds, per-stroke times, pens) lives in a sidecar,
``NAME.gcode.json``, written atomically with the G-code and tied to it by the G-code's
SHA-256; without it (or when it does not match) the header is rebuilt from the comment
lines and the lines themselves. Files written before (one ``; plotterd {json}`` line) are
still read.

Any other G-code is parsed with :mod:`plotterd.gcode.interpret` against a profile: every
move bounds-checked, strokes found from the profile's pen commands.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plotterd import atomic
from plotterd.errors import InputError, OutOfBoundsError
from plotterd.gcode.interpret import Interpreter, PenModel, Step, z_range
from plotterd.gcode.tokens import gcode_words, strip_comment

if TYPE_CHECKING:
    from plotterd.gcode.profile import Profile

LINE_KINDS = ("setup", "travel", "pen_down", "draw", "pen_up", "end")
HEADER_PREFIX = "; plotterd "  # version 1: "; plotterd {json}" on one (long) line
MARKER = "; plotterd gcode 2"
STROKE_PREFIX = "; stroke "
END_MARK = "; end"
COMMENT_MAX = 80  # GRBL's line limit: no line plotterd writes is longer
SIDECAR_FORMAT = "plotterd-gcode"
VERSION = 2

# the keys of the short header comments, in order
_COMMENT_KEYS = ("profile", "firmware", "bounds", "drawing", "strokes", "estimated_s",
                 "pen_up", "pen_down")


@dataclass
class GLine:
    text: str  # the command, no comment
    kind: str  # one of LINE_KINDS
    stroke: int | None = None  # stroke index for travel/pen_down/draw/pen_up lines
    t_end: float | None = None  # estimated machine time (s) from program start to this line's end
    source_line: int | None = None  # line number in the parsed file (None: added by plotterd)


def sidecar_path(gcode: str | Path) -> Path:
    """Where the metadata of ``plot.gcode`` lives: ``plot.gcode.json`` beside it."""
    p = Path(gcode)
    return p.with_name(p.name + ".json")


@dataclass
class Program:
    lines: list[GLine]
    header: dict[str, Any] = field(default_factory=dict)
    # header keys written by plotterd.gcode: version, profile, firmware ("grbl" | "marlin" |
    # "klipper"), pen_up (list[str]), pen_down (list[str]), travel_feed (mm/min),
    # bounds ([xmin, ymin, xmax, ymax] mm), estimated_s, strokes (count); setup_t_end and
    # stroke_t_end (estimated time at the end of the setup and of each stroke) let
    # Program.parse give the lines their t_end back. Foreign G-code gets the same keys
    # from its profile, plus "source": "foreign".

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

    def header_lines(self) -> list[str]:
        """The short ``; key: value`` comments that open the file (each <= 80 chars)."""
        return header_comments(self.header)

    def text(self) -> str:
        out = self.header_lines()
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

    def save(self, path: str | Path) -> Path:
        """Write ``path`` and its sidecar ``path.json`` (both atomic; the sidecar first, so
        a crash between the two leaves a sidecar that does not match and is ignored).
        Returns the sidecar's path."""
        path = Path(path)
        meta = sidecar_path(path)
        text = self.text()
        doc = {"format": SIDECAR_FORMAT, "version": VERSION,
               "gcode": path.name, "gcode_sha256": _sha256(text), "header": self.header}
        atomic.write_text(meta, json.dumps(doc, sort_keys=True, indent=1) + "\n")
        atomic.write_text(path, text)
        return meta

    @classmethod
    def parse(cls, text: str, profile: Profile | None = None,
              meta: dict[str, Any] | None = None) -> Program:
        """Parse G-code. plotterd's own (a header line or ``meta``, the sidecar's header)
        keeps its strokes and kinds; any other G-code needs the ``profile`` of the machine
        it is for. Every move is bounds-checked (against ``profile``, else the header's
        bounds): a move outside raises OutOfBoundsError naming the line, what cannot be
        followed (G92, G10, G53, ...) raises InputError."""
        raw = [(i + 1, s.strip()) for i, s in enumerate(text.splitlines())]
        raw = [(n, s) for n, s in raw if s]
        own = meta is not None or bool(raw) and raw[0][1].startswith(HEADER_PREFIX)
        if own:
            return _parse_own(raw, profile, meta)
        if profile is None:
            raise InputError(
                "this G-code was not written by plotterd: name the profile of the machine it "
                "is for (plotterd plot --profile NAME), so that every move can be "
                "bounds-checked and its strokes found")
        return _parse_foreign(raw, profile)

    @classmethod
    def load(cls, path: str | Path, profile: Profile | None = None) -> Program:
        """Read a .gcode file and, when it matches, its sidecar ``path.json``."""
        path = Path(path)
        try:
            data = path.read_bytes()
            text = data.decode()
        except FileNotFoundError as e:
            raise InputError(f"{path}: no such file") from e
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot read G-code: {e}") from e
        meta = _read_sidecar(sidecar_path(path), text)
        try:
            return cls.parse(text, profile=profile, meta=meta)
        except InputError as e:
            raise type(e)(f"{path}: {e}") from e


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_sidecar(meta: Path, text: str) -> dict[str, Any] | None:
    """The sidecar's header if it is there, well formed and made for this very text."""
    try:
        doc = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        return None
    if doc.get("gcode_sha256") != _sha256(text) or not isinstance(doc.get("header"), dict):
        return None  # the G-code was edited or replaced: fall back to parsing it
    return _check_header(doc["header"])


# ---- the short header ----

def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".")
    return str(v)


def header_comments(header: dict[str, Any]) -> list[str]:
    out = [MARKER + " (metadata: NAME.gcode.json beside this file)"]
    values: dict[str, Any] = {
        "profile": header.get("profile"), "firmware": header.get("firmware"),
        "bounds": header.get("bounds"), "drawing": header.get("drawing_bounds"),
        "strokes": header.get("strokes"), "estimated_s": header.get("estimated_s"),
        "pen_up": header.get("pen_up"), "pen_down": header.get("pen_down"),
    }
    for key in _COMMENT_KEYS:
        v = values[key]
        if v is None:
            continue
        if key in ("bounds", "drawing"):
            v = " ".join(_fmt(float(b)) for b in v)
        elif key in ("pen_up", "pen_down"):
            if not v:
                continue
            v = " | ".join(str(c) for c in v)
        line = f"; {key}: {_fmt(v)}"
        if len(line) <= COMMENT_MAX and "\n" not in line:
            out.append(line)  # a value too long for one line stays in the sidecar only
    return out


def _header_from_comments(comments: list[str]) -> dict[str, Any]:
    header: dict[str, Any] = {"version": VERSION}
    for c in comments:
        key, sep, value = c[1:].strip().partition(":")
        key, value = key.strip(), value.strip()
        if not sep or key not in _COMMENT_KEYS:
            continue
        try:
            if key in ("bounds", "drawing"):
                nums = [float(v) for v in value.split()]
                if len(nums) == 4:
                    header["bounds" if key == "bounds" else "drawing_bounds"] = nums
            elif key == "strokes":
                header[key] = int(value)
            elif key == "estimated_s":
                header[key] = float(value)
            elif key in ("pen_up", "pen_down"):
                header[key] = [p.strip() for p in value.split("|") if p.strip()]
            else:
                header[key] = value
        except ValueError as e:
            raise InputError(f"bad plotterd G-code header line {c!r}") from e
    return header


def _parse_header(text: str) -> dict[str, Any]:
    """The version-1 JSON header, checked where the parser relies on its shape."""
    try:
        header = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"bad plotterd G-code header: {e}") from e
    return _check_header(header)


def _check_header(header: Any) -> dict[str, Any]:
    if not isinstance(header, dict):
        raise InputError("bad plotterd G-code header: not a JSON object")
    for key in ("pen_up", "pen_down"):
        cmds = header.get(key, [])
        if not isinstance(cmds, list) or not all(isinstance(c, str) for c in cmds):
            raise InputError(f"bad plotterd G-code header: {key} must be a list of commands")
    return header


# ---- plotterd's own files ----

def _parse_own(raw: list[tuple[int, str]], profile: Profile | None,
               meta: dict[str, Any] | None) -> Program:
    header: dict[str, Any] = dict(meta) if meta is not None else {}
    comments: list[str] = []
    cmds: list[tuple[int, str, int | None, bool]] = []  # line no, command, stroke, in end
    stroke: int | None = None
    in_end = False
    for n, s in raw:
        if s.startswith(HEADER_PREFIX) and not s.startswith(MARKER):
            if meta is None:
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
        if s.startswith(";") and not cmds:
            comments.append(s)
            continue
        cmd = strip_comment(s)
        if cmd:
            cmds.append((n, cmd, stroke, in_end))
    if meta is None and not header:
        header = _header_from_comments(comments)
    lines = _classify_own(cmds)
    for key, kind in (("pen_down", "pen_down"), ("pen_up", "pen_up")):
        if key not in header:  # from the structure: stroke 0 has no pen change
            header[key] = [ln.text for ln in lines if ln.stroke == 0 and ln.kind == kind]
    if profile is not None:
        _check_header_bounds(raw, header, profile)
    _check_moves(lines, header, profile)
    _restore_times(lines, header)
    return Program(lines, header)


def _check_header_bounds(raw: list[tuple[int, str]], header: dict[str, Any],
                         profile: Profile) -> None:
    """A file is plotted on a machine only if it was written for bounds that fit it: the
    header must say which (``; bounds:``), and they must lie inside the profile's."""
    n = next((n for n, s in raw if s.startswith("; bounds:")), None)
    b = header.get("bounds")
    if not (isinstance(b, list) and len(b) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)):
        raise InputError(f"G-code line {raw[0][0] if raw else 1}: the plotterd header has no "
                         f"'; bounds:' line: what machine the file was written for is not "
                         f"known, so it is refused for profile {profile.name!r}")
    x0, y0, x1, y1 = (float(v) for v in b)
    px0, py0, px1, py1 = profile.bounds
    if x0 < px0 - 1e-9 or y0 < py0 - 1e-9 or x1 > px1 + 1e-9 or y1 > py1 + 1e-9:
        where = f"G-code line {n}" if n is not None else "the sidecar's header"
        raise OutOfBoundsError(
            f"{where}: the file was written for bounds X {x0:g}..{x1:g}, Y {y0:g}..{y1:g} "
            f"mm, larger than profile {profile.name!r} (X {px0:g}..{px1:g}, Y {py0:g}..{py1:g}"
            " mm): refused. Nothing was sent.")


def _xy_motion(cmd: str) -> float | None:
    """The motion word (0..3) of a line that moves X or Y, else None."""
    words = gcode_words(cmd)
    axes = {k for k, _ in words}
    if "X" not in axes and "Y" not in axes:
        return None
    for k, v in words:
        if k == "G" and v in (0.0, 1.0, 2.0, 3.0):
            return v
    return None


def _classify_own(cmds: list[tuple[int, str, int | None, bool]]) -> list[GLine]:
    """Kinds from the markers and each stroke's shape: travel moves (G0), then pen-down
    commands (and a pen change), the drawing moves (G1..G3), then pen-up commands."""
    lines: list[GLine] = []
    k = 0
    while k < len(cmds):
        n, cmd, stroke, in_end = cmds[k]
        if stroke is None:
            lines.append(GLine(cmd, "end" if in_end else "setup", None, source_line=n))
            k += 1
            continue
        j = k
        while j < len(cmds) and cmds[j][2] == stroke and not cmds[j][3]:
            j += 1
        group = cmds[k:j]
        motions = [_xy_motion(c) for _, c, _, _ in group]
        draws = [i for i, m in enumerate(motions) if m in (1.0, 2.0, 3.0)]
        first_draw = draws[0] if draws else len(group)
        last_draw = draws[-1] if draws else len(group) - 1
        travel_end = 0
        while travel_end < first_draw and motions[travel_end] == 0.0:
            travel_end += 1
        for i, (ln_no, c, _, _) in enumerate(group):
            if i < travel_end:
                kind = "travel"
            elif i < first_draw:
                kind = "pen_down"
            elif i <= last_draw:
                kind = "draw"
            else:
                kind = "pen_up"
            lines.append(GLine(c, kind, stroke, source_line=ln_no))
        k = j
    return lines


def _check_moves(lines: list[GLine], header: dict[str, Any], profile: Profile | None) -> None:
    """Run every line through the interpreter: bounds, and what cannot be followed."""
    if profile is not None:
        bounds, machine = profile.bounds, f"profile {profile.name!r}"
        firmware = profile.firmware
        z = z_range(profile.pen_up_lines(), profile.pen_down_lines())
    else:
        b = header.get("bounds")
        if not (isinstance(b, list) and len(b) == 4
                and all(isinstance(v, (int, float)) for v in b)):
            return  # nothing to check against (a hand-made header)
        bounds = tuple(float(v) for v in b)
        machine = f"the bounds it was written for ({header.get('profile', 'no profile')})"
        firmware = str(header.get("firmware", "grbl"))
        z = z_range(header.get("pen_up", []), header.get("pen_down", []))
    interp = Interpreter(bounds, firmware, PenModel("none"), machine, z_range=z)
    for i, ln in enumerate(lines):
        interp.run(ln.source_line or i + 1, ln.text)


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


# ---- foreign G-code ----

@dataclass
class _Run:
    n: int
    cmd: str
    step: Step
    before: dict[str, Any]  # the modal state before the line (for resume anchors)


def _parse_foreign(raw: list[tuple[int, str]], profile: Profile) -> Program:
    from plotterd.gcode.foreign import build_foreign

    pen = PenModel.from_commands(profile.pen.up_commands, profile.pen.down_commands)
    interp = Interpreter(profile.bounds, profile.firmware, pen, f"profile {profile.name!r}",
                         profile.travel_feed, profile.acceleration,
                         z_range(profile.pen_up_lines(), profile.pen_down_lines()))
    runs: list[_Run] = []
    for n, s in raw:
        cmd = strip_comment(s)
        if not cmd or cmd == "%":  # a tape delimiter: nothing to send
            continue
        st = interp.state
        before = {"x": st.x, "y": st.y, "relative": st.relative, "inches": st.inches,
                  "feed": st.feed, "motion": st.motion, "s": st.s}
        runs.append(_Run(n, cmd, interp.run(n, cmd), before))
    lines, info = build_foreign(runs, profile, pen)
    header: dict[str, Any] = {
        "version": VERSION, "source": "foreign", "profile": profile.name,
        "firmware": profile.firmware, "units": "mm",
        "pen_up": profile.pen_up_lines(), "pen_down": profile.pen_down_lines(),
        "pen_change": [], "dwell_unit": profile.dwell_unit,
        "travel_feed": profile.travel_feed, "draw_feed": profile.draw_feed,
        "acceleration": profile.acceleration,
        "bounds": [profile.x_min, profile.y_min, profile.x_max, profile.y_max],
        "pens": [{"layer": 1, "name": "pen 1", "color": "#000000", "first_stroke": 0,
                  "strokes": info["strokes"]}] if info["strokes"] else [],
        "moves_bounds": ([float(v) for v in (*interp.lo, *interp.hi)]
                         if interp.lo[0] <= interp.hi[0] else None),
        **info,
    }
    return Program(lines, header)
