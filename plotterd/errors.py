"""Exceptions shared by every stage.

The CLI turns a :class:`PlotterdError` into a one-line message and exit status 2;
the daemon turns it into a failed job with that message as the reason.
"""

from __future__ import annotations


class PlotterdError(Exception):
    """An error the user can act on; its message is shown without a traceback."""


class InputError(PlotterdError):
    """An input file (image, SVG, strokes.json, G-code) is missing, unreadable or invalid."""


class ConfigError(PlotterdError):
    """A configuration, pipeline or profile value is invalid. ``key`` names the offending key."""

    def __init__(self, key: str, message: str, source: str | None = None):
        self.key = key
        self.message = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}")


class OutOfBoundsError(PlotterdError):
    """A drawing or a move does not fit the machine's bounds."""


class WeightsError(PlotterdError):
    """Model weights are missing or do not verify."""
