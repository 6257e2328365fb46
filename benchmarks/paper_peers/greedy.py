"""Baseline: greedy darkest-line squiggles, in the style of DrawingBotV3's "sketch" path finder.

1. find the darkest region (8 x 8 px blocks of the residual darkness), then its darkest pixel;
2. from the current point, try ``ANGLES`` directions and take the segment whose pixels are
   darkest on average;
3. lighten the pixels under it by the ink one nib lays there;
4. continue from its end until ``SQUIGGLE_SEGMENTS`` segments or no dark direction is left,
   then lift the pen and go back to 1.

It works at 1 px = 1 nib, so one segment of L px lays L px of ink; it stops when it has laid
the ink the photo needs (darkness x area / nib) or nothing dark is left. Written here (no
library implements it) in numpy: each step scores all directions at once.
"""

from __future__ import annotations

import time

import numpy as np

from .paper_test import NIB_MM, Drawing, Photo, clip_to_box, order_for_plotting

ANGLES = 32
SQUIGGLE_SEGMENTS = 60
SEGMENT_NIB = (6, 12)  # segment length in nib widths: the settings tried per photo
STOP_DARKNESS = 0.08  # a squiggle ends when its best direction is lighter than this
BLOCK = 8


def available() -> str | None:
    return None


def settings(quick: bool) -> list[int]:
    return [SEGMENT_NIB[1]] if quick else list(SEGMENT_NIB)


class _Residual:
    """Residual darkness at 1 px = 1 nib, with the darkest-region search."""

    def __init__(self, dark: np.ndarray):
        self.r = dark.astype(np.float32).copy()
        self.h, self.w = self.r.shape

    def darkest(self) -> tuple[np.ndarray, float]:
        hb, wb = -(-self.h // BLOCK), -(-self.w // BLOCK)
        pad = np.zeros((hb * BLOCK, wb * BLOCK), np.float32)
        pad[: self.h, : self.w] = self.r
        blocks = pad.reshape(hb, BLOCK, wb, BLOCK).mean(axis=(1, 3))
        bi, bj = np.unravel_index(int(np.argmax(blocks)), blocks.shape)
        cell = self.r[bi * BLOCK:(bi + 1) * BLOCK, bj * BLOCK:(bj + 1) * BLOCK]
        ci, cj = np.unravel_index(int(np.argmax(cell)), cell.shape)
        y, x = bi * BLOCK + ci, bj * BLOCK + cj
        return np.array([x + 0.5, y + 0.5]), float(blocks[bi, bj])


def _squiggle(res: _Residual, start: np.ndarray, seg_px: int, dirs: np.ndarray,
              steps: np.ndarray) -> list[np.ndarray]:
    pts = [start]
    here = start
    for _ in range(SQUIGGLE_SEGMENTS):
        # (ANGLES, seg_px, 2) sample points of every candidate segment
        cand = here[None, None, :] + dirs[:, None, :] * steps[None, :, None]
        xi = np.floor(cand[..., 0]).astype(np.int64)
        yi = np.floor(cand[..., 1]).astype(np.int64)
        inside = (xi >= 0) & (xi < res.w) & (yi >= 0) & (yi < res.h)
        vals = np.where(inside, res.r[np.clip(yi, 0, res.h - 1), np.clip(xi, 0, res.w - 1)],
                        -1.0)
        score = np.where(inside.all(axis=1), vals.mean(axis=1), -1.0)
        best = int(np.argmax(score))
        if score[best] < STOP_DARKNESS:
            break
        np.subtract.at(res.r, (yi[best], xi[best]), 1.0)  # one nib of ink per px
        here = cand[best, -1]
        pts.append(here)
    return pts


def draw(photo: Photo, segment_nib: int) -> Drawing:
    dark = 1.0 - photo.at(1.0 / NIB_MM)
    budget_px = photo.ink_needed_mm() / NIB_MM
    t0 = time.perf_counter()
    res = _Residual(dark)
    theta = np.arange(ANGLES) * (2 * np.pi / ANGLES)
    dirs = np.column_stack([np.cos(theta), np.sin(theta)])
    steps = np.arange(1, segment_nib + 1, dtype=np.float64)
    lines: list[np.ndarray] = []
    laid = 0.0
    while laid < budget_px:
        start, region = res.darkest()
        if region < STOP_DARKNESS:
            break
        pts = _squiggle(res, start, segment_nib, dirs, steps)
        if len(pts) < 2:
            res.r[int(start[1]), int(start[0])] = 0.0  # nowhere to go from there
            continue
        lines.append(np.asarray(pts))
        laid += (len(pts) - 1) * segment_nib
    scale = np.array([photo.box.width_mm / res.w, photo.box.height_mm / res.h])
    out = order_for_plotting(clip_to_box([ln * scale for ln in lines], photo.box))
    return Drawing(out, f"segment {segment_nib} nib", time.perf_counter() - t0,
                   {"squiggles": len(lines)})
