"""Initialisation strategies that start a drawing from the picture's structure.

A strategy is one function ``(darkness, options, budget, rng) -> polylines``: ``darkness``
is the target's (H, W) ink in [0, 1] (0 = paper) on the working canvas, where 1 px is one
nib width; it returns polylines in canvas pixels (x = column, y = row) whose total length
lays about that much ink with a 1-px line. :func:`make_start` applies the pipeline's ink
caps (:class:`~plotterd.pipeline.Ink`) on top. Register more with :func:`register_init`.

The random starts of the papers (``uniform``, ``dark``) stay in the optimiser: they draw a
fixed number of short strokes, where these make as many long ones as the picture needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from plotterd.draw.hatching import HatchSettings, hatch
from plotterd.draw.streamlines import StreamlineSettings, trace_streamlines
from plotterd.errors import ConfigError
from plotterd.pipeline import Ink

__all__ = ["InitStrategy", "register_init", "check_init_options", "make_start", "Start",
           "polylines_length", "plot_minutes", "START_OPTIONS"]

Polylines = list[np.ndarray]


@dataclass(frozen=True)
class InitStrategy:
    trace: Callable[[np.ndarray, dict[str, Any], np.random.Generator], Polylines]
    options: dict[str, Any]  # accepted option -> default


_REGISTRY: dict[str, InitStrategy] = {}
_SIGNED_OPTIONS = {"angle_deg"}  # options that may be 0 or negative
_ZERO_OK_OPTIONS = {"contours", "link_gap_px", "solid_reach_px", "fine_blur_px",
                    "fine_width_px"}  # 0 turns the feature off


def register_init(name: str, options: dict[str, Any]):
    def deco(fn):
        _REGISTRY[name] = InitStrategy(fn, options)
        return fn
    return deco


def check_init_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Options with defaults filled in; ConfigError names ``init_options.KEY``."""
    if name not in _REGISTRY:
        raise ConfigError("init", f"unknown init {name!r} (known: {', '.join(_REGISTRY)})")
    spec = _REGISTRY[name]
    out = dict(spec.options)
    for k, v in options.items():
        if k not in spec.options:
            raise ConfigError(f"init_options.{k}",
                              f"unknown option for init {name!r} "
                              f"(accepted: {', '.join(spec.options)})")
        default = spec.options[k]
        if isinstance(default, bool):  # a switch: true or false only
            if not isinstance(v, bool):
                raise ConfigError(f"init_options.{k}", f"must be true or false, got {v!r}")
            out[k] = v
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                or (v < 0 and k not in _SIGNED_OPTIONS) \
                or (v == 0 and k not in _SIGNED_OPTIONS | _ZERO_OK_OPTIONS):
            least = ">= 0" if k in _ZERO_OK_OPTIONS else "> 0"
            raise ConfigError(f"init_options.{k}", f"must be a number {least}, got {v!r}")
        out[k] = type(default)(v)
    return out


# options every structure start takes besides its own settings (read by the optimiser, not
# by the trace): points of the start deep inside a tone at least ``hold_darkness`` dark are
# held where they are by the refinement (> 1: none). A solid fill has nothing to gain from
# moving, and Adam's normalised steps on its near-zero gradients open slivers of paper in it
START_OPTIONS = {"hold_darkness": 0.95}
_STREAMLINE_OPTIONS = {**{f.name: f.default for f in fields(StreamlineSettings)},
                       **START_OPTIONS}


@register_init("streamlines", _STREAMLINE_OPTIONS)
def _streamlines(darkness: np.ndarray, options: dict[str, Any],
                 rng: np.random.Generator) -> Polylines:
    """Evenly spaced lines along the picture's structure, spaced by its tone."""
    return trace_streamlines(darkness, StreamlineSettings(**options), rng=rng)


_HATCH_OPTIONS = {**{f.name: f.default for f in fields(HatchSettings)}, **START_OPTIONS}


@register_init("hatch", _HATCH_OPTIONS)
def _hatch(darkness: np.ndarray, options: dict[str, Any],
           rng: np.random.Generator) -> Polylines:
    """Parallel lines one nib apart, inked by an ordered dither of the tone (crossed by a
    second layer in the darker tones with ``cross``)."""
    return hatch(darkness, HatchSettings(**options))


def polylines_length(lines: Polylines) -> float:
    return float(sum(np.linalg.norm(np.diff(p, axis=0), axis=1).sum() for p in lines
                     if len(p) > 1))


def plot_minutes(lines: Polylines, mm_per_px: float, ink: Ink) -> float:
    """Plot time at constant speeds: drawing, pen-up travel between lines in the given
    order, and a pen lift per line. The G-code stage's trapezoidal model refines it; this
    one serves the cap before any G-code exists (the draw stage sits below gcode)."""
    draw_mm = polylines_length(lines) * mm_per_px
    travel_mm = sum(float(np.linalg.norm(b[0] - a[-1])) for a, b in zip(lines, lines[1:],
                                                                          strict=False))
    travel_mm *= mm_per_px
    seconds = (draw_mm / ink.draw_speed_mm_s + travel_mm / ink.travel_speed_mm_s
               + len(lines) * ink.pen_lift_s)
    return seconds / 60.0


@dataclass
class Start:
    lines: Polylines  # canvas px
    needed_px: float  # line length a faithful drawing of the tone needs (px of 1-nib line)
    tone_scale: float  # < 1 where a cap thinned the tone


def make_start(name: str, darkness: np.ndarray, options: dict[str, Any], ink: Ink,
               mm_per_px: float, rng_seed: int) -> Start:
    """The strategy's polylines, thinned until they fit the ink caps."""
    spec = _REGISTRY[name]
    options = {k: v for k, v in options.items() if k not in START_OPTIONS}
    tone = np.clip(darkness, 0.0, 1.0) ** ink.tone_gamma
    needed = float(tone.sum())  # px of 1-px line: darkness x area / nib width
    scale = 1.0
    for _ in range(4):
        lines = spec.trace(tone * scale, options, np.random.default_rng(rng_seed))
        over = _over_budget(lines, mm_per_px, ink)
        if over <= 1.0:
            break
        scale /= over * 1.05  # spacing grows as 1 / tone, so ink shrinks with the tone
    if ink.max_strokes and len(lines) > ink.max_strokes:
        lines = sorted(lines, key=lambda p: -len(p))[: ink.max_strokes]
    return Start(lines, needed, scale)


def _over_budget(lines: Polylines, mm_per_px: float, ink: Ink) -> float:
    """The largest ratio of a measure to its cap (<= 1: within every cap)."""
    ratio = 0.0
    if ink.max_length_m:
        ratio = max(ratio, polylines_length(lines) * mm_per_px / 1000.0 / ink.max_length_m)
    if ink.max_plot_minutes:
        ratio = max(ratio, plot_minutes(lines, mm_per_px, ink) / ink.max_plot_minutes)
    return ratio
