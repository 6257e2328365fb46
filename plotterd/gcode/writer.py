"""vpype Document (page px) -> :class:`Program`: machine coordinates, bounds check, G-code.

Our own writer rather than vpype-gcode's: its built-in profiles never lift the pen and it
mirrors offsets wrongly (vpype-gcode #25, #37). Safety rules, all checked here:

- every coordinate is mapped to the machine and checked against the profile's bounds
  BEFORE any line is produced; a drawing that does not fit raises OutOfBoundsError saying
  by how much it overflows on which side;
- start/end blocks that move X/Y are checked the same way;
- the pen is lifted before anything moves (setup), before every travel (each stroke ends
  with a pen-up) and at the end; feeds are > 0 (the profile refuses anything else);
- no line is longer than the profile's max_line_length: a long move is written with fewer
  decimals (re-checked against the bounds), and refused if that is not enough.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import vpype as vp

from plotterd.errors import ConfigError, OutOfBoundsError
from plotterd.gcode.interpret import overflow
from plotterd.gcode.motion import polyline_times, rest_to_rest
from plotterd.gcode.profile import Profile, _num, xy_target
from plotterd.gcode.program import END_MARK, STROKE_PREFIX, VERSION, GLine, Program
from plotterd.vector.layout import PX_PER_MM


@dataclass
class Layer:
    id: int
    name: str
    color: str
    paths: list[np.ndarray]  # (m, 2) machine mm
    width_mm: float | None = None  # the pen's nib (vpype's pen width), for previews/renders


def _pen_width_mm(layer: vp.LineCollection) -> float | None:
    w = layer.property(vp.METADATA_FIELD_PEN_WIDTH)
    return round(float(w) / PX_PER_MM, 4) if w else None


def to_machine(xy_mm: np.ndarray, paper_mm: tuple[float, float], profile: Profile) -> np.ndarray:
    """Page mm (origin top-left, y down) -> machine mm.

    The paper corner ``profile.origin`` sits at ``profile.offset`` on the bed; coordinates
    are measured from it along the paper edges, pointing into the paper, and an inverted
    axis counts the other way (machines whose axes run negative from home).
    """
    w, h = paper_mm
    u, v = xy_mm[..., 0], xy_mm[..., 1]
    a = w - u if profile.origin.endswith("right") else u
    b = h - v if profile.origin.startswith("bottom") else v
    sx = -1.0 if profile.invert_x else 1.0
    sy = -1.0 if profile.invert_y else 1.0
    return np.stack([profile.offset_x + sx * a, profile.offset_y + sy * b], axis=-1)


def _moves_in(lines: tuple[str, ...] | list[str]) -> list[tuple[float | None, float | None]]:
    """X/Y targets of G0/G1 lines in a start/end block (absolute mode)."""
    return [t for t in map(xy_target, lines) if t is not None]


def check_bounds(points: np.ndarray, profile: Profile, what: str = "the drawing") -> None:
    """Raise OutOfBoundsError, saying by how much, if any (N, 2) point is outside."""
    if len(points) == 0:
        return
    if not np.isfinite(points).all():  # NaN compares False with every bound
        raise OutOfBoundsError(f"{what} has coordinates that are not finite numbers")
    lo = points.min(axis=0)
    hi = points.max(axis=0)
    over = overflow(lo, hi, profile.bounds)
    if over:
        raise OutOfBoundsError(
            f"{what} does not fit profile {profile.name!r}: it overflows "
            f"{', '.join(over)} (it spans X {lo[0]:.2f}..{hi[0]:.2f}, Y {lo[1]:.2f}..{hi[1]:.2f};"
            f" the machine X {profile.x_min:g}..{profile.x_max:g}, Y {profile.y_min:g}.."
            f"{profile.y_max:g} mm). Use smaller paper or larger margins, or fix the profile's "
            "bounds or paper offset."
        )


def _layers(document: vp.Document, profile: Profile) -> tuple[list[Layer], tuple[float, float]]:
    if document.page_size:
        paper = (document.page_size[0] / PX_PER_MM, document.page_size[1] / PX_PER_MM)
    else:  # no page: the drawing's own bounding box from the origin
        b = document.bounds() or (0, 0, 0, 0)
        paper = (b[2] / PX_PER_MM, b[3] / PX_PER_MM)
    layers = []
    raw: list[np.ndarray] = []
    for lid in sorted(document.layers):
        lc = document.layers[lid]
        color = lc.property(vp.METADATA_FIELD_COLOR)
        name = lc.property(vp.METADATA_FIELD_NAME)
        lines = [np.repeat(ln, 2) if len(ln) == 1 else ln for ln in lc.lines if len(ln)]
        raw.extend(lines)
        layers.append(
            Layer(
                lid,
                str(name) if name else f"pen {lid}",
                color.as_rgb_hex() if color is not None else "#000000",
                [np.zeros((len(ln), 2)) for ln in lines],  # filled in below
                _pen_width_mm(lc),
            )
        )
    if raw:  # map all vertices at once, then hand each path its slice
        allc = np.concatenate(raw)
        xy = np.column_stack([allc.real, allc.imag]) / PX_PER_MM
        m = np.round(to_machine(xy, paper, profile), profile.decimals)
        parts = np.split(m, np.cumsum([len(ln) for ln in raw])[:-1])
        k = 0
        for layer in layers:
            layer.paths = parts[k : k + len(layer.paths)]
            k += len(layer.paths)
    return layers, paper


def _fmt_many(values: np.ndarray, decimals: int) -> list[str]:
    """Format many coordinates like ``_num`` (no trailing zeros), in bulk for speed."""
    out = [f"{v:.{decimals}f}" for v in values.tolist()]
    if decimals > 0:
        out = [t.rstrip("0").rstrip(".") for t in out]
    return ["0" if t in ("-0", "") else t for t in out]


class _Emitter:
    def __init__(self, profile: Profile):
        self.p = profile
        self.lines: list[GLine] = []
        self.t = 0.0
        self.decimals = profile.decimals
        self.f_draw = _num(profile.draw_feed, 0)
        self.f_travel = _num(profile.travel_feed, 0)

    def add(self, text: str, kind: str, stroke: int | None, dt: float = 0.0) -> None:
        if len(text) > self.p.max_line_length:
            raise ConfigError(
                "gcode.max_line_length",
                f"{text!r} is longer than {self.p.max_line_length} characters",
                self.p.source,
            )
        self.t += dt
        self.lines.append(GLine(text, kind, stroke, self.t))

    def move(self, word: str, x: float, y: float, feed: str, kind: str, stroke: int | None,
             dt: float) -> None:
        d = self.decimals
        text = f"{word} X{_num(x, d)} Y{_num(y, d)} F{feed}"
        while len(text) > self.p.max_line_length and d > 0:
            # shorter numbers; the rounded point must still be inside the bounds
            d -= 1
            rx, ry = round(x, d), round(y, d)
            check_bounds(np.array([[rx, ry]]), self.p, f"move {word} X{rx} Y{ry}")
            text = f"{word} X{_num(rx, d)} Y{_num(ry, d)} F{feed}"
        self.add(text, kind, stroke, dt)


@dataclass
class _PenMoves:
    """The profile's pen up/down lines and how long each takes (servo move, dwell)."""

    up: list[str]
    down: list[str]
    up_time: list[float]
    down_time: list[float]

    @classmethod
    def of(cls, p: Profile) -> _PenMoves:
        up_time = [p.pen.up_move_s] * len(p.pen.up_commands) + (
            [p.pen.up_dwell_s] if p.pen.up_dwell_s > 0 else []
        )
        down_time = [p.pen.down_move_s] * len(p.pen.down_commands) + (
            [p.pen.down_dwell_s] if p.pen.down_dwell_s > 0 else []
        )
        return cls(p.pen_up_lines(), p.pen_down_lines(), up_time, down_time)

    def emit_up(self, em: _Emitter, kind: str, stroke: int | None) -> None:
        for c, dt in zip(self.up, self.up_time, strict=True):
            em.add(c, kind, stroke, dt)

    def emit_down(self, em: _Emitter, stroke: int) -> None:
        for c, dt in zip(self.down, self.down_time, strict=True):
            em.add(c, "pen_down", stroke, dt)


