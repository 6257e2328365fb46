"""Motion/time model: how long the machine takes, from geometry, feeds and acceleration.

Each move follows a trapezoidal velocity profile (accelerate at ``a``, cruise at the feed,
decelerate), or a triangular one when it is too short to reach the feed. Pen-down polylines
are planned like GRBL's planner does: the speed through a corner is limited by the
junction-deviation model, and a backward and a forward pass make every entry/exit speed
reachable within ``a`` over the segment lengths. Travels and pen changes start and end at
rest (pen commands are full stops: GRBL spindle commands and Marlin's M400 wait for the
planner to empty).
"""

from __future__ import annotations

import numpy as np


def trapezoid_times(
    length: np.ndarray, v0: np.ndarray, v1: np.ndarray, v_max: float, accel: float
) -> np.ndarray:
    """Seconds per move: lengths (mm), entry/exit speeds (mm/s), cruise speed, acceleration.

    Assumes |v1^2 - v0^2| <= 2 a L (the planner's passes guarantee it).
    """
    length = np.asarray(length, dtype=np.float64)
    v0 = np.minimum(np.asarray(v0, dtype=np.float64), v_max)
    v1 = np.minimum(np.asarray(v1, dtype=np.float64), v_max)
    d_acc = (v_max**2 - v0**2) / (2 * accel)
    d_dec = (v_max**2 - v1**2) / (2 * accel)
    cruise = length - d_acc - d_dec
    t_trap = (v_max - v0) / accel + (v_max - v1) / accel + np.maximum(cruise, 0) / v_max
    vp = np.sqrt(np.maximum((2 * accel * length + v0**2 + v1**2) / 2, 0))
    vp = np.maximum(vp, np.maximum(v0, v1))
    t_tri = (vp - v0) / accel + (vp - v1) / accel
    t = np.where(cruise >= 0, t_trap, t_tri)
    return np.where(length > 0, t, 0.0)


def rest_to_rest(length: np.ndarray, feed_mm_min: float, accel: float) -> np.ndarray:
    """Seconds for single moves that start and end at rest (travels)."""
    z = np.zeros_like(np.asarray(length, dtype=np.float64))
    return trapezoid_times(length, z, z, feed_mm_min / 60.0, accel)


def polyline_times(
    paths: list[np.ndarray], feed_mm_min: float, accel: float, junction_deviation: float
) -> list[np.ndarray]:
    """Seconds per segment for each pen-down path ((m+1, 2) points -> (m,) times).

    Every path starts and ends at rest. All paths are planned at once: with w = v^2 the
    backward pass w_i = min(J_i, w_{i+1} + 2 a L_i) has the closed form
    w_i = min_{k >= i}(J_k + 2 a S_k) - 2 a S_i (S = cumulative length), a reversed running
    minimum, and the forward pass likewise; the zero speed at path ends keeps paths apart.
    """
    if not paths:
        return []
    v_max = feed_mm_min / 60.0
    counts = np.array([len(p) for p in paths])
    pts = np.concatenate(paths).astype(np.float64)
    nodes = len(pts)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    last = starts + counts - 1
    seg = np.diff(pts, axis=0)  # (nodes-1, 2), includes the links between paths
    length = np.hypot(seg[:, 0], seg[:, 1])
    is_link = np.zeros(nodes - 1, dtype=bool)
    is_link[last[:-1]] = True  # from a path's last node to the next path's first
    length[is_link] = 0.0

    # junction speed^2 at interior nodes (GRBL: v^2 = a d sin(t/2) / (1 - sin(t/2)))
    w_j = np.full(nodes, v_max**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = seg / length[:, None]
    if nodes > 2:
        u_in, u_out = unit[:-1], unit[1:]
        with np.errstate(divide="ignore", invalid="ignore"):  # zero-length: NaN, stop there
            cos_theta = -(u_in * u_out).sum(axis=1)  # 1 = full reversal, -1 = straight on
            sin_half = np.sqrt(np.clip(0.5 * (1.0 - cos_theta), 0.0, 1.0))
            w = accel * junction_deviation * sin_half / (1.0 - sin_half)
        w = np.where(sin_half >= 0.999999, v_max**2, w)
        w = np.where(np.isfinite(w), np.minimum(w, v_max**2), 0.0)  # zero-length: stop
        w_j[1:-1] = w
    w_j[starts] = 0.0
    w_j[last] = 0.0

    s = np.r_[0.0, np.cumsum(length)]
    two_a = 2.0 * accel
    back = np.minimum.accumulate((w_j + two_a * s)[::-1])[::-1] - two_a * s
    fwd = np.minimum.accumulate(back - two_a * s) + two_a * s
    w = np.maximum(np.minimum(back, fwd), 0.0)
    v = np.sqrt(w)
    t = trapezoid_times(length, v[:-1], v[1:], v_max, accel)
    keep = ~is_link
    t = t[keep]
    per_path = counts - 1
    return np.split(t, np.cumsum(per_path)[:-1])
