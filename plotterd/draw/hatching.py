"""Parallel hatching whose density follows the tone (a drawing's start).

Lines run at ``angle_deg`` one nib (1 canvas px) apart; which of them carry ink at a point
is an ordered dither across the lines: with ``levels`` = 4, every 4th line inks where the
darkness passes 1/8, every 2nd past 3/8, three in four past 5/8 and all of them (a solid
fill) past 7/8. So the lines' coverage is the tone quantised to ``levels`` steps, at line
pitches fine enough (at most ``levels`` nibs) that the eye sees tone rather than lines.
Where a tone boundary cuts a line, it lifts; neighbouring ends are then joined (as
streamlines are) to save lifts.

With ``cross``, tones past ``cross_tone`` are laid by two crossing layers (the second at
``angle_deg`` + 90) instead of one denser layer: two layers of coverage a and b cover
1 - (1 - a)(1 - b), so 75 % is every 2nd line both ways (nib-sized holes every 2 nibs,
which a view at arm's length averages away) rather than three lines in four (a missing
line every 4 nibs, 1.2 mm: a texture it resolves). Tone in light needs such coverage
through all the mid-tones. Past ``fine_tone`` the crossed dither would leave nib-wide holes
on a grid 2-4 nibs wide (three lines in four both ways at 15/16: white dots every 1.2 mm),
so with ``fine_tone`` those steps are laid by one layer at a pitch of nib / coverage
(15/16: 1.07 nibs, slivers of paper 0.02 mm wide every 0.32 mm), or with ``fine_cross`` by
two crossing layers at a pitch finer than the dither's (holes 0.1 mm wide every 0.4 mm).

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
    # a solid black (tone at least solid_tone) is laid at solid_pitch_px, a little under one
    # nib: lines exactly one nib apart leave slivers of half-covered paper between them (and
    # any refinement opens them wider), which a 1.5 mm blur still shows as grey; a black
    # region's tone SSIM is that sensitive (the horse's body: 0.31). solid_tone > 1: none
    solid_tone: float = 0.99
    solid_pitch_px: float = 0.85
    # the solid fill reaches this far from its core into tones at least half dark: out to a
    # black shape's edge (the horse's HaarPSI 0.806 -> 0.871); below 1: the core only
    solid_reach_px: float = 2.0
    # tones past cross_tone get a second, crossing layer (see the module's docstring)
    cross: bool = False
    cross_tone: float = 0.5
    # with cross, tones past fine_tone (0.8125: the steps above 3/4 short of full) are laid
    # at a pitch finer than the dither's holes (module docstring); > 1: none (the default:
    # on the tuning photos the paper loss preferred the crossed dither, docs/benchmarks.md)
    fine_tone: float = 2.0
    # the fine layer lays only dark zones at least fine_width_px wide, its step read from the
    # tone blurred by fine_blur_px: a thin dark feature (a tripod leg) or speckle would cut
    # its lines and the dither's into runs too short to draw, leaving paper at every zone
    # boundary; holes in a zone that narrow are no grid the eye sees anyway
    fine_width_px: float = 16.0
    fine_blur_px: float = 0.0
    # the fine layer as two crossing layers (of 1 - sqrt(1 - c) each), not one of c
    fine_cross: bool = False


def _bit_reversed(n: int) -> np.ndarray:
    """Order 0..n-1 so that every prefix is spread evenly (n a power of two)."""
    bits = max(1, int(math.log2(n)))
    return np.array([int(format(i, f"0{bits}b")[::-1], 2) for i in range(n)])


def hatch(darkness: np.ndarray, settings: HatchSettings | None = None) -> list[np.ndarray]:
    """Hatch lines (each (n, 2) of (x, y) canvas px) laying ``darkness`` (H, W in [0, 1])."""
    s = settings or HatchSettings()
    levels = 1 << max(0, round(math.log2(max(1, int(s.levels)))))
    h, w = darkness.shape
    theta = math.radians(s.angle_deg)
    solid = s.solid_tone <= 1.0
    fine = s.cross and s.fine_tone <= 1.0
    steps = coverage_steps(levels, s.cross, s.cross_tone)
    fine_top = (steps[-2] + steps[-1]) / 2  # the full step has no holes: the dither's
    zones = _fine_zones(darkness, s) if fine else darkness
    lines = []
    for angle, thresholds in zip((theta, theta + math.pi / 2),
                                 layer_thresholds(levels, s.cross, s.cross_tone),
                                 strict=False):
        xs, ys, tone = _sample_lines(darkness, angle, s.step_px, s.pitch_px)
        inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
        rank = _bit_reversed(levels)[np.arange(len(xs)) % levels]  # this line's dither rank
        ink = inside & (tone > thresholds[rank][:, None]) & ~(solid & (tone >= s.solid_tone))
        if fine:
            zone = _sample_lines(zones, angle, s.step_px, s.pitch_px)[2]
            ink &= (zone < s.fine_tone) | (zone >= fine_top)
        lines += _runs(xs, ys, ink, s.step_px, s.min_length_px)
    if fine:
        lines += _fine_lines(darkness, zones, s, steps)
    if solid:  # the solid black's own, denser lines
        xs, ys, tone = _sample_lines(_solid_field(darkness, s), theta, s.step_px,
                                     s.solid_pitch_px)
        inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
        lines += _runs(xs, ys, inside & (tone >= s.solid_tone), s.step_px, s.min_length_px)
    if s.contours:
        lines += tone_contours(darkness, levels, s.contour_blur_px, s.min_length_px)
    return link_ends(lines, s.link_gap_px)


def _cross_order(levels: int, cross_tone: float) -> tuple[list[tuple[int, int]], list[float]]:
    """The crossing layers' lines in the order they are added, as (layer, rank), and the
    coverage before the first and after each (two layers of a and b cover
    1 - (1 - a)(1 - b)): the first layer's until it covers ``cross_tone``, then the
    second's and the first's by turns, the second catching up first."""
    counts, order = [0, 0], []
    while counts[0] < levels:
        layer = 0 if counts[0] / levels < cross_tone or counts[1] == counts[0] else 1
        order.append((layer, counts[layer]))
        counts[layer] += 1
    covers = [0.0]
    done = [0, 0]
    for layer, _ in order:
        done[layer] += 1
        covers.append(1 - (1 - done[0] / levels) * (1 - done[1] / levels))
    return order, covers


def coverage_steps(levels: int, cross: bool, cross_tone: float) -> list[float]:
    """The coverages the hatch lays, lightest first (0 and 1 included)."""
    if not cross:
        return [k / levels for k in range(levels + 1)]
    return _cross_order(levels, cross_tone)[1]


def layer_thresholds(levels: int, cross: bool, cross_tone: float) -> list[np.ndarray]:
    """Per layer, the tone past which a line of each dither rank inks (one layer, or two
    with ``cross``); each threshold is half-way between the coverages before and after its
    line."""
    if not cross:
        return [(np.arange(levels) + 0.5) / levels]
    order, covers = _cross_order(levels, cross_tone)
    out = [np.full(levels, np.inf), np.full(levels, np.inf)]  # inf: never (covered already)
    for i, (layer, rank) in enumerate(order):
        out[layer][rank] = (covers[i] + covers[i + 1]) / 2
    return out


def _fine_zones(darkness: np.ndarray, s: HatchSettings) -> np.ndarray:
    """The (blurred) tone where the fine layer lays it, 0 elsewhere: the zones past
    ``fine_tone`` at least ``fine_width_px`` wide (a morphological opening)."""
    import cv2

    tone = darkness.astype(np.float32)
    if s.fine_blur_px > 0:
        tone = cv2.GaussianBlur(tone, (0, 0), s.fine_blur_px)
    mask = (tone >= s.fine_tone).astype(np.uint8)
    size = 2 * int(s.fine_width_px // 2) + 1  # odd: an even kernel shifts the opening
    if size > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    return np.where(mask.astype(bool), tone, 0.0)


def _fine_lines(darkness: np.ndarray, zones: np.ndarray, s: HatchSettings,
                steps: list[float]) -> list[np.ndarray]:
    """The steps past ``fine_tone`` short of full, each as one layer at pitch nib / coverage
    over the zones whose (blurred) tone rounds to it, grown by a nib into its neighbours'
    (two sets of lines overlap along a boundary rather than both stopping short of it); the
    solid black (by its own, unblurred tone) has its own lines."""
    import cv2

    h, w = darkness.shape
    theta = math.radians(s.angle_deg)
    fine = zones >= s.fine_tone
    free = (darkness < s.solid_tone) if s.solid_tone <= 1.0 else np.ones_like(fine)
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    lines = []
    for k in range(1, len(steps) - 1):  # the full step is the dither's (it has no holes)
        lo = max(s.fine_tone, (steps[k - 1] + steps[k]) / 2)
        hi = (steps[k] + steps[k + 1]) / 2
        step = ((zones >= lo) & (zones < hi)).astype(np.uint8)
        if lo >= hi or not step.any():
            continue
        step = (cv2.dilate(step, grow).astype(bool) & fine & free).astype(np.float32)
        # crossed: two layers of 1 - sqrt(1 - c) each cover c
        pitch = s.pitch_px / (1 - math.sqrt(1 - steps[k]) if s.fine_cross else steps[k])
        for angle in (theta, theta + math.pi / 2)[: 2 if s.fine_cross else 1]:
            xs, ys, here = _sample_lines(step, angle, s.step_px, pitch)
            inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
            lines += _runs(xs, ys, inside & (here >= 0.5), s.step_px, s.min_length_px)
    return lines


def _solid_field(darkness: np.ndarray, s: HatchSettings) -> np.ndarray:
    """The darkness with every pixel within ``solid_reach_px`` of a solid black that is at
    least half dark raised to 1: the solid fill then runs out to the shape's edge (the
    tone's half-way line; the outline runs just outside it), instead of stopping a pixel or two
    short and leaving a ragged band of dither ends and paper along it."""
    import cv2

    core = (darkness >= s.solid_tone).astype(np.uint8)
    r = int(s.solid_reach_px)
    if r < 1 or not core.any():
        return darkness
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    near = cv2.dilate(core, kernel).astype(bool) & (darkness >= 0.5)
    return np.where(near, 1.0, np.minimum(darkness, s.solid_tone - 1e-3))


def _sample_lines(darkness: np.ndarray, theta: float, step: float, pitch: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, tone), each (lines, samples): parallel lines at angle ``theta`` ``pitch``
    apart covering the canvas, sampled every ``step`` px, with the darkness along them."""
    import cv2

    h, w = darkness.shape
    ux, uy = math.cos(theta), math.sin(theta)  # along the lines
    vx, vy = -uy, ux  # across
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=np.float64)
    us, vs = corners @ [ux, uy], corners @ [vx, vy]
    u = np.arange(us.min(), us.max() + step, step)
    v = np.arange(vs.min(), vs.max() + pitch, pitch)
    xs = u[None, :] * ux + v[:, None] * vx
    ys = u[None, :] * uy + v[:, None] * vy
    tone = cv2.remap(darkness.astype(np.float32), xs.astype(np.float32),
                     ys.astype(np.float32), cv2.INTER_LINEAR, borderValue=0.0)
    return xs, ys, tone


def _runs(xs: np.ndarray, ys: np.ndarray, ink: np.ndarray, step: float,
          min_length: float) -> list[np.ndarray]:
    """The inked runs of each sampled line, as 2-point lines (a run is straight: its ends)."""
    lines = []
    for k in range(len(xs)):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], ink[k].astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            if (b - 1 - a) * step >= min_length:
                lines.append(np.array([[xs[k, a], ys[k, a]], [xs[k, b - 1], ys[k, b - 1]]]))
    return lines


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
