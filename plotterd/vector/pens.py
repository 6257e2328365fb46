"""Pens: what ink each vpype layer holds, and which pen draws a stroke."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plotterd.errors import ConfigError


@dataclass
class Pen:
    color: str = "black"  # a CSS colour name or #rrggbb
    width_mm: float = 0.3  # nib width: the SVG preview's stroke width (vp_pen_width)
    name: str | None = None  # shown in the pen-change prompt; default "pen N (colour)"

    def rgb(self, key: str = "pen.color") -> tuple[float, float, float]:
        return parse_color(self.color, key)


def parse_color(value: str, key: str) -> tuple[float, float, float]:
    """CSS colour -> RGB floats, refusing what is not a colour (vpype.Color silently turns
    unknown names into black, so matplotlib's stricter parser does the checking)."""
    from matplotlib.colors import to_rgb  # local: matplotlib is slow to import

    try:
        return tuple(float(c) for c in to_rgb(str(value)))  # type: ignore[return-value]
    except ValueError as e:
        raise ConfigError(key, f"{value!r} is not a colour (a CSS name or #rrggbb)") from e


def grey_pens(n: int, width_mm: float = 0.3) -> list[Pen]:
    """``n`` pens from black to light grey, for quantising grey strokes to n pens."""
    if n < 1:
        raise ConfigError("vector.grey_levels", f"must be >= 1, got {n}")
    pens = []
    for i in range(n):
        level = round(255 * 0.75 * i / max(n - 1, 1)) if n > 1 else 0
        pens.append(Pen(color=f"#{level:02x}{level:02x}{level:02x}", width_mm=width_mm))
    return pens


def ink_rgb(intensity: np.ndarray, color: np.ndarray | None) -> np.ndarray:
    """What a stroke looks like on white paper: (N,) intensity, (N, 3) colour -> (N, 3) RGB.

    A stroke of colour c and intensity g over white composes to 1 - g (1 - c) (the softor
    composition of the rasteriser for a single stroke); no colour means black ink.
    """
    g = np.clip(np.asarray(intensity, dtype=np.float64), 0.0, 1.0)[:, None]
    c = np.zeros((len(g), 3)) if color is None else np.clip(color, 0.0, 1.0)
    return 1.0 - g * (1.0 - c)


def assign_pens(rgb: np.ndarray, pens: list[Pen]) -> np.ndarray:
    """Index of the nearest pen colour (Euclidean in RGB) for each (N, 3) ink colour."""
    palette = np.array([p.rgb(f"vector.pens[{i}].color") for i, p in enumerate(pens)])
    if len(pens) == 1 or len(rgb) == 0:
        return np.zeros(len(rgb), dtype=int)
    d = ((rgb[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2)
    return np.argmin(d, axis=1)
