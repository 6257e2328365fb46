"""Strokes or SVG -> a vpype Document on the page, one layer per pen, in plotting order."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import vpype as vp
from scipy.spatial import cKDTree

from plotterd.draw.strokes import Strokes
from plotterd.errors import ConfigError, InputError
from plotterd.progress import Progress, ProgressCallback
from plotterd.vector import curves, ordering
from plotterd.vector.layout import PX_PER_MM, Placement, clip_lines, paper_size_px, place
from plotterd.vector.pens import Pen, assign_pens, ink_rgb, parse_color
from plotterd.vector.sequences import SUFFIXES as SEQUENCE_SUFFIXES
from plotterd.vector.sequences import SequenceSource, sequence_document


@dataclass
class PageSpec:
    """Paper and layout."""

    paper: str = "a4"  # a0-a6, letter, legal, executive, tabloid, or "WxH<unit>" (300x200mm)
    orientation: str = "auto"  # portrait | landscape | auto (match the drawing's aspect)
    margin_mm: float = 10.0
    fit: bool = True  # scale to fill the drawable area, preserving aspect
    center: bool = True  # centre in the drawable area (else its top-left corner)
    # without fit: page px per source unit multiplier. Strokes: 1 canvas pixel = 1 CSS px
    # (1/96 in) times this; SVG: its own size times this.
    scale: float = 1.0
    # strokes optimised for a size on paper (their metadata's page_mm: 1 px = 1 nib) are
    # drawn at exactly that size, centred, whatever fit and scale say: the tone was fitted
    # for that pen at that size
    true_size: bool = True


@dataclass
class VectorOptions:
    tolerance_mm: float = 0.05  # max deviation: half for curve sampling, half for simplifying
    min_length_mm: float = 0.2  # drop shorter lines (after clipping); dots are exempt
    min_intensity: float = 0.05  # drop strokes whose grey (ink strength) is below this
    min_width_px: float = 0.05  # drop strokes thinner than this (width learned to ~0)
    merge_tolerance_mm: float = 0.05  # join lines whose ends are this close (0: no merge)
    two_opt: bool = False  # 2-opt after the greedy ordering (slower, less travel)
    flip: bool = True  # lines may be drawn in reverse
    simplify: bool = True
    pens: list[Pen] = field(default_factory=lambda: [Pen()])  # strokes go to the nearest colour

    def check(self) -> None:
        for key in ("tolerance_mm", "min_length_mm", "min_intensity", "min_width_px",
                    "merge_tolerance_mm"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"vector.{key}", f"must be a number >= 0, got {v!r}")
        if self.tolerance_mm <= 0:
            raise ConfigError("vector.tolerance_mm", "must be > 0")
        if not self.pens:
            raise ConfigError("vector.pens", "needs at least one pen")
        for i, p in enumerate(self.pens):
            p.rgb(f"vector.pens[{i}].color")
            if not (isinstance(p.width_mm, (int, float)) and p.width_mm > 0):
                raise ConfigError(f"vector.pens[{i}].width_mm", f"must be > 0, got {p.width_mm!r}")


@dataclass
class VectorResult:
    document: vp.Document  # page px (CSS px, 1/96 in), origin top-left, y down
    stats: dict[str, Any]


def _lengths(lines: list[np.ndarray]) -> np.ndarray:
    """Length of every (complex) line, in one pass over the concatenated vertices."""
    if not lines:
        return np.zeros(0)
    counts = np.array([len(ln) for ln in lines])
    allc = np.concatenate(lines)
    seg = np.abs(np.diff(allc))
    ends = np.cumsum(counts) - 1  # index of each line's last vertex
    cum = np.r_[0.0, np.cumsum(seg)]
    starts = ends - counts + 1
    return cum[ends] - cum[starts]


def _is_dot(line: np.ndarray) -> bool:
    return len(line) == 2 and line[0] == line[1]


def _to_complex(xy: np.ndarray) -> np.ndarray:
    return xy[:, 0] + 1j * xy[:, 1]


def _simplify(lines: list[np.ndarray], tol_px: float) -> list[np.ndarray]:
    """shapely simplify, as vpype's linesimplify (preserve_topology=False: a self-crossing
    line would otherwise not be simplified); vectorised over all lines, dots untouched."""
    idx = [i for i, ln in enumerate(lines) if len(ln) > 2]
    if not idx:
        return lines
    coords = np.concatenate([lines[i] for i in idx])
    which = np.repeat(np.arange(len(idx)), [len(lines[i]) for i in idx])
    geoms = shapely.linestrings(coords.real, coords.imag, indices=which)
    simple = shapely.simplify(geoms, tol_px, preserve_topology=False)
    out = list(lines)
    for i, g in zip(idx, simple, strict=True):
        c = shapely.get_coordinates(g)
        if len(c) >= 2:
            out[i] = c[:, 0] + 1j * c[:, 1]
    return out


def _merge(lines: list[np.ndarray], tol_px: float, flip: bool) -> list[np.ndarray]:
    """vpype's LineCollection.merge, run only on lines with an end near another line's end:
    the rest can never merge (merged lines keep original ends), and vpype's merge walks every
    line through its index, which dominates the time for many short strokes."""
    if tol_px <= 0 or len(lines) < 2:
        return lines
    n = len(lines)
    ends = np.column_stack(ordering.line_ends(lines)).reshape(-1)  # first0, last0, first1..
    tree = cKDTree(np.column_stack([ends.real, ends.imag]))
    pairs = tree.query_pairs(tol_px, output_type="ndarray")
    if len(pairs) == 0:
        return lines
    a, b = pairs[:, 0] // 2, pairs[:, 1] // 2
    other = a != b
    cand = np.zeros(n, dtype=bool)
    cand[a[other]] = True
    cand[b[other]] = True
    if not cand.any():
        return lines
    lc = vp.LineCollection([lines[i] for i in np.flatnonzero(cand)])
    lc.merge(tol_px, flip=flip)
    return [lines[i] for i in np.flatnonzero(~cand)] + list(lc.lines)


@dataclass
class _Piece:
    line: np.ndarray  # complex, page px
    layer: int  # pen index


def _from_strokes(
    strokes: Strokes, page: PageSpec, opts: VectorOptions, stats: dict[str, Any]
) -> tuple[tuple[float, float], Placement, list[_Piece], dict[int, dict[str, Any]]]:
    xe = strokes.canvas.x_extent
    extent = (-xe, -1.0, xe, 1.0)
    page_px = paper_size_px(page.paper, page.orientation, xe)
    fit, natural = page.fit, strokes.canvas.scale * page.scale
    paper_mm = strokes.metadata.get("page_mm") if page.true_size else None
    if paper_mm:
        # canvas pixel edges span width px: the box's width in mm; the box reaches half a
        # pixel past the outer pixel centres, and strokes are drawn (and clipped) up to it
        half = 0.5 / strokes.canvas.scale
        extent = (-xe - half, -1.0 - half, xe + half, 1.0 + half)
        fit = False
        natural = strokes.canvas.scale * paper_mm["width_mm"] * PX_PER_MM / strokes.canvas.width
        stats["true_size_mm"] = [paper_mm["width_mm"], paper_mm["height_mm"]]
    placement = place(extent, page_px, page.margin_mm, fit, page.center, natural)
    tol_world = 0.5 * opts.tolerance_mm * PX_PER_MM / placement.scale
    lines: list[np.ndarray] = []
    rgbs: list[np.ndarray] = []
    vanished = 0
    for g in strokes.groups:
        if len(g) == 0:
            continue
        alive = (g.intensity() >= opts.min_intensity) & (g.width_px >= opts.min_width_px)
        alive &= np.isfinite(g.points).all(axis=(1, 2))
        vanished += int((~alive).sum())
        if not alive.any():
            continue
        rgb = ink_rgb(g.intensity()[alive], None if g.color is None else g.color[alive])
        for poly, c in zip(curves.sample_group(g.kind, g.points[alive], tol_world), rgb,
                           strict=True):
            lines.append(placement.apply(poly))
            rgbs.append(c)
    stats["strokes_in"] = len(strokes)
    stats["dropped_vanished"] = vanished
    # Clip to the picture (the optimiser lets strokes leave it by a few pixels, and what lies
    # outside was never seen by the loss) and to the drawable area.
    (cx0, cy0), (cx1, cy1) = placement.apply(np.array([extent[:2], extent[2:]]))
    ax0, ay0, ax1, ay1 = placement.area
    clip_box = (max(cx0, ax0), max(cy0, ay0), min(cx1, ax1), min(cy1, ay1))
    pieces, src, removed = clip_lines(lines, clip_box)
    stats["clipped_mm"] = removed / PX_PER_MM
    pen_of = assign_pens(np.array(rgbs).reshape(-1, 3), opts.pens)
    out = [_Piece(_to_complex(p), int(pen_of[s])) for p, s in zip(pieces, src, strict=True)]
    nib = (strokes.metadata.get("pen") or {}).get("nib_mm")
    layers = {
        i: {"color": p.color, "width_mm": nib or p.width_mm,
            "name": p.name or f"pen {i + 1} {p.color}"}
        for i, p in enumerate(opts.pens)
    }
    if nib and any(abs(p.width_mm - nib) > 1e-9 for p in opts.pens):
        stats["pen_width_note"] = f"drawn with the {nib} mm nib the strokes were optimised for"
    return page_px, placement, out, layers


def _read_svg(path: Path, quantization: float) -> vp.Document:
    try:
        return vp.read_multilayer_svg(str(path), quantization, crop=False)
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file") from e
    except Exception as e:  # svgelements/xml raise many types on a bad file
        raise InputError(f"{path}: cannot read SVG: {e}") from e


def _from_svg(
    path: Path, page: PageSpec, opts: VectorOptions, stats: dict[str, Any],
    reader: Any = None,
) -> tuple[tuple[float, float], Placement, list[_Piece], dict[int, dict[str, Any]]]:
    """An SVG, or any reader(path, quantization) -> vpype Document in source units (stroke
    sequences), laid out, clipped and split into pieces per layer."""
    tol_px = 0.5 * opts.tolerance_mm * PX_PER_MM
    read = reader or _read_svg
    doc = read(path, tol_px)

    def layout(d: vp.Document) -> tuple[tuple[float, float], Placement]:
        if d.page_size and d.page_size[0] > 0 and d.page_size[1] > 0:
            extent = (0.0, 0.0, float(d.page_size[0]), float(d.page_size[1]))
        else:
            b = d.bounds()
            extent = b if b is not None else (0.0, 0.0, 1.0, 1.0)
        w, h = extent[2] - extent[0], extent[3] - extent[1]
        aspect = w / h if h > 0 else None
        page_px = paper_size_px(page.paper, page.orientation, aspect)
        return page_px, place(extent, page_px, page.margin_mm, page.fit, page.center, page.scale)

    page_px, placement = layout(doc)
    if placement.scale > 1.0:  # enlarged: curves must be sampled finer in source units
        doc = read(path, tol_px / placement.scale)
        page_px, placement = layout(doc)
    pieces: list[_Piece] = []
    layers: dict[int, dict[str, Any]] = {}
    removed = 0.0
    n_in = 0
    default = opts.pens[0]
    for k, (lid, lc) in enumerate(sorted(doc.layers.items())):
        color = lc.property(vp.METADATA_FIELD_COLOR)
        width = lc.property(vp.METADATA_FIELD_PEN_WIDTH)
        name = lc.property(vp.METADATA_FIELD_NAME)
        layers[k] = {
            "color": color.as_rgb_hex() if color is not None else default.color,
            "width_mm": float(width) / PX_PER_MM if width else default.width_mm,
            "name": str(name) if name else f"layer {lid}",
        }
        raw = [np.column_stack([ln.real, ln.imag]) for ln in lc.lines if len(ln) >= 2]
        n_in += len(raw)
        placed = [placement.apply(xy) for xy in raw]
        clipped, _src, rem = clip_lines(placed, placement.area)
        removed += rem
        pieces.extend(_Piece(_to_complex(p), k) for p in clipped)
    stats["strokes_in"] = n_in
    stats["dropped_vanished"] = 0
    stats["clipped_mm"] = removed / PX_PER_MM
    return page_px, placement, pieces, layers


def _load(source: Strokes | str | Path | SequenceSource, page: PageSpec, opts: VectorOptions,
          stats: dict[str, Any],
          ) -> tuple[tuple[float, float], Placement, list[_Piece], dict[int, dict[str, Any]]]:
    """Read and place the source by its kind: strokes (object or .json), an SVG, or a
    QuickDraw / Sketch-RNN sequence file."""
    if isinstance(source, Strokes):
        stats["source"] = "strokes"
        return _from_strokes(source, page, opts, stats)
    seq = source if isinstance(source, SequenceSource) else None
    path = seq.path if seq is not None else Path(source)
    suffix = path.suffix.lower()
    if seq is not None or suffix in SEQUENCE_SUFFIXES:
        # QuickDraw / Sketch-RNN: polylines already, laid out like an SVG
        stats["source"] = str(path)
        chosen = seq or SequenceSource(path)
        return _from_svg(path, page, opts, stats,
                         reader=lambda _p, _q: sequence_document(chosen))
    if suffix == ".svg":
        stats["source"] = str(path)
        return _from_svg(path, page, opts, stats)
    if suffix == ".json":
        stats["source"] = str(path)
        return _from_strokes(Strokes.load(path), page, opts, stats)
    raise InputError(f"{path}: expected a strokes .json, an .svg, a QuickDraw .ndjson "
                     "or a Sketch-RNN .npz file")


def _drop_short(pieces: list[_Piece], opts: VectorOptions,
                stats: dict[str, Any]) -> dict[int, list[np.ndarray]]:
    """Lines per layer, without those shorter than min_length_mm (dots are kept)."""
    min_len = opts.min_length_mm * PX_PER_MM
    kept: dict[int, list[np.ndarray]] = {}
    short = 0
    for p, length in zip(pieces, _lengths([p.line for p in pieces]), strict=True):
        if length < min_len and not _is_dot(p.line):
            short += 1
            continue
        kept.setdefault(p.layer, []).append(p.line)
    stats["dropped_short"] = short
    return kept


def _ordered_document(kept: dict[int, list[np.ndarray]], layers: dict[int, dict[str, Any]],
                      page_px: tuple[float, float],
                      opts: VectorOptions) -> tuple[vp.Document, list[np.ndarray]]:
    """One vpype layer per pen, each ordered from where the previous one ended (the first
    from the paper's top-left corner); also every plotted line in plotting order."""
    doc = vp.Document(page_size=page_px)
    pos = 0j
    plotted: list[np.ndarray] = []
    for k in sorted(kept):
        ordered = ordering.sort_lines(kept[k], pos, opts.flip, opts.two_opt)
        if not ordered:
            continue
        lid = k + 1
        doc.add(vp.LineCollection(ordered), lid)
        info = layers[k]
        layer = doc.layers[lid]
        layer.set_property(vp.METADATA_FIELD_COLOR, vp.Color(_hex(info["color"])))
        layer.set_property(vp.METADATA_FIELD_PEN_WIDTH, info["width_mm"] * PX_PER_MM)
        layer.set_property(vp.METADATA_FIELD_NAME, info["name"])
        plotted.extend(ordered)
        pos = ordered[-1][-1]
    return doc, plotted


def _result_stats(stats: dict[str, Any], page: PageSpec, page_px: tuple[float, float],
                  placement: Placement, layers: dict[int, dict[str, Any]],
                  kept: dict[int, list[np.ndarray]], before: list[np.ndarray],
                  plotted: list[np.ndarray], t_start: float) -> None:
    """The figures about the plotted lines, added to ``stats``."""
    draw_px = float(_lengths(plotted).sum())
    x0, y0, x1, y1 = placement.area
    stats.update(
        {
            "paper": page.paper,
            "page_mm": [round(page_px[0] / PX_PER_MM, 3), round(page_px[1] / PX_PER_MM, 3)],
            "drawable_mm": [round(v / PX_PER_MM, 3) for v in (x0, y0, x1, y1)],
            "scale_mm_per_unit": placement.scale / PX_PER_MM,
            "lines": len(plotted),
            "dots": sum(1 for ln in plotted if _is_dot(ln)),
            "segments": sum(len(ln) - 1 for ln in plotted),
            "layers": [
                {"layer": k + 1, **layers[k], "lines": len(kept[k])} for k in sorted(kept)
                if kept[k]
            ],
            "pen_lifts": len(plotted),
            "draw_mm": draw_px / PX_PER_MM,
            "travel_mm_before": ordering.pen_up_length(before, 0j) / PX_PER_MM,
            "travel_mm_after": ordering.pen_up_length(plotted, 0j) / PX_PER_MM,
            "vectorise_s": time.perf_counter() - t_start,
        }
    )
    if plotted:
        allc = np.concatenate(plotted)
        stats["drawing_bbox_mm"] = [
            float(v) / PX_PER_MM
            for v in (allc.real.min(), allc.imag.min(), allc.real.max(), allc.imag.max())
        ]
    else:
        stats["drawing_bbox_mm"] = None


def vectorise(
    source: Strokes | str | Path | SequenceSource,
    page: PageSpec | None = None,
    options: VectorOptions | None = None,
    progress: ProgressCallback | None = None,
) -> VectorResult:
    """Lay out strokes (or an SVG) on the page and return plot-ready layers.

    Steps: sample curves to tolerance/2 -> place on the page (fit/centre) -> clip to the
    drawable area -> drop vanished and short strokes -> one layer per pen -> shapely simplify
    (tolerance/2) -> vpype merge -> greedy (+ 2-opt) ordering from the paper's top-left corner.
    """
    page = page or PageSpec()
    opts = options or VectorOptions()
    opts.check()
    if not (isinstance(page.scale, (int, float)) and page.scale > 0):
        raise ConfigError("page.scale", f"must be > 0, got {page.scale!r}")
    t_start = time.perf_counter()
    steps = ["sample", "simplify", "merge", "order"]

    def report(i: int) -> None:
        if progress is not None:
            progress(Progress("vectorise", i, len(steps), time.perf_counter() - t_start,
                              info={"step": steps[i] if i < len(steps) else "done"}))

    report(0)
    stats: dict[str, Any] = {}
    page_px, placement, pieces, layers = _load(source, page, opts, stats)
    kept = _drop_short(pieces, opts, stats)

    report(1)
    if opts.simplify:
        kept = {k: _simplify(v, 0.5 * opts.tolerance_mm * PX_PER_MM) for k, v in kept.items()}
    report(2)
    merge_px = opts.merge_tolerance_mm * PX_PER_MM
    kept = {k: _merge(v, merge_px, opts.flip) for k, v in kept.items()}
    before = [ln for k in sorted(kept) for ln in kept[k]]
    report(3)
    doc, plotted = _ordered_document(kept, layers, page_px, opts)
    report(4)

    _result_stats(stats, page, page_px, placement, layers, kept, before, plotted, t_start)
    return VectorResult(document=doc, stats=stats)


def _hex(color: str) -> str:
    r, g, b = parse_color(color, "pen.color")
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
