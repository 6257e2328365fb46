"""Parallel hatching whose density follows the tone (a drawing's start).

Lines run at ``angle_deg`` one nib (1 canvas px) apart; which of them carry ink at a point
is an ordered dither across the lines: with ``levels`` = 4, every 4th line inks where the
darkness passes 1/8, every 2nd past 3/8, three in four past 5/8 and all of them (a solid
fill) past 7/8. So the lines' coverage is the tone quantised to ``levels`` steps, at line
pitches fine enough (at most ``levels`` nibs) that the eye sees tone rather than lines.
Where a tone boundary cuts a line, it lifts; neighbouring ends are then joined (as
streamlines are) to save lifts.

The hatched package does this with 3 fixed thresholds and one pitch per zone through
shapely; this version quantises per pixel along each line, in numpy, and gives the
optimiser a start it can refine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from plotterd.draw.streamlines import link_ends

__all__ = ["HatchSettings", "hatch"]


@dataclass(frozen=True)
class HatchSettings:
    angle_deg: float = 45.0
    levels: int = 4  # tone steps; also the widest pitch in nibs
    pitch_px: float = 1.0  # spacing of the finest hatch (1 nib)
    min_length_px: float = 2.0
    link_gap_px: float = 2.5
    step_px: float = 1.0  # sampling along a line
    # outline every tone step's boundary (its iso-line), so edges are drawn crisp rather
    # than left to the ragged ends of the hatch lines; 0 = no outlines
    contours: int = 1
    contour_blur_px: float = 1.0  # smoothing of the tone before tracing its iso-lines


def _bit_reversed(n: int) -> np.ndarray:
    """Order 0..n-1 so that every prefix is spread evenly (n a power of two)."""
    bits = max(1, int(math.log2(n)))
    return np.array([int(format(i, f"0{bits}b")[::-1], 2) for i in range(n)])


def hatch(darkness: np.ndarray, settings: HatchSettings | None = None) -> list[np.ndarray]:
    """Hatch lines (each (n, 2) of (x, y) canvas px) laying ``darkness`` (H, W in [0, 1])."""
    import cv2

    s = settings or HatchSettings()
    levels = 1 << max(0, round(math.log2(max(1, int(s.levels)))))
    h, w = darkness.shape
    theta = math.radians(s.angle_deg)
    ux, uy = math.cos(theta), math.sin(theta)  # along the lines
    vx, vy = -uy, ux  # across
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=np.float64)
    us, vs = corners @ [ux, uy], corners @ [vx, vy]
    u = np.arange(us.min(), us.max() + s.step_px, s.step_px)
    v = np.arange(vs.min(), vs.max() + s.pitch_px, s.pitch_px)
    xs = u[None, :] * ux + v[:, None] * vx
    ys = u[None, :] * uy + v[:, None] * vy
    inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    tone = cv2.remap(darkness.astype(np.float32), xs.astype(np.float32),
                     ys.astype(np.float32), cv2.INTER_LINEAR, borderValue=0.0)
    rank = _bit_reversed(levels)[np.arange(len(v)) % levels]  # this line's dither rank
    threshold = (rank[:, None] + 0.5) / levels
    ink = inside & (tone > threshold)
    lines = []
    for k in range(len(v)):
        row = ink[k].astype(np.int8)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row, [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            if (b - 1 - a) * s.step_px >= s.min_length_px:  # a run is straight: its ends
                lines.append(np.array([[xs[k, a], ys[k, a]], [xs[k, b - 1], ys[k, b - 1]]]))
    if s.contours:
        lines += tone_contours(darkness, levels, s.contour_blur_px, s.min_length_px)
    return link_ends(lines, s.link_gap_px)


def tone_contours(darkness: np.ndarray, levels: int, blur_px: float,
                  min_length_px: float) -> list[np.ndarray]:
    """Iso-lines of the (lightly blurred) tone where the hatch starts, as polylines."""
    import cv2

    tone = darkness.astype(np.float32)
    if blur_px > 0:
        tone = cv2.GaussianBlur(tone, (0, 0), blur_px)
    out = []
    # the lightest step's iso-line only: at a sharp edge every step's line falls on the
    # same place, and one outline is what an engraver draws
    for level in (0.5 / levels,):
        mask = (tone > level).astype(np.uint8)
        found, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        for c in found:
            poly = cv2.approxPolyDP(c, 0.5, True).reshape(-1, 2).astype(np.float64)
            if len(poly) < 2:
                continue
            poly = np.vstack([poly, poly[:1]])  # closed
            if np.linalg.norm(np.diff(poly, axis=0), axis=1).sum() >= min_length_px:
                out.append(poly)
    return out
