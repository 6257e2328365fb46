"""Sample stroke primitives into polylines to a chordal tolerance.

The curve definitions match the rasteriser's (plotterd.draw.primitives), evaluated here with
our own numpy code so the vector stage does not need torch:

- ``point``: one control point; returned as a two-vertex, zero-length line ``[p, p]`` (the
  G-code writer turns it into a dot: pen down and up at that position).
- ``line``: the segment P0-P1. ``polyline``: straight segments through P0..P_{K-1}.
- ``quadratic`` / ``cubic``: standard Bézier curves with 3 / 4 control points.
- ``catmull_rom``: centripetal (alpha = 0.5) Catmull-Rom through K >= 4 control points; the
  curve passes through P1..P_{K-2} (K-3 spans). Each span P_j..P_{j+1} uses the window
  P_{j-1}..P_{j+2} in Barry-Goldman form with knots
  t_{i+1} = t_i + (|P_{i+1}-P_i|^2 + 1e-12)^0.25, in world units (plotterd.draw.primitives).

Curves are sampled adaptively: every span starts with a few uniform parameter intervals and an
interval is halved while the curve at its 1/4, 1/2 and 3/4 parameters lies farther than the
tolerance from the interval's chord. All strokes of a group are refined together with
vectorised numpy, so 10 000 curves cost a handful of array passes, not a Python loop each.
"""

from __future__ import annotations

import numpy as np

# Added to squared control-point distances before the ** 0.25 so coincident control points
# give a finite curve: the rasteriser's guard (plotterd.draw.primitives.CATMULL_ROM_EPS).
CATMULL_ROM_EPS = 1e-12
INITIAL_INTERVALS = 4  # uniform intervals per span before refinement
MAX_DEPTH = 14  # halvings per initial interval (4 * 2**14 pieces: far below any tolerance)


