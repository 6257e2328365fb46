"""Render what a simulated plotter drew (pen-down segments in mm) to PNG (opencv) and SVG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def render_segments(segments, bounds, path: str | Path, *, px_per_mm: float = 4.0,
                    pen_width_mm: float = 0.5) -> list[Path]:
    """Write ``<path>.png`` and ``<path>.svg`` (whatever suffix ``path`` has) and return both.

    The view is from above the bed with machine +Y pointing up the image (y_max at the top),
    as G-code senders show it; the G-code stage has already mapped the page's origin corner
    and axis inversion into machine coordinates, so the page appears the right way up."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix.lower() in (".png", ".svg") else path
    base.parent.mkdir(parents=True, exist_ok=True)
    x0, y0, x1, y1 = bounds
    w = max(1, int(round((x1 - x0) * px_per_mm)))
    h = max(1, int(round((y1 - y0) * px_per_mm)))
    img = np.full((h, w), 255, np.uint8)
    thick = max(1, int(round(pen_width_mm * px_per_mm)))
    shift = 4  # sub-pixel precision for cv2.line
    scale = px_per_mm * (1 << shift)
    for sx, sy, ex, ey in segments:
        p = (int(round((sx - x0) * scale)), int(round((y1 - sy) * scale)))
        q = (int(round((ex - x0) * scale)), int(round((y1 - ey) * scale)))
        cv2.line(img, p, q, 0, thick, cv2.LINE_AA, shift)
    png = base.with_suffix(".png")
    if not cv2.imwrite(str(png), img):
        raise OSError(f"{png}: cannot write PNG")
    svg = base.with_suffix(".svg")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{x1 - x0:g}mm" '
        f'height="{y1 - y0:g}mm" viewBox="{x0:g} {y0:g} {x1 - x0:g} {y1 - y0:g}">',
        # flip y about the bed's centre so machine +Y points up, as in the PNG
        f'<g transform="matrix(1 0 0 -1 0 {y0 + y1:g})" fill="none" stroke="black" '
        f'stroke-width="{pen_width_mm:g}" stroke-linecap="round">',
    ]
    for sx, sy, ex, ey in segments:
        parts.append(f'<line x1="{sx:.3f}" y1="{sy:.3f}" x2="{ex:.3f}" y2="{ey:.3f}"/>')
    parts.append("</g></svg>\n")
    svg.write_text("\n".join(parts))
    return [png, svg]
