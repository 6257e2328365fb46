"""``Strokes``: the optimiser's output and the vector stage's input, and ``strokes.json``.

World space follows the papers: pixel rows map to y in [-1, 1] (y grows downwards, as in
the image) and columns to x in [-W'/H', W'/H'] with the same scale, where W' = W - 1 and
H' = H - 1. Pixel (row r, column c) has its centre at world
``x = (c - (W-1)/2) / s``, ``y = (r - (H-1)/2) / s`` with ``s = (H-1)/2`` pixels per
world unit. :class:`Canvas` does this mapping.

strokes.json, format ``plotterd.strokes`` version 1::

    {
      "format": "plotterd.strokes", "version": 1,
      "canvas": {"width": W, "height": H,
                 "world_to_pixel": {"scale": s, "offset_x": (W-1)/2, "offset_y": (H-1)/2}},
      "composition": "softor" | "over" | "smoothmax",
      "groups": [
        {"kind": "line",                     # see KINDS
         "points": [[[x, y], ...], ...],     # N strokes x K control points x 2, world units
         "width_px": [t, ...],               # stroke thickness in pixels (sigma = 0.54925 t)
         "grey": [g, ...] | null,            # ink intensity in [0, 1] (1 = full ink)
         "color": [[r, g, b], ...] | null}   # ink colour in [0, 1]; null = black
      ],
      "pipeline": {...},                     # the pipeline that produced it
      "metadata": {...}                      # free-form: loss, iterations, seed, weights...
    }

Readers must reject an unknown ``format`` or a newer ``version``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plotterd import atomic
from plotterd.errors import InputError

FORMAT = "plotterd.strokes"
VERSION = 1

# Control points per primitive; polylines carry their own count (>= 2).
KINDS: dict[str, int | None] = {
    "point": 1,
    "line": 2,
    "polyline": None,
    "quadratic": 3,
    "cubic": 4,
    "catmull_rom": None,  # centripetal Catmull-Rom through >= 4 control points
}

SIGMA_PER_PIXEL_WIDTH = 0.54925  # sigma that best matches a t-pixel stroke (method, app. A)


@dataclass(frozen=True)
class Canvas:
    width: int
    height: int

    @property
    def scale(self) -> float:
        """Pixels per world unit."""
        return (self.height - 1) / 2.0

    @property
    def offset(self) -> tuple[float, float]:
        return ((self.width - 1) / 2.0, (self.height - 1) / 2.0)

    @property
    def x_extent(self) -> float:
        """World x runs over [-x_extent, x_extent]."""
        return (self.width - 1) / (self.height - 1)

    def world_to_pixel(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) world (x, y) -> (..., 2) pixel (column, row) coordinates."""
        ox, oy = self.offset
        out = np.asarray(xy, dtype=np.float64) * self.scale
        return out + np.array([ox, oy])

    def pixel_to_world(self, cr: np.ndarray) -> np.ndarray:
        ox, oy = self.offset
        return (np.asarray(cr, dtype=np.float64) - np.array([ox, oy])) / self.scale

    def to_json(self) -> dict[str, Any]:
        ox, oy = self.offset
        return {
            "width": self.width,
            "height": self.height,
            "world_to_pixel": {"scale": self.scale, "offset_x": ox, "offset_y": oy},
        }


@dataclass
class StrokeGroup:
    """N primitives of one kind. Arrays are numpy, float64, world units."""

    kind: str
    points: np.ndarray  # (N, K, 2)
    width_px: np.ndarray  # (N,)
    grey: np.ndarray | None = None  # (N,)
    color: np.ndarray | None = None  # (N, 3)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown stroke kind {self.kind!r} (known: {', '.join(KINDS)})")
        self.points = np.asarray(self.points, dtype=np.float64)
        if self.points.ndim != 3 or self.points.shape[2] != 2:
            raise InputError(f"{self.kind}: points must be N x K x 2, got {self.points.shape}")
        k = KINDS[self.kind]
        if k is not None and self.points.shape[1] != k:
            raise InputError(f"{self.kind}: needs {k} control points, got {self.points.shape[1]}")
        if self.kind == "polyline" and self.points.shape[1] < 2:
            raise InputError("polyline: needs at least 2 points")
        if self.kind == "catmull_rom" and self.points.shape[1] < 4:
            raise InputError("catmull_rom: needs at least 4 control points")
        n = len(self.points)
        self.width_px = np.broadcast_to(
            np.asarray(self.width_px, dtype=np.float64), (n,)
        ).copy()
        if self.grey is not None:
            self.grey = np.asarray(self.grey, dtype=np.float64).reshape(n)
        if self.color is not None:
            self.color = np.asarray(self.color, dtype=np.float64).reshape(n, 3)

    def __len__(self) -> int:
        return len(self.points)

    def intensity(self) -> np.ndarray:
        """Per-stroke ink strength in [0, 1] (grey, or the colour's darkness, or 1)."""
        if self.grey is not None:
            return np.clip(self.grey, 0.0, 1.0)
        return np.ones(len(self))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "points": self.points.tolist(),
            "width_px": self.width_px.tolist(),
            "grey": None if self.grey is None else self.grey.tolist(),
            "color": None if self.color is None else self.color.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StrokeGroup:
        try:
            return cls(
                kind=d["kind"],
                points=np.asarray(d["points"], dtype=np.float64).reshape(
                    len(d["points"]), -1, 2
                )
                if len(d["points"])
                else np.zeros((0, KINDS.get(d["kind"]) or 2, 2)),
                width_px=d["width_px"],
                grey=d.get("grey"),
                color=d.get("color"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"bad stroke group: {e}") from e


@dataclass
class Strokes:
    canvas: Canvas
    groups: list[StrokeGroup]
    composition: str = "softor"
    pipeline: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "canvas": self.canvas.to_json(),
            "composition": self.composition,
            "groups": [g.to_json() for g in self.groups],
            "pipeline": self.pipeline,
            "metadata": self.metadata,
        }

    def save(self, path: str | Path) -> None:
        atomic.write_text(path, json.dumps(self.to_json()))

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "strokes") -> Strokes:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(f"{source}: not a plotterd strokes file (format != {FORMAT!r})")
        if not isinstance(d.get("version"), int) or d["version"] > VERSION:
            raise InputError(
                f"{source}: strokes format version {d.get('version')!r} is not supported "
                f"(this plotterd reads up to {VERSION})"
            )
        try:
            c = d["canvas"]
            canvas = Canvas(int(c["width"]), int(c["height"]))
            groups = [StrokeGroup.from_json(g) for g in d["groups"]]
        except (KeyError, TypeError, ValueError, InputError) as e:
            raise InputError(f"{source}: malformed strokes file: {e}") from e
        if canvas.width < 1 or canvas.height < 2:  # height 1 has no world scale (H - 1 = 0)
            raise InputError(
                f"{source}: canvas {canvas.width} x {canvas.height} px is too small "
                "(at least 1 wide and 2 high)"
            )
        return cls(
            canvas=canvas,
            groups=groups,
            composition=d.get("composition", "softor"),
            pipeline=d.get("pipeline") or {},
            metadata=d.get("metadata") or {},
        )

    @classmethod
    def load(cls, path: str | Path) -> Strokes:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise InputError(f"{path}: no such file") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: cannot read strokes file: {e}") from e
        return cls.from_json(d, source=str(path))