def bezier(ctrl: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Evaluate Bézier curves. ctrl (M, K, 2) with K = 3 or 4, t (M,) -> (M, 2)."""
    t = t[:, None]
    s = 1.0 - t
    if ctrl.shape[1] == 3:
        return s * s * ctrl[:, 0] + 2 * s * t * ctrl[:, 1] + t * t * ctrl[:, 2]
    return (
        s * s * s * ctrl[:, 0]
        + 3 * s * s * t * ctrl[:, 1]
        + 3 * s * t * t * ctrl[:, 2]
        + t * t * t * ctrl[:, 3]
    )


def catmull_rom_knots(window: np.ndarray) -> np.ndarray:
    """Knots (M, 4) for windows (M, 4, 2): t0 = 0, t_{i+1} = t_i + (|dP|^2 + eps)^0.25."""
    d2 = (np.diff(window, axis=1) ** 2).sum(axis=2)  # (M, 3)
    steps = (d2 + CATMULL_ROM_EPS) ** 0.25
    return np.concatenate([np.zeros((len(window), 1)), np.cumsum(steps, axis=1)], axis=1)


def catmull_rom(window: np.ndarray, knots: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Evaluate a centripetal Catmull-Rom span (Barry-Goldman pyramid).

    window (M, 4, 2), knots (M, 4), u (M,) in [0, 1] over the span P1..P2 -> (M, 2).
    """
    t0, t1, t2, t3 = (knots[:, i : i + 1] for i in range(4))
    p0, p1, p2, p3 = (window[:, i] for i in range(4))
    t = t1 + u[:, None] * (t2 - t1)
    a1 = ((t1 - t) * p0 + (t - t0) * p1) / (t1 - t0)
    a2 = ((t2 - t) * p1 + (t - t1) * p2) / (t2 - t1)
    a3 = ((t3 - t) * p2 + (t - t2) * p3) / (t3 - t2)
    b1 = ((t2 - t) * a1 + (t - t0) * a2) / (t2 - t0)
    b2 = ((t3 - t) * a2 + (t - t1) * a3) / (t3 - t1)
    return ((t2 - t) * b1 + (t - t1) * b2) / (t2 - t1)


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    m = b - a
    mm = np.einsum("ij,ij->i", m, m)
    t = np.einsum("ij,ij->i", p - a, m) / np.where(mm > 0, mm, 1.0)
    t = np.clip(t, 0.0, 1.0)
    q = a + t[:, None] * m
    return np.linalg.norm(p - q, axis=1)


def _refine(evaluate, n_pieces: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive sampling of ``n_pieces`` parametric pieces over u in [0, 1].

    ``evaluate(piece_index (M,), u (M,)) -> (M, 2)``. Returns (piece (P,), points (P, 2)) with
    each piece's samples in parameter order, pieces in index order, both ends included.
    """
    k = INITIAL_INTERVALS
    piece = np.repeat(np.arange(n_pieces), k)
    u0 = np.tile(np.arange(k) / k, n_pieces)
    u1 = u0 + 1.0 / k
    p0 = evaluate(piece, u0)
    p1 = evaluate(piece, u1)
    done_piece, done_u, done_p = [], [], []
    for depth in range(MAX_DEPTH + 1):
        if len(piece) == 0:
            break
        du = u1 - u0
        err = np.zeros(len(piece))
        for f in (0.25, 0.5, 0.75):
            pm = evaluate(piece, u0 + f * du)
            err = np.maximum(err, _point_segment_distance(pm, p0, p1))
        split = err > tol if depth < MAX_DEPTH else np.zeros(len(piece), dtype=bool)
        keep = ~split
        done_piece.append(piece[keep])
        done_u.append(u0[keep])
        done_p.append(p0[keep])
        if not split.any():
            break
        sp, a, b, pa, pb = piece[split], u0[split], u1[split], p0[split], p1[split]
        um = 0.5 * (a + b)
        pm = evaluate(sp, um)
        piece = np.concatenate([sp, sp])
        u0 = np.concatenate([a, um])
        u1 = np.concatenate([um, b])
        p0 = np.concatenate([pa, pm])
        p1 = np.concatenate([pm, pb])
    # the end point of every piece (u = 1)
    ends = np.arange(n_pieces)
    done_piece.append(ends)
    done_u.append(np.ones(n_pieces))
    done_p.append(evaluate(ends, np.ones(n_pieces)))
    pc = np.concatenate(done_piece)
    uu = np.concatenate(done_u)
    pp = np.concatenate(done_p)
    order = np.lexsort((uu, pc))
    return pc[order], pp[order]


def sample_group(kind: str, points: np.ndarray, tol: float) -> list[np.ndarray]:
    """Sample N strokes of one kind: points (N, K, 2) -> list of N (M_i, 2) polylines.

    ``tol`` is the chordal tolerance in the units of ``points``.
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    if n == 0:
        return []
    if kind == "point":
        return [np.repeat(p, 2, axis=0) for p in points]
    if kind in ("line", "polyline"):
        return list(points)
    if kind in ("quadratic", "cubic"):

        def evaluate(idx: np.ndarray, u: np.ndarray) -> np.ndarray:
            return bezier(points[idx], u)

        piece, pts = _refine(evaluate, n, tol)
        bounds = np.searchsorted(piece, np.arange(1, n))
        return np.split(pts, bounds)
    if kind == "catmull_rom":
        k = points.shape[1]
        spans = k - 3
        # windows (N * spans, 4, 2): span j of stroke i uses P_j..P_{j+3}
        idx = np.arange(spans)[:, None] + np.arange(4)[None, :]
        windows = points[:, idx].reshape(n * spans, 4, 2)
        knots = catmull_rom_knots(windows)

        def evaluate(i: np.ndarray, u: np.ndarray) -> np.ndarray:
            return catmull_rom(windows[i], knots[i], u)

        piece, pts = _refine(evaluate, n * spans, tol)
        stroke = piece // spans
        # drop each span's first sample where it repeats the previous span's last one
        first_of_span = np.r_[True, piece[1:] != piece[:-1]]
        repeat = first_of_span & (piece % spans != 0)
        stroke, pts = stroke[~repeat], pts[~repeat]
        bounds = np.searchsorted(stroke, np.arange(1, n))
        return np.split(pts, bounds)
    raise ValueError(f"unknown stroke kind {kind!r}")
