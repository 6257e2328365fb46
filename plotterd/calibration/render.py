"""The calibration sheet as a given pen lays it: linear reflectance of the whole paper.

Used for the preview, and as the simulated plotter's page that the simulated camera
photographs (with a *true* pen that differs from the nominal one, to test the fit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from plotterd.calibration.sheet import sheet_paths
from plotterd.light import np_srgb_to_linear
from plotterd.pen import DrawingBox, PenModel

__all__ = ["render_sheet", "ink_reflectance"]


def ink_reflectance(pen: PenModel, colour: str | None = None) -> np.ndarray:
    """Solid ink's linear RGB reflectance relative to paper: the ``colour`` (#rrggbb, sRGB)
    if given, else a neutral grey of the pen's darkness."""
    if colour is None:
        return np.full(3, 1.0 - pen.darkness, np.float32)
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], np.float32) / 255.0
    return np_srgb_to_linear(rgb.reshape(1, 1, 3)).reshape(3)


def render_sheet(layout: dict[str, Any], pens: PenModel | Sequence[PenModel],
                 px_per_mm: float = 10.0, *, colours: Sequence[str | None] | None = None,
                 supersample: int = 4) -> np.ndarray:
    """(H, W, 3) float32 linear reflectance of the paper (1 = bare paper) with row ``r``
    drawn by ``pens[r]`` (one pen draws every row). Transparent inks multiply where they
    overlap. Only the sheet's box is rendered; the rest of the paper is bare."""
    rows = layout["rows"]
    pens = list(pens) if isinstance(pens, Sequence) else [pens] * len(rows)
    colours = list(colours) if colours is not None else [None] * len(rows)
    w_mm, h_mm = layout["paper_mm"]
    page = np.ones((round(h_mm * px_per_mm), round(w_mm * px_per_mm), 3), np.float32)
    x0, y0, x1, y1 = layout["sheet_mm"]
    # whole pixels: the box starts on the page's pixel grid
    c0, r0 = int(np.floor(x0 * px_per_mm)), int(np.floor(y0 * px_per_mm))
    c1, r1 = int(np.ceil(x1 * px_per_mm)) + 1, int(np.ceil(y1 * px_per_mm)) + 1
    box = DrawingBox((c1 - c0) / px_per_mm, (r1 - r0) / px_per_mm)
    origin = np.array([c0, r0]) / px_per_mm
    for r in range(len(rows)):
        pen = pens[r]
        grey = pen.render([p - origin for p in sheet_paths(layout, r)], box, px_per_mm,
                          supersample=supersample)
        covered = (1.0 - grey[: r1 - r0, : c1 - c0]) / pen.darkness
        ink = ink_reflectance(pen, colours[r])
        region = page[r0:r1, c0:c1]
        region *= 1.0 - covered[..., None] * (1.0 - ink)
    return page
