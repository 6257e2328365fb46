"""The pen and the page: facts the draw, vector, G-code and simulator stages all share.

A :class:`PenModel` says how one pen lays ink on paper. Every stage takes the same object:

- the optimiser sizes its canvas and its strokes' Gaussian from it (:meth:`raster_width_px`),
- the vector and G-code stages draw with its nib width,
- the simulated plotter, the paper benchmark and the optimiser's paper forward pass render
  with :meth:`PenModel.render` (:func:`render_paths`).

:class:`RoundNib` is the analytic model: a round nib of ``nib_mm`` that lays ink of
``darkness`` over every point within ``nib_mm / 2`` of its path; where lines cross, ink
saturates (a pixel is covered or not, never covered twice). A pen fitted from photographs of
real plots can replace it behind the same interface (``nib_mm``, ``darkness``,
``raster_width_px``, ``ink_per_mm``, ``render``).

:func:`render_paths` draws that ink exactly: each (supersampled) pixel is covered by the
fraction of its area inside the nearest capsule's edge, from its centre's exact distance to
the true segment, so a line lays length x nib plus its round caps at every angle (within
0.03 %; measuring to a rasterised 1-px centre line instead gave +2 to +5 % between 5 and 40
degrees, an error the optimiser would learn). It works tile by tile over the tiles each
segment reaches, so time and memory follow the line, not the page.

:class:`DrawingBox` is the drawing's box on the paper, in mm; with a pen it gives the working
canvas of the optimiser: 1 canvas pixel = 1 nib width. That is the coarsest raster on which
two lines one nib apart stay distinct, and there the papers' Gaussian of
``sigma = 0.54925 * 1 px`` is the least-squares fit to the nib's box profile, whose integral
across the line (``sigma * sqrt(pi)`` = 0.97 px) equals the nib's width: the raster's tone is
the pen's tone. A finer raster costs four times as much per halving for little gain at
viewing distance.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import yaml

from plotterd.errors import ConfigError, InputError

__all__ = [
    "DrawingBox",
    "FittedPen",
    "PenModel",
    "RoundNib",
    "pen_from_dict",
    "box_from_dict",
    "pens_dir",
    "load_pen_profile",
    "save_pen_profile",
    "list_pen_profiles",
]

SIGMA_PER_PIXEL_WIDTH = 0.54925  # method.md, appendix A: Gaussian sigma of a 1-px-wide stroke


@runtime_checkable
class PenModel(Protocol):
    """How a pen lays ink. ``render`` returns grey in [0, 1] (1 = bare paper)."""

    nib_mm: float
    darkness: float

    def raster_width_px(self, px_per_mm: float) -> float: ...

    def ink_per_mm(self) -> float: ...

    def render(self, polylines_mm: Iterable[np.ndarray], box: DrawingBox, px_per_mm: float,
               *, supersample: int = 4) -> np.ndarray: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DrawingBox:
    """The drawing's box on the paper: ``width_mm`` x ``height_mm``, origin top-left, y down."""

    width_mm: float
    height_mm: float

    def canvas_px(self, pen: PenModel) -> tuple[int, int]:
        """(width, height) of the working canvas at 1 px = 1 nib width."""
        return (max(2, round(self.width_mm / pen.nib_mm)),
                max(2, round(self.height_mm / pen.nib_mm)))

    def to_dict(self) -> dict[str, float]:
        return {"width_mm": self.width_mm, "height_mm": self.height_mm}


class _RoundInk:
    """Ink laid as a round nib of ``nib_mm`` with ``darkness``: what every pen model draws."""

    nib_mm: float
    darkness: float

    def raster_width_px(self, px_per_mm: float) -> float:
        return self.nib_mm * px_per_mm

    def ink_per_mm(self) -> float:
        """mm^2 of full darkness one mm of line lays on bare paper."""
        return self.nib_mm * self.darkness

    def render(self, polylines_mm: Iterable[np.ndarray], box: DrawingBox, px_per_mm: float,
               *, supersample: int = 4) -> np.ndarray:
        """Grey image (H, W) float32 of the box at ``px_per_mm``; 1 = paper.

        Drawn at ``supersample`` times the resolution (more for a thin nib) and
        area-averaged. The ink is everything within nib/2 of a path: each supersampled
        pixel takes the share of its area on the ink's side of the edge nearest it, from
        its centre's exact distance to the segment (see :func:`render_paths`): exact width,
        round caps and the same ink at every angle, unlike cv2's thick lines (width rounded
        to odd pixel counts) or a distance transform of rasterised centre lines."""
        return render_paths(polylines_mm, box, px_per_mm, self.nib_mm, self.darkness,
                            supersample=supersample)


