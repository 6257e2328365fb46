"""The calibration's own error."""

from __future__ import annotations

from plotterd.errors import InputError


class CalibrationError(InputError):
    """A calibration photo cannot be measured (no marks, marks cut off, blur, overexposure,
    a fit that does not explain the swatches); the message says which and what to do."""
