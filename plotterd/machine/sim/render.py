"""Render what a simulated plotter drew (pen-down segments in mm) to PNG and SVG.

The PNG is drawn by the shared pen model (:mod:`plotterd.pen`): exact nib width, round caps
and saturating ink, the same renderer the paper benchmark and the preview use, so what the
simulated plotter shows is what that pen lays on paper."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from plotterd.pen import DrawingBox, PenModel, RoundNib


def _chains(segments, x0: float, y1: float) -> list[np.ndarray]:
    """Segments (machine mm, +Y up) -> polylines in box mm (origin top-left, y down), joining
    consecutive segments that continue one another (fewer, longer paths to rasterise)."""
    paths: list[list[tuple[float, float]]] = []
    last = None
    for sx, sy, ex, ey in segments:
        a = (sx - x0, y1 - sy)
        b = (ex - x0, y1 - ey)
        if last is not None and last == (sx, sy):
            paths[-1].append(b)
        else:
            paths.append([a, b])
        last = (ex, ey)
    return [np.asarray(p, dtype=np.float64) for p in paths]


def _render_png(paths: list[np.ndarray], bed: DrawingBox, pen: PenModel, px_per_mm: float,
                supersample: int) -> np.ndarray:
    """The bed as uint8 grey; only the part the pen touched is rendered (finely: the pen
    model supersamples a thin nib), then placed on white."""
    w = max(1, round(bed.width_mm * px_per_mm))
    h = max(1, round(bed.height_mm * px_per_mm))
    img = np.full((h, w), 255, np.uint8)
    if not paths:
        return img
    pts = np.concatenate(paths)
    pad = pen.nib_mm + 1.0 / px_per_mm
    c0 = int(np.clip(np.floor((pts[:, 0].min() - pad) * px_per_mm), 0, w))
    r0 = int(np.clip(np.floor((pts[:, 1].min() - pad) * px_per_mm), 0, h))
    c1 = int(np.clip(np.ceil((pts[:, 0].max() + pad) * px_per_mm), c0 + 1, w))
    r1 = int(np.clip(np.ceil((pts[:, 1].max() + pad) * px_per_mm), r0 + 1, h))
    if c1 <= c0 or r1 <= r0:
        return img
    origin = np.array([c0, r0]) / px_per_mm
    part = DrawingBox((c1 - c0) / px_per_mm, (r1 - r0) / px_per_mm)
    grey = pen.render([p - origin for p in paths], part, px_per_mm, supersample=supersample)
    img[r0:r1, c0:c1] = np.clip(np.round(grey * 255.0), 0, 255).astype(np.uint8)
    return img


def render_segments(segments, bounds, path: str | Path, *, px_per_mm: float = 4.0,
                    pen: PenModel | None = None, pen_width_mm: float = 0.5,
                    supersample: int = 4) -> list[Path]:
    """Write ``<path>.png`` and ``<path>.svg`` (whatever suffix ``path`` has) and return both.

    ``pen`` draws the PNG (its ``nib_mm`` is the SVG's stroke width); without one, a
    :class:`~plotterd.pen.RoundNib` of ``pen_width_mm`` (the older keyword) does.

    The view is from above the bed with machine +Y pointing up the image (y_max at the top),
    as G-code senders show it; the G-code stage has already mapped the page's origin corner
    and axis inversion into machine coordinates, so the page appears the right way up."""
    pen = pen if pen is not None else RoundNib(nib_mm=float(pen_width_mm))
    path = Path(path)
    base = path.with_suffix("") if path.suffix.lower() in (".png", ".svg") else path
    base.parent.mkdir(parents=True, exist_ok=True)
    x0, y0, x1, y1 = bounds
    img = _render_png(_chains(segments, x0, y1), DrawingBox(x1 - x0, y1 - y0), pen,
                      px_per_mm, supersample)
    png = base.with_suffix(".png")
    if not cv2.imwrite(str(png), img):
        raise OSError(f"{png}: cannot write PNG")
    svg = base.with_suffix(".svg")
    width = pen.nib_mm
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{x1 - x0:g}mm" '
        f'height="{y1 - y0:g}mm" viewBox="{x0:g} {y0:g} {x1 - x0:g} {y1 - y0:g}">',
        # flip y about the bed's centre so machine +Y points up, as in the PNG; the group's
        # opacity (not each stroke's) keeps crossings saturated, as the pen model's ink is
        f'<g transform="matrix(1 0 0 -1 0 {y0 + y1:g})" fill="none" stroke="black" '
        f'opacity="{pen.darkness:g}" stroke-width="{width:g}" stroke-linecap="round">',
    ]
    for sx, sy, ex, ey in segments:
        parts.append(f'<line x1="{sx:.3f}" y1="{sy:.3f}" x2="{ex:.3f}" y2="{ey:.3f}"/>')
    parts.append("</g></svg>\n")
    svg.write_text("\n".join(parts))
    return [png, svg]
