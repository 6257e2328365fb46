"""Evenly spaced streamlines whose spacing follows the picture's tone (a drawing's start).

Lines run along the picture's structure: the tangent of the smoothed structure tensor, so
they follow edges and tone contours as an engraver's lines do. Their spacing follows the
darkness: a 1-px-wide line every ``1 / darkness`` pixels lays that darkness. This is
Jobard and Lefer's algorithm ("Creating evenly-spaced streamlines of arbitrary density",
1997) with a separation field, the classic way to lay such lines; no maintained Python
library implements it with a varying separation (matplotlib's streamplot spaces its lines
on a fixed grid and breaks them into arrows), hence this module.

Everything is in canvas pixels (x = column, y = row). The work is a Python loop over line
points; 150 mm at a 0.3 mm nib (about 1e5 px of line) takes a few seconds.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["StreamlineSettings", "orientation_field", "trace_streamlines"]


@dataclass(frozen=True)
class StreamlineSettings:
    min_spacing_px: float = 1.0  # at full darkness (1 nib = 1 px: lines touching)
    max_spacing_px: float = 14.0  # lighter than 1 / this: no line
    test_ratio: float = 0.6  # a line stops nearer than this x spacing to another line
    step_px: float = 0.5
    max_length_px: float = 1500.0
    min_length_px: float = 4.0
    structure_sigma_px: float = 2.0  # smoothing of the structure tensor
    gamma: float = 1.0  # darkness ** gamma before spacing
    link_gap_px: float = 3.0  # join line ends this close (a pen lift saved per join)
    # dark tones are laid denser than 1 / darkness, as 1 / (d (1 + overlap d^2)): lines
    # that are only nearly parallel leave slivers of paper between them, and a solid black
    # needs them to overlap a little
    overlap: float = 0.33


def orientation_field(grey: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit tangent (tx, ty) along the picture's structure: the structure tensor's minor
    eigenvector, smoothed at ``sigma`` px (cv2 Scharr gradients and Gaussian blur)."""
    import cv2

    g = grey.astype(np.float32)
    gx = cv2.Scharr(g, cv2.CV_32F, 1, 0) / 32.0
    gy = cv2.Scharr(g, cv2.CV_32F, 0, 1) / 32.0
    k = (0, 0)
    jxx = cv2.GaussianBlur(gx * gx, k, sigma)
    jyy = cv2.GaussianBlur(gy * gy, k, sigma)
    jxy = cv2.GaussianBlur(gx * gy, k, sigma)
    # flat regions have no preferred direction: let a wide blur decide there
    wide = 6.0 * sigma
    jxx += 0.05 * cv2.GaussianBlur(gx * gx, k, wide) + 1e-9
    jyy += 0.05 * cv2.GaussianBlur(gy * gy, k, wide)
    jxy += 0.05 * cv2.GaussianBlur(gx * gy, k, wide)
    angle = 0.5 * np.arctan2(2 * jxy, jxx - jyy) + np.pi / 2  # gradient angle + 90 degrees
    return np.cos(angle), np.sin(angle)


class _Occupancy:
    """Line points binned on a grid, to find the nearest point of another line."""

    def __init__(self, height: int, width: int, cell: float):
        self.cell = cell
        self.gw = int(math.ceil(width / cell)) + 1
        self.gh = int(math.ceil(height / cell)) + 1
        self.bins: dict[int, list[tuple[float, float, int]]] = {}

    def add(self, x: float, y: float, line: int) -> None:
        key = int(y / self.cell) * self.gw + int(x / self.cell)
        self.bins.setdefault(key, []).append((x, y, line))

    def clear_of(self, x: float, y: float, radius: float, line: int) -> bool:
        """True when no point of another line lies within ``radius``."""
        r2 = radius * radius
        c = self.cell
        cx0, cx1 = int((x - radius) / c), int((x + radius) / c)
        cy0, cy1 = int((y - radius) / c), int((y + radius) / c)
        bins = self.bins
        for cy in range(max(cy0, 0), min(cy1, self.gh - 1) + 1):
            row = cy * self.gw
            for cx in range(max(cx0, 0), min(cx1, self.gw - 1) + 1):
                for px, py, owner in bins.get(row + cx, ()):
                    if owner != line and (px - x) ** 2 + (py - y) ** 2 < r2:
                        return False
        return True


