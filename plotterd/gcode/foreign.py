"""Strokes for G-code plotterd did not write: kinds, stroke indices and resume anchors.

A stroke is a pen-down run (the pen state comes from the profile's pen commands, see
:class:`plotterd.gcode.interpret.PenModel`). Stroke k owns the pen-up moves that lead to
it, its pen-down line, its drawing and its pen-up line with the dwell after it, so that
``stream(start_stroke=k)`` (setup lines, a pen lift, then the lines from stroke k on)
travels to the stroke and draws it.

That restart only lands right when stroke k's lines do not lean on state the file set
earlier: a relative (G91) travel, a feed (F) given once at the top, a spindle value (S)
that a bare ``M3`` reuses, or modal ``X.. Y..`` lines. Where a stroke leans on any of
these, a short *anchor* is put before its first line: an absolute ``G0`` to where the
head is at that point in the file, with the modal state restored (``G90``/``G91``, ``F``,
``S``, ``G1``). Streamed from the top, an anchor is a no-op (the head is already there);
streamed from stroke k, it puts the machine where the file expects it. Each anchor line
is its own block (Marlin runs one command per line).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plotterd.gcode.interpret import MM_PER_INCH, PenModel
from plotterd.gcode.program import GLine

if TYPE_CHECKING:
    from plotterd.gcode.profile import Profile
    from plotterd.gcode.program import _Run


def _runs_of_pen(runs: list[_Run]) -> list[tuple[int, int]]:
    """(first pen-down line, pen-up line) per stroke; the pen-up index is len(runs) when the
    file ends with the pen down."""
    out = []
    down_at: int | None = None
    for i, r in enumerate(runs):
        down = r.step.pen_after is True
        if down and down_at is None:
            down_at = i
        elif not down and down_at is not None:
            out.append((down_at, i))
            down_at = None
    if down_at is not None:
        out.append((down_at, len(runs)))
    return out


def _spans(runs: list[_Run], pen_runs: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """(start, pen-down, pen-up, end) line indices per stroke, end inclusive."""
    spans = []
    for k, (d, u) in enumerate(pen_runs):
        if k == 0:
            moved = [i for i in range(d) if runs[i].step.moved]
            start = moved[0] if moved else d
        else:
            start = spans[-1][3] + 1
        end = min(u, len(runs) - 1)
        nxt = pen_runs[k + 1][0] if k + 1 < len(pen_runs) else len(runs)
        # the dwell after the pen-up belongs to it: up to the next move or pen-down
        while end + 1 < nxt and not runs[end + 1].step.moved:
            end += 1
        spans.append((start, d, u, end))
    return spans


def _anchor(runs: list[_Run], start: int, down: int, end: int, profile: Profile,
            pen: PenModel) -> list[str]:
    """The lines that make stroke ``start..end`` restartable, or [] if it needs none."""
    before = runs[start].before
    rel = bool(before["relative"])
    seg = runs[start:end + 1]
    has_abs = any(r.step.xy_absolute for r in runs[start:down + 1])
    feed_needed = False
    for r in seg:
        if r.step.sets_feed:
            break
        if r.step.feed_move:
            feed_needed = before["feed"] is not None
            break
    s_needed = pen.kind == "spindle" and before["s"] is not None and not any(
        r.step.sets_s for r in runs[start:down + 1])
    bare_needed = False
    for r in seg:
        if r.step.moved:
            bare_needed = r.step.bare
            break
    if not (rel or not has_abs or feed_needed or s_needed
            or (bare_needed and before["motion"] != 0.0)):
        return []
    scale = 1 / MM_PER_INCH if before["inches"] else 1.0
    d = profile.decimals + (1 if before["inches"] else 0)
    x, y = before["x"] * scale, before["y"] * scale
    move = f"G0 X{x:.{d}f} Y{y:.{d}f}"
    if before["feed"] is not None:
        move += f" F{before['feed'] * scale:.{d}f}".rstrip("0").rstrip(".")
    out = []
    if before["inches"]:
        out.append("G20")
    if rel:
        out.append("G90")
    out.append(move)
    if rel:
        out.append("G91")
    if before["motion"] == 1.0 and bare_needed:
        out.append("G1")  # modal X.. Y.. lines after the anchor's G0 draw again
    if s_needed and profile.firmware == "grbl":
        out.append(f"S{before['s']:g}")
    return out


def build_foreign(runs: list[_Run], profile: Profile, pen: PenModel
                  ) -> tuple[list[GLine], dict[str, Any]]:
    """Lines with kinds, strokes, times and anchors; and header figures."""
    spans = _spans(runs, _runs_of_pen(runs))
    kinds: list[tuple[str, int | None]] = [("setup", None)] * len(runs)
    anchors: dict[int, list[str]] = {}
    for k, (start, d, u, end) in enumerate(spans):
        drew = False
        for i in range(start, end + 1):
            if i < d:
                kind = "travel"
            elif i == d:
                kind = "pen_down"
            elif i < u:
                drew = drew or runs[i].step.moved
                kind = "draw" if drew else "pen_down"
            else:
                kind = "pen_up"
            kinds[i] = (kind, k)
        if k > 0:
            anchors[start] = _anchor(runs, start, d, end, profile, pen)
    last_end = spans[-1][3] if spans else -1
    for i in range(last_end + 1, len(runs)):
        if spans:
            kinds[i] = ("end", None)
    lines: list[GLine] = []
    t = 0.0
    lo = [float("inf")] * 2
    hi = [float("-inf")] * 2
    stroke_t: list[float] = []
    setup_t = 0.0
    for i, r in enumerate(runs):
        kind, stroke = kinds[i]
        for a in anchors.get(i, []):
            lines.append(GLine(a, "travel", stroke, t))
        t += r.step.seconds
        lines.append(GLine(r.cmd, kind, stroke, t, source_line=r.n))
        if kind == "setup":
            setup_t = t
        if r.step.pen_before is True and r.step.pen_after is True:
            for x, y in [(r.before["x"], r.before["y"]), *r.step.points]:
                lo = [min(lo[0], x), min(lo[1], y)]
                hi = [max(hi[0], x), max(hi[1], y)]
        if stroke is not None and (i + 1 == len(runs) or kinds[i + 1][1] != stroke):
            stroke_t.append(round(t, 2))
    info: dict[str, Any] = {
        "strokes": len(spans),
        "drawing_bounds": [*lo, *hi] if lo[0] <= hi[0] else None,
        "estimated_s": round(t, 3),
        "setup_t_end": round(setup_t, 3),
        "stroke_t_end": stroke_t,
        "anchors": sum(1 for v in anchors.values() if v),
    }
    if not spans and any(r.step.feed_move for r in runs):
        info["warning"] = (f"no pen-down found: the file's pen commands are not profile "
                           f"{profile.name!r}'s ({profile.pen.summary})")
    return lines, info
