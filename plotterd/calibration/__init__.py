"""Pen calibration: a sheet the plotter draws, and a pen fitted from a photo of it.

- :func:`make_sheet` / :func:`write_sheet` (``sheet.py``): ArUco registration marks and,
  for each pen, swatches of parallel lines at known spacings, single lines, dots and a solid
  patch; a vpype Document to plot and a JSON layout that says where everything is in page mm.
"""

from plotterd.calibration.errors import CalibrationError
from plotterd.calibration.sheet import Sheet, make_sheet, read_layout, write_sheet

__all__ = ["CalibrationError", "Sheet", "make_sheet", "read_layout", "write_sheet"]