class _Tracer:
    def __init__(self, darkness: np.ndarray, tangent: tuple[np.ndarray, np.ndarray],
                 settings: StreamlineSettings):
        self.s = settings
        self.h, self.w = darkness.shape
        d = np.clip(darkness, 0.0, 1.0) ** settings.gamma
        dense = np.maximum(d * (1.0 + settings.overlap * d * d), 1e-9)
        sep = np.where(d > 1.0 / settings.max_spacing_px, 1.0 / dense, np.inf)
        self.sep = np.maximum(sep, settings.min_spacing_px / (1.0 + settings.overlap))
        self.tx, self.ty = tangent
        self.occ = _Occupancy(self.h, self.w, cell=max(settings.min_spacing_px, 2.0))

    def spacing(self, x: float, y: float) -> float:
        return float(self.sep[min(int(y + 0.5), self.h - 1), min(int(x + 0.5), self.w - 1)])

    def direction(self, x: float, y: float, prev: tuple[float, float]) -> tuple[float, float]:
        r, c = min(int(y + 0.5), self.h - 1), min(int(x + 0.5), self.w - 1)
        dx, dy = float(self.tx[r, c]), float(self.ty[r, c])
        if dx * prev[0] + dy * prev[1] < 0:  # the field is a line field: keep the heading
            dx, dy = -dx, -dy
        return dx, dy

    def inside(self, x: float, y: float) -> bool:
        return -0.5 <= x <= self.w - 0.5 and -0.5 <= y <= self.h - 0.5

    def valid(self, x: float, y: float, line: int, ratio: float) -> bool:
        if not self.inside(x, y):
            return False
        sep = self.spacing(x, y)
        return math.isfinite(sep) and self.occ.clear_of(x, y, ratio * sep, line)

    def half(self, x: float, y: float, heading: tuple[float, float], line: int,
             budget: float) -> list[tuple[float, float]]:
        """Points from (x, y) along ``heading`` (RK2 midpoint steps) until a stop."""
        pts: list[tuple[float, float]] = []
        step, ratio = self.s.step_px, self.s.test_ratio
        length = 0.0
        while length < budget:
            d1 = self.direction(x, y, heading)
            mx, my = x + 0.5 * step * d1[0], y + 0.5 * step * d1[1]
            if not self.inside(mx, my):
                break
            d2 = self.direction(mx, my, d1)
            nx, ny = x + step * d2[0], y + step * d2[1]
            if not self.valid(nx, ny, line, ratio):
                break
            x, y, heading = nx, ny, d2
            pts.append((x, y))
            length += step
        return pts

    def line_from(self, x: float, y: float, line: int) -> list[tuple[float, float]]:
        d = self.direction(x, y, (1.0, 0.0))
        budget = self.s.max_length_px / 2
        fwd = self.half(x, y, d, line, budget)
        back = self.half(x, y, (-d[0], -d[1]), line, budget)
        return back[::-1] + [(x, y)] + fwd


