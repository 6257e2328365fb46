"""Strokes or SVG -> page polylines: sampling, layout, clipping, simplification, merge, order.

Entry point: :func:`vectorise` (source, PageSpec, VectorOptions) -> VectorResult(document,
stats). The document is a ``vpype.Document`` in vpype's units (CSS px, 1/96 in; origin at the
paper's top-left corner, y down; ``PX_PER_MM`` converts), with ``page_size`` set to the paper,
one layer per pen (``vp_color``, ``vp_pen_width``, ``vp_name``) and lines in plotting order.
"""

from plotterd.vector.layout import PX_PER_MM
from plotterd.vector.pens import Pen, grey_pens
from plotterd.vector.vectorise import PageSpec, VectorOptions, VectorResult, vectorise

__all__ = [
    "PX_PER_MM",
    "PageSpec",
    "Pen",
    "VectorOptions",
    "VectorResult",
    "grey_pens",
    "vectorise",
]