@dataclass(frozen=True)
class RoundNib(_RoundInk):
    """A round nib of ``nib_mm`` laying ink of ``darkness`` (1 = black); overlaps saturate."""

    nib_mm: float = 0.3
    darkness: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.nib_mm) and 0.01 <= self.nib_mm <= 20):
            raise ConfigError("pen.nib_mm", f"must be within [0.01, 20] mm, got {self.nib_mm}")
        if not (math.isfinite(self.darkness) and 0 < self.darkness <= 1):
            raise ConfigError("pen.darkness", f"must be within (0, 1], got {self.darkness}")

    def to_dict(self) -> dict[str, Any]:
        return {"model": "round", "nib_mm": self.nib_mm, "darkness": self.darkness}


@dataclass(frozen=True)
class FittedPen(_RoundInk):
    """A pen measured from a photograph of its calibration sheet (``plotterd pens fit``).

    It lays ink as a round nib of its *effective* width ``nib_mm`` (the nominal nib plus the
    ink's spread into the paper's fibres) and ``darkness`` (1 - the line's reflectance
    relative to the paper); ``colour`` is the solid ink's sRGB colour on this paper."""

    name: str
    nib_mm: float
    darkness: float
    colour: str = "#000000"
    nominal_nib_mm: float | None = None
    fitted_at: str = ""
    photo: str = ""
    residual: float = 0.0

    def __post_init__(self) -> None:
        RoundNib(self.nib_mm, self.darkness)  # the same checks
        if not _PROFILE_NAME.fullmatch(self.name):
            raise ConfigError("pen.profile", f"bad pen name {self.name!r} (letters, digits, "
                                             "'.', '_' and '-' only)")
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", self.colour):
            raise ConfigError("pen.colour", f"must be #rrggbb, got {self.colour!r}")

    def to_dict(self) -> dict[str, Any]:
        """Everything, so strokes.json's metadata rebuilds the pen without the pens folder."""
        return {"model": "fitted", "profile": self.name, **{
            k: v for k, v in asdict(self).items() if k != "name"}}


def render_paths(polylines_mm: Iterable[np.ndarray], box: DrawingBox, px_per_mm: float,
                 nib_mm: float, darkness: float, *, supersample: int = 4) -> np.ndarray:
    """Grey (H, W) float32, ``1 - darkness * coverage``, of round-nib lines along
    ``polylines_mm`` (box mm, origin top-left; a one-point path is a dot).

    A supersampled pixel whose centre lies ``d`` from the nearest segment (the exact
    point-to-segment distance) is covered by the area of the pixel on the ink's side of the
    capsule's edge there: the distribution function of the pixel's projection onto the
    edge's normal at ``r - d`` (``clip(r + 1/2 - d, 0, 1)`` for an axis-parallel edge, a
    trapezoid's for others), exact for a straight edge, so the ink a line lays does not
    depend on its angle; round caps take a curvature term. Where lines overlap, a
    supersampled pixel takes the larger coverage: ink saturates. Then area-averaged to
    ``px_per_mm``."""
    w1 = max(1, round(box.width_mm * px_per_mm))
    h1 = max(1, round(box.height_mm * px_per_mm))
    ss = _supersample(int(supersample), nib_mm * px_per_mm, w1 * h1)
    scale = px_per_mm * ss
    segments = _segments(polylines_mm, scale)
    grey = _page_coverage(segments, w1, h1, ss, nib_mm * scale / 2)
    grey *= -darkness  # in place: a whole page is one float array
    grey += 1.0
    return grey