def trace_streamlines(darkness: np.ndarray, settings: StreamlineSettings | None = None,
                      *, grey: np.ndarray | None = None,
                      rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Streamlines (each an (n, 2) array of (x, y) pixel points, 1 px apart) laying
    ``darkness`` (H, W in [0, 1]) with 1-px lines. Deterministic for a given ``rng``."""
    s = settings or StreamlineSettings()
    rng = rng or np.random.default_rng(0)
    src = 1.0 - darkness if grey is None else grey
    tracer = _Tracer(darkness, orientation_field(src, s.structure_sigma_px), s)
    lines: list[np.ndarray] = []
    # fallback seeds: every pixel dark enough for a line, darkest first (ties shuffled)
    ys, xs = np.nonzero(np.isfinite(tracer.sep))
    order = np.lexsort((rng.random(len(xs)), tracer.sep[ys, xs]))
    fallback = iter(zip(xs[order].tolist(), ys[order].tolist(), strict=True))
    queue: deque[tuple[float, float]] = deque()
    while True:
        if queue:
            sx, sy = queue.popleft()
        else:
            nxt = next(fallback, None)
            if nxt is None:
                break
            sx, sy = float(nxt[0]), float(nxt[1])
        lid = len(lines)
        if not tracer.valid(sx, sy, lid, 1.0):
            continue
        pts = tracer.line_from(sx, sy, lid)
        if (len(pts) - 1) * s.step_px < s.min_length_px:
            continue
        arr = np.asarray(pts)[::2] if len(pts) > 2 else np.asarray(pts)  # 1 px apart
        if len(pts) % 2 == 0:
            arr = np.vstack([arr, pts[-1]])
        for x, y in pts:
            tracer.occ.add(x, y, lid)
        lines.append(arr)
        _seed_beside(arr, tracer, queue)
    return link_ends(lines, s.link_gap_px)


def _seed_beside(line: np.ndarray, tracer: _Tracer, queue: deque) -> None:
    """Queue seeds one spacing to either side of ``line`` (Jobard-Lefer's neighbour seeds)."""
    if len(line) < 2:
        return
    tangents = np.gradient(line, axis=0)
    norms = np.linalg.norm(tangents, axis=1, keepdims=True)
    normals = np.stack([-tangents[:, 1], tangents[:, 0]], 1) / np.maximum(norms, 1e-9)
    for i in range(0, len(line), 3):
        x, y = line[i]
        sep = tracer.spacing(x, y)
        if not math.isfinite(sep):
            continue
        for sign in (1.0, -1.0):
            queue.append((x + sign * sep * normals[i, 0], y + sign * sep * normals[i, 1]))


def link_ends(lines: list[np.ndarray], max_gap_px: float) -> list[np.ndarray]:
    """Join lines whose ends lie within ``max_gap_px`` of each other, nearest pairs first,
    drawing the gap: each join saves a pen lift for a few pixels of ink. (vpype's
    linemerge does this for page polylines; here it runs on canvas pixels before the
    refinement, so the optimiser sees and corrects the joins.)"""
    from scipy.spatial import cKDTree

    if len(lines) < 2 or max_gap_px <= 0:
        return list(lines)
    ends = np.array([p for line in lines for p in (line[0], line[-1])])
    pairs = cKDTree(ends).query_pairs(max_gap_px, output_type="ndarray")
    if len(pairs) == 0:
        return list(lines)
    gaps = np.linalg.norm(ends[pairs[:, 0]] - ends[pairs[:, 1]], axis=1)
    # union of chains: each line has two free ends; a join uses one end of each of two
    # different chains
    nxt: dict[int, int] = {}  # end index -> the end it is joined to
    chain = list(range(len(lines)))  # union-find over lines

    def root(i: int) -> int:
        while chain[i] != i:
            chain[i] = chain[chain[i]]
            i = chain[i]
        return i

    for a, b in pairs[np.argsort(gaps, kind="stable")].tolist():
        la, lb = a // 2, b // 2
        if a in nxt or b in nxt or root(la) == root(lb):
            continue
        nxt[a], nxt[b] = b, a
        chain[root(la)] = root(lb)
    out: list[np.ndarray] = []
    seen = [False] * len(lines)
    for line in range(len(lines)):
        if not seen[line]:
            out.append(_walk(lines, nxt, seen, _free_end(nxt, line)))
    return out


def _free_end(nxt: dict[int, int], line: int) -> int:
    """An end of ``line``'s chain with no join (chains are paths, never cycles)."""
    end = 2 * line
    while end in nxt:
        end = nxt[end] ^ 1
    return end


def _walk(lines, nxt, seen, end: int) -> np.ndarray:
    parts = []
    while True:
        i = end // 2
        seen[i] = True
        line = lines[i] if end % 2 == 0 else lines[i][::-1]
        parts.append(line)
        out_end = end ^ 1
        if out_end not in nxt:
            break
        end = nxt[out_end]
    return np.concatenate(parts)
