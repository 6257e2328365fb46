"""A structure start for the optimiser, judged through the pen model.

The strategies of :mod:`plotterd.draw.inits` give polylines in canvas pixels; this module
turns them into the optimiser's groups (N x K tensors, bucketed by length) and scores a set
of polylines the way the paper will show them: drawn by the pipeline's pen model
(hard-edged nib, saturating ink) at the canvas resolution, then measured with the
pipeline's loss. The Gaussian raster the optimiser differentiates is a smooth stand-in for
that nib, and a step that helps the stand-in can hurt the paper; so ``init: auto`` starts
from whichever strategy draws best on paper, and the optimiser keeps its refinement only
if the paper agrees (:func:`paper_loss`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from plotterd.draw.inits import make_start, plot_minutes, polylines_length
from plotterd.pen import DrawingBox
from plotterd.pipeline import AUTO_CANDIDATES, Pipeline

__all__ = ["paper_loss", "pick_start", "to_buckets", "render_on_paper", "held_points"]

# control points per polyline: a ladder of sizes, so lines of similar length share a group
# (the rasteriser takes N x K tensors) with little padding
POLYLINE_SIZES = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768,
                  1024)
# a control point about every this many pixels: fine enough to bend, coarse enough to be fast
POLYLINE_STEP_PX = 1.5


def _subdivisions(line: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Segment lengths, and pieces per segment so no piece is much longer than ``step``."""
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    return seg, np.maximum(1, np.ceil(seg / step - 1e-9)).astype(int)


def resample(line: np.ndarray, k: int, step: float = POLYLINE_STEP_PX) -> np.ndarray:
    """``k`` points along ``line`` (n, 2) that keep every vertex (a hatch's zigzag keeps its
    corners) and cut its segments into pieces of about ``step``; points left over to reach
    ``k`` go to the longest pieces."""
    seg, pieces = _subdivisions(line, step)
    for _ in range(k - 1 - int(pieces.sum())):  # few: k is the next size on the ladder
        i = int(np.argmax(seg / pieces))
        pieces[i] += 1
    out = [line[:1]]
    for i, m in enumerate(pieces):
        t = (np.arange(1, m + 1) / m)[:, None]
        out.append(line[i] + t * (line[i + 1] - line[i]))
    pts = np.concatenate(out)
    if len(pts) < k:  # a single point
        pts = np.vstack([pts, np.repeat(pts[-1:], k - len(pts), 0)])
    return pts[:k]


def _simplified(line: np.ndarray, tolerance_px: float = 0.2) -> np.ndarray:
    """Drop vertices within ``tolerance_px`` of the line (shapely's Douglas-Peucker)."""
    import shapely

    if len(line) <= 2:
        return line
    pts = np.asarray(shapely.LineString(line).simplify(tolerance_px,
                                                       preserve_topology=False).coords)
    return pts if len(pts) >= 2 else line[[0, -1]]


def to_buckets(lines: list[np.ndarray]) -> dict[int, list[np.ndarray]]:
    """Polylines resampled onto the size ladder, keyed by size; one longer than the
    largest size is cut into pieces (one more pen lift each)."""
    buckets: dict[int, list[np.ndarray]] = {}
    largest = POLYLINE_SIZES[-1]
    for raw in lines:
        line = _simplified(np.asarray(raw, dtype=np.float64))
        want = max(2, int(_subdivisions(line, POLYLINE_STEP_PX)[1].sum()) + 1)
        parts = [line] if want <= largest else [
            p for p in (resample(line, want)[a: a + largest]
                        for a in range(0, want - 1, largest - 1)) if len(p) >= 2]
        for part in parts:
            need = want if part is line else len(part)
            k = next(c for c in POLYLINE_SIZES if c >= need)
            buckets.setdefault(k, []).append(resample(part, k))
    return buckets


# the pen's drawing is made at this many pixels per nib, then area-averaged to the canvas:
# centre lines are rasterised to whole pixels, and at 4 per nib (0.075 mm at a 0.3 mm nib)
# that quantisation opens and closes the slivers between one-nib hatch lines, which the
# refinement would learn to exploit; at 8 it agrees with a 40 px/mm render to within 0.01
PAPER_SUPERSAMPLE = 8


def render_on_paper(lines_px: list[np.ndarray], height: int, width: int,
                    pipeline: Pipeline, supersample: int = PAPER_SUPERSAMPLE) -> torch.Tensor:
    """(1, 1, H, W) of ``lines_px`` (canvas px) drawn by the pipeline's pen at the canvas
    resolution (1 px = 1 nib), supersampled, as the loss reads it: the page's reflectance
    (tone: pixel), or 1 - coverage (tone: light, where the loss applies the pen's
    darkness itself, so the smooth raster and the pen's page share one scale)."""
    pen = pipeline.pen_model
    nib = pen.nib_mm
    box = DrawingBox(width * nib, height * nib)
    page = pen.render([(p + 0.5) * nib for p in lines_px], box, 1.0 / nib,
                      supersample=supersample)
    if pipeline.tone == "light":
        page = 1.0 - (1.0 - page) / pen.darkness
    return torch.from_numpy(np.ascontiguousarray(page, dtype=np.float32))[None, None]


