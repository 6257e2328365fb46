"""Shared sheets and simulated photos for the calibration tests (small photos: fast)."""

from __future__ import annotations

import numpy as np
import pytest

from plotterd.calibration import make_sheet, render_sheet
from plotterd.machine.sim.camera import CameraSettings, Photo, photograph
from plotterd.pen import RoundNib

PX_PER_MM = 10.0
# smaller than a phone's 12 MP to keep the tests fast; every other distortion at its default
# (up to 20 deg tilt, 25 deg roll, uneven light, vignette, noise, blur, JPEG 85)
TEST_CAMERA = CameraSettings(size_px=(1600, 1200))


@pytest.fixture(scope="session")
def a5_sheet():
    """One nominal 0.3 mm pen on A5."""
    return make_sheet([RoundNib(0.3)], (148.0, 210.0))


def sheet_shot(layout, nib: float, darkness: float, seed: int,
               settings: CameraSettings = TEST_CAMERA, colours=None) -> Photo:
    page = render_sheet(layout, RoundNib(nib, darkness), PX_PER_MM, colours=colours)
    return photograph(page, PX_PER_MM, settings, seed=seed)


def sheet_photo(layout, nib: float, darkness: float, seed: int,
                settings: CameraSettings = TEST_CAMERA, colours=None) -> np.ndarray:
    return sheet_shot(layout, nib, darkness, seed, settings, colours).image