def _check_program_bounds(allpts: list[np.ndarray], profile: Profile) -> None:
    """The drawing and the start/end blocks' moves, before any line is produced."""
    if allpts:
        check_bounds(np.concatenate(allpts), profile)
    for key, block in (("start", profile.start), ("end", profile.end)):
        xs = [(x, y) for x, y in _moves_in(block)]
        if xs:
            # a block move only names the axes it moves; the other stays where it was (the
            # bounds check takes the lower bound as a stand-in for a missing axis)
            pts = np.array([[profile.x_min if x is None else x, profile.y_min if y is None else y]
                            for x, y in xs])
            check_bounds(pts, profile, f"the profile's {key} block")


def _emit_setup(em: _Emitter, p: Profile, pen: _PenMoves) -> None:
    """Units, absolute, pen up before anything moves, then the profile's start block."""
    for c in p.setup_lines():
        em.add(c, "setup", None)
    pen.emit_up(em, "setup", None)
    for c in p.start:
        em.add(c, "setup", None)


def _travels(allpts: list[np.ndarray], p: Profile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each path's last point, and the length and time of the travel from where the pen is
    to each path's first point."""
    firsts = np.array([pth[0] for pth in allpts]) if allpts else np.zeros((0, 2))
    lasts = np.array([pth[-1] for pth in allpts]) if allpts else np.zeros((0, 2))
    here = _start_position(p)
    prev = np.vstack([[here], lasts[:-1]]) if allpts else np.zeros((0, 2))
    travel_len = np.hypot(*(firsts - prev).T) if allpts else np.zeros(0)
    travel_t = rest_to_rest(travel_len, p.travel_feed, p.acceleration)
    return lasts, travel_len, travel_t


def _emit_pen_change(em: _Emitter, p: Profile, layer: Layer, stroke: int) -> None:
    for c in p.pen_change:
        # no comment characters: they would cut the line when parsed back
        name = re.sub(r"[;()]", "", layer.name)
        em.add(c.replace("{name}", name).replace("{color}", layer.color), "pen_down", stroke)


def _emit_draws(em: _Emitter, path: np.ndarray, stroke: int, draw_dt: np.ndarray) -> None:
    """The G1 moves along one path (pen down), formatted in bulk."""
    x0, y0 = path[0]
    px, py = x0, y0
    emitted = False
    sx, sy = _fmt_many(path[1:, 0], em.decimals), _fmt_many(path[1:, 1], em.decimals)
    limit = em.p.max_line_length
    for (x, y), tx, ty, dt in zip(path[1:].tolist(), sx, sy, draw_dt.tolist(), strict=True):
        if x == px and y == py:  # vertices that rounding merged: no move
            em.t += dt
            continue
        text = f"G1 X{tx} Y{ty} F{em.f_draw}"
        if len(text) > limit:
            em.move("G1", x, y, em.f_draw, "draw", stroke, dt)
        else:
            em.t += dt
            em.lines.append(GLine(text, "draw", stroke, em.t))
        px, py, emitted = x, y, True
    if not emitted:  # a dot: one zero-length draw between pen down and up
        em.move("G1", x0, y0, em.f_draw, "draw", stroke, 0.0)


def _emit_strokes(em: _Emitter, p: Profile, pen: _PenMoves, layers: list[Layer],
                  travel_t: np.ndarray, draw_times: list[np.ndarray],
                  ) -> tuple[list[float], int, list[dict[str, Any]]]:
    """Every path, layer by layer: travel, (pen change,) pen down, draws, pen up.
    Returns each stroke's end time, the stroke count and the pens' header entries."""
    stroke_t: list[float] = []
    stroke = 0
    pens_info: list[dict[str, Any]] = []
    for li, layer in enumerate(layers):
        if not layer.paths:
            continue
        pens_info.append({"layer": layer.id, "name": layer.name, "color": layer.color,
                          "width_mm": layer.width_mm,
                          "first_stroke": stroke, "strokes": len(layer.paths)})
        for k, path in enumerate(layer.paths):
            x0, y0 = path[0]
            em.move("G0", x0, y0, em.f_travel, "travel", stroke, float(travel_t[stroke]))
            if k == 0 and li > 0 and p.pen_change and len(pens_info) > 1:
                _emit_pen_change(em, p, layer, stroke)
            pen.emit_down(em, stroke)
            _emit_draws(em, path, stroke, draw_times[stroke])
            pen.emit_up(em, "pen_up", stroke)
            stroke_t.append(em.t)
            stroke += 1
    return stroke_t, stroke, pens_info


def _emit_end(em: _Emitter, p: Profile, pen: _PenMoves, here: np.ndarray) -> float:
    """Pen up once more (also marks the end block), then the profile's end block; returns
    the length the end block travels."""
    pen.emit_up(em, "end", None)
    end_travel = 0.0
    for c in p.end:
        dt = 0.0
        for x, y in _moves_in([c]):
            target = np.array([here[0] if x is None else x, here[1] if y is None else y])
            dist = float(np.hypot(*(target - here)))
            end_travel += dist
            dt = float(rest_to_rest(np.array(dist), p.travel_feed, p.acceleration))
            here = target
        em.add(c, "end", None, dt)
    return end_travel


def _draw_mm(allpts: list[np.ndarray], all_arr: np.ndarray) -> float:
    """Segment lengths over all paths, minus the links between paths."""
    if not allpts:
        return 0.0
    seg = np.hypot(*np.diff(all_arr, axis=0).T)
    links = np.cumsum([len(pth) for pth in allpts])[:-1] - 1
    return float(seg.sum() - seg[links].sum())


def write_program(document: vp.Document, profile: Profile) -> Program:
    """Turn a page document (vpype px, layers in plotting order) into a Program."""
    layers, paper = _layers(document, profile)
    allpts = [p for layer in layers for p in layer.paths]
    _check_program_bounds(allpts, profile)

    p = profile
    em = _Emitter(p)
    pen = _PenMoves.of(p)
    _emit_setup(em, p, pen)
    setup_t = em.t

    draw_times = polyline_times(allpts, p.draw_feed, p.acceleration, p.junction_deviation)
    lasts, travel_len, travel_t = _travels(allpts, p)
    stroke_t, strokes, pens_info = _emit_strokes(em, p, pen, layers, travel_t, draw_times)
    end_travel = _emit_end(em, p, pen, lasts[-1] if allpts else _start_position(p))

    all_arr = np.concatenate(allpts) if allpts else np.zeros((0, 2))
    header: dict[str, Any] = {
        "version": VERSION,
        "profile": p.name,
        "firmware": p.firmware,
        "units": "mm",
        "pen_up": pen.up,
        "pen_down": pen.down,
        "pen_change": list(p.pen_change),
        "dwell_unit": p.dwell_unit,
        "travel_feed": p.travel_feed,
        "draw_feed": p.draw_feed,
        "acceleration": p.acceleration,
        "bounds": [p.x_min, p.y_min, p.x_max, p.y_max],
        "drawing_bounds": (
            [float(v) for v in (*all_arr.min(axis=0), *all_arr.max(axis=0))] if len(all_arr)
            else None
        ),
        "paper_mm": [round(paper[0], 3), round(paper[1], 3)],
        "estimated_s": round(em.t, 3),
        "setup_t_end": round(setup_t, 3),
        "stroke_t_end": [round(t, 2) for t in stroke_t],
        "draw_mm": round(_draw_mm(allpts, all_arr), 3),
        "travel_mm": round(float(travel_len.sum()) + end_travel, 3),
        "strokes": strokes,
        "pens": pens_info,
    }
    return Program(em.lines, header)


def _start_position(p: Profile) -> np.ndarray:
    """Where the pen is assumed to be when the program starts: the last X/Y the start block
    moves to, else the machine origin (0, 0) clamped into the bounds."""
    x = min(max(0.0, p.x_min), p.x_max)
    y = min(max(0.0, p.y_min), p.y_max)
    for mx, my in _moves_in(p.start):
        x = x if mx is None else mx
        y = y if my is None else my
    return np.array([x, y])


def program_stats(program: Program) -> dict[str, Any]:
    """Figures about the emitted program (machine mm; lengths from the writer's header)."""
    h = program.header
    return {
        "profile": h.get("profile"),
        "firmware": h.get("firmware"),
        "estimated_s": h.get("estimated_s"),
        "strokes": h.get("strokes"),
        "machine_draw_mm": h.get("draw_mm"),
        "machine_travel_mm": h.get("travel_mm"),
        "gcode_lines": len(program.lines),
        "gcode_bytes": _text_bytes(program),
        "machine_bbox": h.get("drawing_bounds"),
    }


def _text_bytes(program: Program) -> int:
    """len(program.text()) without building the text: header comments, lines, stroke
    markers, end."""
    n = sum(len(c) + 1 for c in program.header_lines())
    current = None
    ended = False
    for ln in program.lines:
        if ln.stroke is not None and ln.stroke != current:
            n += len(STROKE_PREFIX) + len(str(ln.stroke)) + 1
            current = ln.stroke
        if ln.kind == "end" and not ended:
            n += len(END_MARK) + 1
            ended = True
            current = None
        n += len(ln.text) + 1
    return n
