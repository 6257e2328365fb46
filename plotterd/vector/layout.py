"""Paper sizes, orientation, margins, fit and centre; clipping to the drawable area.

Page coordinates follow vpype and SVG: CSS pixels (1/96 inch), origin at the paper's top-left
corner, y downwards. ``PX_PER_MM`` converts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
import vpype as vp

from plotterd.errors import ConfigError

PX_PER_MM = 96.0 / 25.4
ORIENTATIONS = ("portrait", "landscape", "auto")


def paper_size_px(paper: str, orientation: str, aspect: float | None) -> tuple[float, float]:
    """Paper (width, height) in px. ``aspect`` = drawing width / height, used by "auto"."""
    if orientation not in ORIENTATIONS:
        raise ConfigError(
            "page.orientation", f"{orientation!r} is not one of {', '.join(ORIENTATIONS)}"
        )
    try:
        w, h = vp.convert_page_size(str(paper).strip().lower())
    except (ValueError, TypeError) as e:
        known = ", ".join(s for s in vp.PAGE_SIZES if s != "tight")
        raise ConfigError(
            "page.paper", f"unknown paper {paper!r} (known: {known}, or WxH with a unit: 300x200mm)"
        ) from e
    if not (w > 0 and h > 0):
        raise ConfigError("page.paper", f"paper {paper!r} has no area")
    portrait = (min(w, h), max(w, h))
    landscape = (max(w, h), min(w, h))
    if orientation == "portrait":
        return portrait
    if orientation == "landscape":
        return landscape
    # auto: a custom size keeps the orientation it was given unless the drawing disagrees
    if aspect is None:
        return (w, h)
    return landscape if aspect > 1.0 else portrait


@dataclass(frozen=True)
class Placement:
    """page = offset + scale * (source - source_origin): uniform scale, no rotation."""

    scale: float  # page px per source unit
    source_origin: tuple[float, float]
    offset: tuple[float, float]
    area: tuple[float, float, float, float]  # drawable area in page px (x0, y0, x1, y1)

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) source coordinates -> (..., 2) page px."""
        o = np.asarray(self.source_origin)
        return (np.asarray(xy, dtype=np.float64) - o) * self.scale + np.asarray(self.offset)


def place(
    extent: tuple[float, float, float, float],
    page_px: tuple[float, float],
    margin_mm: float,
    fit: bool,
    center: bool,
    natural_scale: float,
) -> Placement:
    """Place a source rectangle ``extent`` (x0, y0, x1, y1) on the page.

    fit: scale to fill the drawable area, keeping aspect. Otherwise ``natural_scale``.
    center: centre in the drawable area; otherwise put at its top-left corner.
    """
    if not (np.isfinite(margin_mm) and margin_mm >= 0):
        raise ConfigError("page.margin_mm", f"must be >= 0, got {margin_mm!r}")
    pw, ph = page_px
    m = margin_mm * PX_PER_MM
    if 2 * m >= min(pw, ph):
        raise ConfigError(
            "page.margin_mm",
            f"{margin_mm} mm margins leave no drawable area on a "
            f"{pw / PX_PER_MM:.0f} x {ph / PX_PER_MM:.0f} mm page",
        )
    area = (m, m, pw - m, ph - m)
    aw, ah = pw - 2 * m, ph - 2 * m
    x0, y0, x1, y1 = extent
    sw, sh = max(x1 - x0, 0.0), max(y1 - y0, 0.0)
    if fit:
        candidates = [s for s in (aw / sw if sw > 0 else None, ah / sh if sh > 0 else None) if s]
        scale = min(candidates) if candidates else 1.0
    else:
        scale = natural_scale
    if center:
        offset = (m + (aw - sw * scale) / 2, m + (ah - sh * scale) / 2)
    else:
        offset = (m, m)
    return Placement(scale=scale, source_origin=(x0, y0), offset=offset, area=area)


def clip_lines(
    lines: list[np.ndarray], area: tuple[float, float, float, float]
) -> tuple[list[np.ndarray], list[int], float]:
    """Clip (M, 2) polylines to the rectangle ``area`` with shapely.

    Returns (pieces, source index of each piece, length removed). Lines wholly inside are
    passed through untouched (most of them, so only the rest go through shapely).
    """
    x0, y0, x1, y1 = area
    out: list[np.ndarray] = []
    src: list[int] = []
    removed = 0.0
    if not lines:
        return out, src, removed
    # bounding boxes of all lines in one pass over the concatenated vertices
    counts = np.array([len(ln) for ln in lines])
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    allxy = np.concatenate(lines)
    lo = np.minimum.reduceat(allxy, starts, axis=0)
    hi = np.maximum.reduceat(allxy, starts, axis=0)
    inside = (lo[:, 0] >= x0) & (lo[:, 1] >= y0) & (hi[:, 0] <= x1) & (hi[:, 1] <= y1)
    box = shapely.box(x0, y0, x1, y1)
    for i, ln in enumerate(lines):
        if inside[i]:
            out.append(ln)
            src.append(i)
            continue
        if len(ln) == 2 and np.array_equal(ln[0], ln[1]):  # a dot: inside or not
            continue
        geom = shapely.linestrings(ln)
        clipped = shapely.intersection(geom, box)
        removed += geom.length - clipped.length
        for part in shapely.get_parts(clipped):
            if isinstance(part, shapely.LineString) and not part.is_empty:
                out.append(np.asarray(part.coords)[:, :2])
                src.append(i)
    return out, src, removed