@torch.no_grad()
def paper_loss(loss_fn, lines_px: list[np.ndarray], target: torch.Tensor,
               pipeline: Pipeline) -> float:
    """The pipeline's loss of ``lines_px`` as the pen draws them on paper."""
    h, w = target.shape[-2:]
    image = render_on_paper(lines_px, h, w, pipeline).to(target.device)
    return float(loss_fn(image))


def pick_start(pipeline: Pipeline, target: torch.Tensor, loss_fn, loss_for=None
               ) -> tuple[dict[int, list[np.ndarray]], dict[int, np.ndarray], dict[str, Any]]:
    """The pipeline's start (or, for ``init: auto``, the candidate that draws best on
    paper) as size buckets, the points the refinement holds (:func:`held_points`), and what
    to record about it. ``target`` is 1 - the coverage the photo needs; ``loss_for(scale)``,
    when given, is the loss whose target follows an ink cap's tone scale (each candidate is
    judged against the tones its own cap leaves it), else ``loss_fn`` judges them all."""
    darkness = (1.0 - target.detach().to("cpu", torch.float64).mean(1)[0]).clamp(0, 1).numpy()
    nib = pipeline.pen_model.nib_mm
    names = AUTO_CANDIDATES if pipeline.init == "auto" else (pipeline.init,)
    tried: dict[str, float] = {}
    best = None
    for name in names:
        options = (pipeline.init_options.get(name, {}) if pipeline.init == "auto"
                   else pipeline.init_options)
        start = make_start(name, darkness, options, pipeline.ink, nib, pipeline.seed)
        buckets = to_buckets(start.lines)
        judge = loss_fn if loss_for is None else loss_for(start.tone_scale)
        score = paper_loss(judge, [p for b in buckets.values() for p in b], target, pipeline)
        tried[name] = round(score, 6)
        if best is None or score < best[0]:
            best = (score, name, start, buckets)
    assert best is not None
    score, name, start, buckets = best
    options = (pipeline.init_options.get(name, {}) if pipeline.init == "auto"
               else pipeline.init_options)
    holds = held_points(buckets, darkness, float(options.get("hold_darkness", 2.0)))
    info = {
        "init": name,
        "init_paper_loss": round(score, 6),
        "init_candidates": tried if len(tried) > 1 else None,
        "init_strokes": len(start.lines),
        "init_ink_mm": round(polylines_length(start.lines) * nib, 1),
        "ink_needed_mm": round(start.needed_px * nib, 1),
        # the start's ink against what the tone asks for (1 when no cap binds, or the cap's
        # tone scale when one does)
        "init_ink_ratio": round(polylines_length(start.lines) / max(start.needed_px, 1e-9), 3),
        "init_plot_minutes": round(plot_minutes(start.lines, nib, pipeline.ink), 2),
        "tone_scale": round(start.tone_scale, 4),
        "held_points": int(sum(int(h.sum()) for h in holds.values())),
    }
    return buckets, holds, info


# a point is deep inside a tone when every pixel within this radius is that dark: nearer an
# edge, the refinement may still move it to draw the edge
HOLD_RADIUS_PX = 2


def held_points(buckets: dict[int, list[np.ndarray]], darkness: np.ndarray,
                hold_darkness: float) -> dict[int, np.ndarray]:
    """Per bucket, an (N, K) mask of the control points the refinement holds: those whose
    every pixel within HOLD_RADIUS_PX is at least ``hold_darkness`` dark (a solid fill)."""
    import cv2

    h, w = darkness.shape
    size = 2 * HOLD_RADIUS_PX + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    # pixels beyond the canvas count as paper, so the picture's border is an edge too
    deep = cv2.erode(darkness.astype(np.float32), kernel, borderType=cv2.BORDER_CONSTANT,
                     borderValue=0.0) >= hold_darkness
    out = {}
    for k, lines in buckets.items():
        pts = np.stack(lines)
        cols = np.clip(np.round(pts[..., 0]).astype(int), 0, w - 1)
        rows = np.clip(np.round(pts[..., 1]).astype(int), 0, h - 1)
        out[k] = deep[rows, cols]
    return out


def buckets_to_world(buckets: dict[int, list[np.ndarray]], offset: tuple[float, float],
                     scale: float) -> list[tuple[int, torch.Tensor]]:
    """(K, (N, K, 2) float32 world points) per bucket, smallest K first."""
    out = []
    for k in sorted(buckets):
        px = torch.tensor(np.stack(buckets[k]), dtype=torch.float64)
        world = (px - torch.tensor(offset, dtype=torch.float64)) / scale
        out.append((k, world.float()))
    return out


def replace_count(spec, n: int, k: int):
    return dataclasses.replace(spec, count=n, control_points=k)