# with fewer supersampled pixels than this across the nib, the pixels two hatch lines one nib
# apart share (where the larger of their coverages stands for the union) are coarse enough
# to open and close slivers between the lines
_MIN_SS_PX_PER_NIB = 8
# the supersampling's cap: the work grows with the supersampled page (memory does not: it is
# rendered tile by tile)
_MAX_SS_PIXELS = 40_000_000


def _supersample(asked: int, nib_px: float, pixels: int) -> int:
    """The supersampling: at least ``asked``, more for a thin nib, within the size cap."""
    want = max(1, asked, math.ceil(_MIN_SS_PX_PER_NIB / max(nib_px, 1e-9)))
    cap = max(1, math.isqrt(max(1, _MAX_SS_PIXELS // max(1, pixels))))
    return max(1, asked, min(want, cap))


# The renderer, tile by tile. Segments are cut into pieces of at most _PIECE_TILES tiles,
# paired with the tiles within reach of them (the pieces' coverage beyond reach is 0), and
# each tile's supersampled pixels take the largest coverage of its pieces (overlaps
# saturate), then are area-averaged to the page's pixels. Work and memory go with the ink,
# not the page; a chunk of pairs is at most _CHUNK_ELEMENTS pixels. Hand-written: cv2's
# antialiased lines are not area-exact and round widths to whole pixels, and its distance
# transform measures to a rasterised centre line (the error this replaces).

# a tile's side in supersampled pixels (rounded to whole page pixels): the nib's radius
# within these bounds, so a thick nib's piece meets a few tiles, not dozens (measured)
_TILE_SS_PX = (8, 16)
_PIECE_TILES = 4
_CHUNK_ELEMENTS = 1 << 16  # a chunk's float arrays stay in the CPU's cache
_BAND_PAIRS = 1 << 18  # pairs are made for a band of tile rows at a time
_FILTER_CLASSES = 33  # edge directions the coverage table holds, 0 to 45 degrees
_TABLE_STEPS_PER_PX = 256  # the coverage table's steps of distance near the edge


def _segments(polylines_mm: Iterable[np.ndarray], scale: float) -> np.ndarray:
    """(N, 4) segments x0, y0, x1, y1 in supersampled pixels whose centres sit at whole
    numbers; a one-point path is a zero-length segment (a dot)."""
    parts = []
    for line in polylines_mm:
        pts = np.asarray(line, dtype=np.float64).reshape(-1, 2)
        if len(pts) == 1:
            pts = np.vstack([pts, pts])
        if len(pts):
            parts.append(np.hstack([pts[:-1], pts[1:]]))
    if not parts:
        return np.zeros((0, 4))
    segments = np.concatenate(parts)
    if not np.isfinite(segments).all():
        raise InputError("a pen path has a coordinate that is not a finite number")
    return segments * scale - 0.5


def _page_coverage(segments: np.ndarray, w1: int, h1: int, ss: int, r: float) -> np.ndarray:
    """(h1, w1) float32 ink coverage in [0, 1] of capsules of radius ``r`` (supersampled px)
    around ``segments``, drawn at ``ss`` x the page's resolution and area-averaged."""
    t_out = max(1, round(min(max(r, _TILE_SS_PX[0]), _TILE_SS_PX[1]) / ss))  # page pixels
    tile = t_out * ss
    ntx, nty = -(-w1 // t_out), -(-h1 // t_out)
    page = np.zeros((nty * t_out, ntx * t_out), np.float32)
    out = page.reshape(nty, t_out, ntx, t_out)  # a view: tile (ty, tx) is out[ty, :, tx]
    reach = r + 0.75  # a pixel's centre this far out is outside the ink at any edge angle
    segments = _clipped(segments, w1 * ss - 1, h1 * ss - 1, reach + 1)
    pieces = _pieces(segments, _PIECE_TILES * tile)
    lo = np.floor((np.minimum(pieces[:, :2], pieces[:, 2:]) - reach) / tile).astype(np.int64)
    hi = np.floor((np.maximum(pieces[:, :2], pieces[:, 2:]) + reach) / tile).astype(np.int64)
    on_page = (hi >= 0).all(1) & (lo[:, 0] < ntx) & (lo[:, 1] < nty)
    pieces, lo, hi = pieces[on_page], np.maximum(lo[on_page], 0), hi[on_page]
    hi = np.minimum(hi, [ntx - 1, nty - 1])
    table = _CoverageTable(r)
    grid = _Tiling(tile, t_out, ss, ntx, reach)
    for y0, y1 in _bands(lo, hi, nty):
        rows = (lo[:, 1] < y1) & (hi[:, 1] >= y0)
        if rows.any():
            lo_b, hi_b = lo[rows], hi[rows]
            lo_b[:, 1] = np.maximum(lo_b[:, 1], y0)
            hi_b[:, 1] = np.minimum(hi_b[:, 1], y1 - 1)
            grid.draw(pieces[rows], lo_b, hi_b, table, out)
    return page if page.shape == (h1, w1) else page[:h1, :w1].copy()


def _bands(lo: np.ndarray, hi: np.ndarray, nty: int) -> list[tuple[int, int]]:
    """Bands [y0, y1) of tile rows holding about _BAND_PAIRS (piece, tile) candidates each
    (the pieces' tile ranges ``lo``..``hi``): the pairs' bookkeeping, some 100 bytes a
    pair, stays bounded however much line the page holds."""
    width = (hi[:, 0] - lo[:, 0] + 1).astype(np.float64)
    per_row = np.cumsum(np.bincount(lo[:, 1], width, nty + 1)
                        - np.bincount(hi[:, 1] + 1, width, nty + 1))[:nty]
    bands, start, held = [], 0, 0.0
    for row, n in enumerate(per_row.tolist()):
        if held and held + n > _BAND_PAIRS:
            bands.append((start, row))
            start, held = row, 0.0
        held += n
    return bands + [(start, nty)]


def _clipped(segments: np.ndarray, x_max: float, y_max: float, margin: float) -> np.ndarray:
    """The segments' parts within ``margin`` of [0, x_max] x [0, y_max] (Liang-Barsky): a
    path far off the page costs nothing, and a cut end's cap lies beyond the ink's reach."""
    a, d = segments[:, :2], segments[:, 2:] - segments[:, :2]
    enter, leave = np.zeros(len(a)), np.ones(len(a))
    for axis, top in ((0, x_max), (1, y_max)):
        step = d[:, axis]
        moving = step != 0
        below = (-margin - a[:, axis]) / np.where(moving, step, 1.0)
        above = (top + margin - a[:, axis]) / np.where(moving, step, 1.0)
        enter = np.maximum(enter, np.where(moving, np.minimum(below, above), -np.inf))
        leave = np.minimum(leave, np.where(moving, np.maximum(below, above), np.inf))
        still_out = ~moving & ((a[:, axis] < -margin) | (a[:, axis] > top + margin))
        leave[still_out] = -1.0
    keep = enter <= leave
    return np.hstack([a + d * enter[:, None], a + d * leave[:, None]])[keep]


def _pieces(segments: np.ndarray, longest: float) -> np.ndarray:
    """The segments cut into equal pieces at most ``longest`` long: a piece's capsule meets
    a few tiles, and its coordinates within a tile stay small (float32 is exact enough)."""
    length = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    n = np.maximum(1, np.ceil(length / longest)).astype(np.int64)
    if (n == 1).all():
        return segments
    which = np.repeat(np.arange(len(segments)), n)
    k = (np.arange(len(which)) - np.repeat(np.cumsum(n) - n, n))[:, None]
    a, b = segments[which, :2], segments[which, 2:]
    return np.hstack([a + (b - a) * (k / n[which, None]), a + (b - a) * ((k + 1) / n[which, None])])


def _edge_coverage(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Area of a unit pixel on the ink's side of a straight edge ``t`` px beyond the pixel's
    centre (t < 0: the centre is outside), for an edge whose normal has components
    a >= b >= 0: the distribution function of the pixel's projection onto the normal, a
    trapezoid of flanks b wide. b = 0 is the box ``clip(t + 1/2, 0, 1)``."""
    u = np.abs(t)
    e = (a + b) / 2 - u
    tail = np.where(e >= b, (e - b / 2) / a, np.maximum(e, 0.0) ** 2 / np.maximum(2 * a * b, 1e-12))
    return np.where(t >= 0, 1.0 - tail, tail)


class _CoverageTable:
    """Coverage of a pixel by a capsule of radius ``r`` as a table over (edge direction
    class, squared distance of its centre in steps): a lookup instead of a square root and
    the trapezoid per pixel."""

    def __init__(self, r: float):
        # A round cap bends away from its tangent by x^2 / 2r across a pixel, x's variance
        # there being 1/12 at any angle: the tangent's coverage over-inks a cap by
        # pi/24 px^2 (a dot's disc by pi/12). Drawing each end this much further in takes
        # that back (2r x shift = pi/24) at no cost per pixel.
        self.cap_shift = min(math.pi / (48.0 * r), r / 4)
        reach = r + 0.75
        step = max(2 * (r - 0.75), 0.25) / _TABLE_STEPS_PER_PX  # squared px
        self.n = math.ceil(reach * reach / step) + 1
        self.inv_step = 1.0 / step
        d = np.sqrt((np.arange(self.n) + 0.5) * step)
        b = np.linspace(0.0, math.sqrt(0.5), _FILTER_CLASSES)[:, None]
        a = np.sqrt(1.0 - b * b)
        # both edges of the band: the far one only counts for a nib under a pixel wide
        cov = _edge_coverage(r - d, a, b) + _edge_coverage(r + d, a, b) - 1.0
        cov[:, -1] = 0.0  # where every distance beyond reach lands
        self.values = np.clip(cov, 0.0, 1.0).astype(np.float32).ravel()

    def offsets(self, ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
        """Each unit direction's class (the smaller component's size) as a table offset."""
        small = np.minimum(np.abs(ux), np.abs(uy))
        cls = np.rint(small / math.sqrt(0.5) * (_FILTER_CLASSES - 1)).astype(np.int32)
        return cls * np.int32(self.n)


class _Tiling:
    """The page's tiles of ``tile`` supersampled pixels (``t_out`` page pixels) a side."""

    def __init__(self, tile: int, t_out: int, ss: int, ntx: int, reach: float):
        self.tile, self.t_out, self.ss, self.ntx, self.reach = tile, t_out, ss, ntx, reach
        yy, xx = np.mgrid[0:tile, 0:tile]
        self.pixels = np.stack([xx.ravel(), yy.ravel(), np.ones(tile * tile)]).astype(np.float32)
        # (tile^2, t_out^2): a tile's supersampled pixels -> the mean of each page pixel's
        block = (yy // ss * t_out + xx // ss).ravel()
        self.average = np.zeros((tile * tile, t_out * t_out), np.float32)
        self.average[np.arange(tile * tile), block] = 1.0 / (ss * ss)

    def draw(self, pieces: np.ndarray, lo: np.ndarray, hi: np.ndarray, table: _CoverageTable,
             out: np.ndarray) -> None:
        """Max the coverage of ``pieces`` (tile ranges ``lo``..``hi``) into ``out``."""
        length, u = _directions(pieces)
        ux, uy = u[:, 0].copy(), u[:, 1].copy()
        pid, tx, ty = self._pairs(pieces, lo.astype(np.int32), hi.astype(np.int32), length,
                                  ux, uy)
        if not len(pid):
            return
        order, chunks = self._schedule(tx, ty)
        pid, tx, ty = pid[order], tx[order], ty[order]
        del order
        rows = self._rows(pieces, length, ux, uy, pid, tx, ty, table)
        offsets = table.offsets(ux, uy)[pid]
        del pid
        for start, stop, per_rank in chunks:
            cov = _pair_coverage(rows[:, start:stop], offsets[start:stop], table,
                                 self.pixels)
            best = cov[:per_rank[0]]  # every tile's first piece
            at = per_rank[0]
            for n in per_rank[1:]:  # the k-th pieces of the first n tiles
                np.maximum(best[:n], cov[at: at + n], out=best[:n])
                at += n
            tiles = slice(start, start + per_rank[0])
            out[ty[tiles], :, tx[tiles]] = self._area_average(best)

    def _pairs(self, pieces, lo, hi, length, ux, uy):
        """(piece, tile x, tile y) of the tiles that meet each piece's rectangle (its length
        plus reach at both ends, reach on both sides), which holds its capsule: separating
        axes along and across the piece, the bounding box's tiles being the others."""
        nx = hi[:, 0] - lo[:, 0] + 1
        count = nx * (hi[:, 1] - lo[:, 1] + 1)
        pid = np.repeat(np.arange(len(pieces), dtype=np.int32), count)
        k = np.arange(len(pid), dtype=np.int32) - np.repeat(
            (np.cumsum(count) - count).astype(np.int32), count)
        nx = nx[pid]
        tx = lo[:, 0][pid] + k % nx
        ty = lo[:, 1][pid] + k // nx
        del k, nx
        half = (self.tile - 1) / 2
        box = half * (np.abs(ux) + np.abs(uy))  # the tile's half extent along u
        slack = 0.01  # float32 rounding of page-sized coordinates
        across_max = (self.reach + box + slack).astype(np.float32)
        along_max = (length / 2 + self.reach + box + slack).astype(np.float32)
        # tile (0, 0)'s centre from the piece's middle, then each tile's
        x0 = (half - (pieces[:, 0] + pieces[:, 2]) / 2).astype(np.float32)
        y0 = (half - (pieces[:, 1] + pieces[:, 3]) / 2).astype(np.float32)
        cx = tx.astype(np.float32) * np.float32(self.tile) + x0[pid]
        cy = ty.astype(np.float32) * np.float32(self.tile) + y0[pid]
        pux, puy = ux.astype(np.float32)[pid], uy.astype(np.float32)[pid]
        meets = np.abs(cx * pux + cy * puy) <= along_max[pid]
        meets &= np.abs(cy * pux - cx * puy) <= across_max[pid]
        return pid[meets], tx[meets], ty[meets]

    def _schedule(self, tx, ty):
        """The pairs' order and chunks. A chunk holds whole tiles, about _CHUNK_ELEMENTS
        pixels of pairs; within it the pairs go by rank (each tile's first piece, then its
        second, ...) and within a rank by tile, the tiles with most pieces first: rank k's
        tiles are then a prefix of rank 0's, and saturating is a max of slices, no gather.
        Returns (order, [(start, stop, pairs per rank)])."""
        tile_id = ty * self.ntx + tx
        by_tile = np.argsort(tile_id)  # a tile's pieces in any order
        tile_id = tile_id[by_tile]
        new = np.r_[True, tile_id[1:] != tile_id[:-1]]
        group = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        count = np.diff(np.r_[starts, len(tile_id)])
        rank = np.arange(len(tile_id)) - starts[group]
        per_chunk = max(1, _CHUNK_ELEMENTS // (self.tile * self.tile))
        chunk = (np.cumsum(count) - count) // per_chunk
        place = np.empty_like(group, shape=len(count))
        place[np.lexsort((-count, chunk))] = np.arange(len(count))
        chunk_rank = chunk[group] * (count.max() + 1) + rank
        order = np.argsort(chunk_rank * len(count) + place[group])  # keys are unique
        chunk_rank = chunk_rank[order]
        runs = np.flatnonzero(np.r_[True, chunk_rank[1:] != chunk_rank[:-1]])
        run_len = np.diff(np.r_[runs, len(order)])
        run_chunk = chunk[group][order][runs]
        chunks = []
        for c_start, c_stop in _run_bounds(run_chunk):
            lens = run_len[c_start:c_stop]
            start = int(runs[c_start])
            chunks.append((start, start + int(lens.sum()), lens.tolist()))
        return by_tile[order], chunks

    def _rows(self, pieces, length, ux, uy, pid, tx, ty, table):
        """Per pair, the rows (3, pairs, 3) taking a tile pixel (x, y, 1) to its distance
        before the piece's start, beyond its end and across it, in units of sqrt(table
        step); the ends are drawn ``table.cap_shift`` in from the piece's ends."""
        k = math.sqrt(table.inv_step)
        pux, puy = ux[pid], uy[pid]
        ax = pieces[:, 0][pid] - tx * float(self.tile)  # the start, from the tile's corner
        ay = pieces[:, 1][pid] - ty * float(self.tile)
        rows = np.empty((3, len(pid), 3), np.float32)
        rows[0, :, 0], rows[0, :, 1] = -pux * k, -puy * k
        rows[1, :, 0], rows[1, :, 1] = pux * k, puy * k
        rows[2, :, 0], rows[2, :, 1] = -puy * k, pux * k
        along = (ax * pux + ay * puy) * k
        rows[0, :, 2] = along + table.cap_shift * k
        rows[1, :, 2] = -along - (length[pid] - table.cap_shift) * k
        rows[2, :, 2] = (ax * puy - ay * pux) * k
        return rows

    def _area_average(self, cov: np.ndarray) -> np.ndarray:
        """(tiles, tile^2) supersampled coverage -> (tiles, t_out, t_out) page pixels."""
        return (cov @ self.average).reshape(len(cov), self.t_out, self.t_out)


def _pair_coverage(rows: np.ndarray, offsets: np.ndarray, table: _CoverageTable,
                   pixels: np.ndarray) -> np.ndarray:
    """(pairs, tile^2) coverage of each pair's tile pixels by its piece's capsule."""
    before, beyond, across = rows[0] @ pixels, rows[1] @ pixels, rows[2] @ pixels
    d2 = np.maximum(before, beyond, out=before)  # beyond an end: the distance along it
    np.maximum(d2, 0, out=d2)
    d2 *= d2
    across *= across
    d2 += across
    np.minimum(d2, np.float32(table.n - 1), out=d2)
    index = d2.astype(np.int32)
    index += offsets[:, None]
    return table.values.take(index, mode="clip")


def _directions(pieces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths and unit directions of (N, 4) pieces; a dot's direction is +x."""
    d = pieces[:, 2:] - pieces[:, :2]
    length = np.hypot(d[:, 0], d[:, 1])
    dot = length <= 1e-9
    u = d / np.where(dot, 1.0, length)[:, None]
    u[dot] = (1.0, 0.0)
    return length, u


def _run_bounds(values: np.ndarray):
    """(start, stop) of each run of equal values."""
    edges = np.flatnonzero(np.r_[True, values[1:] != values[:-1], True])
    return zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)


_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FITTED_KEYS = {"nib_mm", "darkness", "colour", "nominal_nib_mm", "fitted_at", "photo",
                "residual"}


def pen_from_dict(d: dict[str, Any] | None, key: str = "pen",
                  pens_folder: Path | None = None) -> RoundNib | FittedPen:
    """Parse ``{nib_mm, darkness, model: round}``, ``{profile: NAME}`` (a fitted pen from
    the pens folder) or a fitted pen's own ``to_dict``; ConfigError names ``key.field``."""
    d = dict(d or {})
    model = d.pop("model", "fitted" if "profile" in d else "round")
    if model == "fitted":
        return _fitted_from_dict(d, key, pens_folder)
    if model != "round":
        raise ConfigError(f"{key}.model", f"unknown pen model {model!r} (known: round, fitted)")
    values = _numbers(d, {"nib_mm", "darkness"}, key)
    try:
        return RoundNib(**values)
    except ConfigError as e:
        raise ConfigError(e.key.replace("pen", key, 1), e.message) from None


def _numbers(d: dict[str, Any], allowed: set[str], key: str) -> dict[str, float]:
    for k in d:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}", f"unknown key (known: {', '.join(sorted(allowed))})")
    values = {}
    for k in allowed & d.keys():
        v = d[k]
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{key}.{k}", f"must be a number, got {v!r}")
        values[k] = float(v)
    return values


def _fitted_from_dict(d: dict[str, Any], key: str, pens_folder: Path | None) -> FittedPen:
    name = d.pop("profile", None)
    if not isinstance(name, str):
        raise ConfigError(f"{key}.profile", f"must be a pen profile's name, got {name!r}")
    if not d:  # a reference: the profile's file says the rest
        return load_pen_profile(name, pens_folder, key=key)
    unknown = set(d) - _FITTED_KEYS
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}",
                          f"unknown key (known: profile, {', '.join(sorted(_FITTED_KEYS))})")
    try:
        return FittedPen(name=name, **d)
    except (TypeError, ValueError) as e:
        raise ConfigError(key, f"not a fitted pen: {e}") from None
    except ConfigError as e:
        raise ConfigError(e.key.replace("pen", key, 1), e.message) from None


def pens_dir() -> Path:
    """Where fitted pen profiles live: ``$PLOTTERD_PENS_DIR``, else the user data folder."""
    env = os.environ.get("PLOTTERD_PENS_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("plotterd")) / "pens"


def _profile_path(name: str, folder: Path | None, key: str) -> Path:
    if not _PROFILE_NAME.fullmatch(name):  # a name, never a path
        raise ConfigError(f"{key}.profile", f"bad pen name {name!r} (letters, digits, '.', "
                                            "'_' and '-' only)")
    return (folder or pens_dir()) / f"{name}.yaml"


def load_pen_profile(name: str, folder: Path | None = None, key: str = "pen") -> FittedPen:
    """The fitted pen ``name`` from ``folder`` (default :func:`pens_dir`)."""
    path = _profile_path(name, folder, key)
    if not path.is_file():
        known = ", ".join(p.name for p in list_pen_profiles(folder)) or "none"
        raise ConfigError(f"{key}.profile", f"no pen profile {name!r} in {path.parent} "
                                            f"(known: {known}); fit one with `plotterd pens fit`")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{key}.profile", f"{path}: unreadable pen profile ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}.profile", f"{path}: not a pen profile")
    raw.pop("model", None)
    raw["profile"] = name
    return _fitted_from_dict(raw, key, folder)


def save_pen_profile(pen: FittedPen, folder: Path | None = None) -> Path:
    """Write ``pen`` as ``NAME.yaml`` (atomically: a reader never sees half a profile)."""
    path = _profile_path(pen.name, folder, "pen")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(pen.to_dict(), sort_keys=False))
    os.replace(tmp, path)
    return path


def list_pen_profiles(folder: Path | None = None) -> list[FittedPen]:
    """Every readable profile in ``folder``, by name."""
    folder = folder or pens_dir()
    out = []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            out.append(load_pen_profile(path.stem, folder))
        except ConfigError:
            continue
    return out


def box_from_dict(d: Any, aspect: float | None = None, key: str = "page") -> DrawingBox:
    """``{width_mm, height_mm}``; either may be left out and follow the picture's aspect
    (width / height)."""
    if not isinstance(d, dict):
        raise ConfigError(key, "must be a mapping with width_mm and/or height_mm")
    for k in d:
        if k not in ("width_mm", "height_mm"):
            raise ConfigError(f"{key}.{k}", "unknown key (known: height_mm, width_mm)")
    vals: dict[str, float] = {}
    for k in ("width_mm", "height_mm"):
        if k in d:
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, int | float) or not (
                    math.isfinite(v) and 1 <= v <= 5000):
                raise ConfigError(f"{key}.{k}", "must be a number of mm within [1, 5000]")
            vals[k] = float(v)
    if not vals:
        raise ConfigError(key, "give width_mm or height_mm")
    if len(vals) == 1:
        if aspect is None:
            raise ConfigError(key, "both width_mm and height_mm are needed here")
        if "width_mm" in vals:
            vals["height_mm"] = vals["width_mm"] / aspect
        else:
            vals["width_mm"] = vals["height_mm"] * aspect
    return DrawingBox(vals["width_mm"], vals["height_mm"])


def ink_needed_mm(darkness: np.ndarray, mm_per_px: float, pen: PenModel) -> float:
    """Line length (mm) a faithful drawing of ``darkness`` (H, W in [0, 1], 0 = paper) needs:
    total darkness x area / (nib width x ink darkness)."""
    area_mm2 = float(np.clip(darkness, 0, 1).sum()) * mm_per_px * mm_per_px
    return area_mm2 / pen.ink_per_mm()


def total_length_mm(polylines_mm: Sequence[np.ndarray]) -> float:
    return float(sum(np.linalg.norm(np.diff(np.asarray(p), axis=0), axis=1).sum()
                     for p in polylines_mm if len(p) > 1))
