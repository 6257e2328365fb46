"""Pen calibration: a sheet the plotter draws, and a pen fitted from a photo of it.

- :func:`make_sheet` / :func:`write_sheet` (``sheet.py``): ArUco registration marks and,
  for each pen, swatches of parallel lines at known spacings, single lines, dots and a solid
  patch; a vpype Document to plot and a JSON layout that says where everything is in page mm.
- :func:`fit_pen` (``fit.py``): registers a photo of the plotted sheet by its marks, reads
  every swatch's reflectance in linear light relative to the paper, and fits the pen's
  effective nib width, darkness and colour (:class:`PenFit`), or refuses the photo with a
  :class:`CalibrationError` that says why.
- :func:`render_sheet` (``render.py``): the sheet as a given (true) pen would lay it, for
  the simulated camera, previews and tests.
"""

from plotterd.calibration.errors import CalibrationError
from plotterd.calibration.fit import PenFit, fit_pen
from plotterd.calibration.render import render_sheet
from plotterd.calibration.sheet import Sheet, make_sheet, read_layout, write_sheet

__all__ = ["CalibrationError", "PenFit", "Sheet", "fit_pen", "make_sheet", "read_layout",
           "render_sheet", "write_sheet"]
