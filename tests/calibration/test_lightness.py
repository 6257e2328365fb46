"""A hatch laid for a target tone with the fitted pen reaches it on paper drawn by the
true pen; laid for the nominal pen, it misses."""

from __future__ import annotations

import numpy as np
import pytest

from plotterd.calibration import fit_pen
from plotterd.light import np_lightness
from plotterd.pen import DrawingBox, PenModel, RoundNib

from .conftest import sheet_photo

TRUE_PEN = RoundNib(0.4, 0.85)  # a fineliner sold as 0.3 mm, ink spread, not quite black
NOMINAL = RoundNib(0.3, 1.0)


def _spacing_for(target_y: float, pen: PenModel) -> float:
    """Murray-Davies: lines of width w, darkness D, at spacing s reflect 1 - D w / s."""
    coverage = (1.0 - target_y) / pen.darkness
    assert coverage <= 1.0
    return pen.nib_mm / coverage


def _hatch_lightness(spacing: float, pen: PenModel) -> float:
    """Render 12 mm of lines ``spacing`` apart with ``pen``; L* of the central window (a
    whole number of periods), averaged in linear light."""
    box = DrawingBox(12.0, 12.0)
    ys = np.arange(0.5, 11.5, spacing)
    lines = [np.array([[0.0, y], [12.0, y]]) for y in ys]
    grey = pen.render(lines, box, 40.0)
    periods = int(6.0 // spacing) * spacing
    y0 = ys[len(ys) // 2 - int(6.0 // spacing) // 2]
    rows = slice(round(y0 * 40), round((y0 + periods) * 40))
    mean_y = float(grey[rows, 120:360].mean())
    return float(np_lightness(np.array([[mean_y]], np.float32))[0, 0])


@pytest.fixture(scope="module")
def fitted(a5_sheet):
    photo = sheet_photo(a5_sheet.layout, TRUE_PEN.nib_mm, TRUE_PEN.darkness, seed=21)
    return fit_pen(photo, a5_sheet.layout, "fine").pen


@pytest.mark.parametrize("target_l", [50.0, 62.0, 75.0])
def test_fitted_pen_hits_the_target_lightness(fitted, target_l) -> None:
    target_y = ((target_l + 16) / 116) ** 3
    with_fit = _hatch_lightness(_spacing_for(target_y, fitted), TRUE_PEN)
    with_nominal = _hatch_lightness(_spacing_for(target_y, NOMINAL), TRUE_PEN)
    assert abs(with_fit - target_l) < 2.0
    assert abs(with_nominal - target_l) > max(3.0, abs(with_fit - target_l) + 2.0)
    assert with_nominal < with_fit  # the spreading pen darkens a drawing made for 0.3 mm
