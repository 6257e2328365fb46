"""Pipelines: a YAML file that describes one kind of drawing (see docs/pipelines.md).

``load_pipeline(name_or_path, overrides)`` parses and validates it once, at the edge, into a
:class:`Pipeline`; errors are :class:`ConfigError` naming the dotted key
(``strokes[0].count``) and the file. ``Pipeline.to_dict()`` gives back a dict that loads to
an equal Pipeline.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plotterd.bundled import bundled_dir
from plotterd.errors import ConfigError
from plotterd.pen import FittedPen, RoundNib, pen_from_dict

__all__ = [
    "DEFAULT_PIPELINE",
    "PIPELINES_DIR",
    "Pipeline",
    "StrokeSpec",
    "load_pipeline",
    "pipeline_from_dict",
    "pipeline_names",
    "resolve_pipeline",
]

DEFAULT_PIPELINE = "paper"
PIPELINES_DIR = bundled_dir("pipelines")  # top-level pipelines/, or its copy in a wheel
COMPOSITIONS = ("softor", "over", "smoothmax")
# how the drawing matches the photo's tone: in light (coverage from linear luminance, the
# page compared in L*) or in pixel values (coverage = 1 - sRGB grey, the old way)
TONES = ("light", "pixel")
# strokes drawn at random; the structure-following starts (streamlines ...) are registered
# in plotterd.draw.inits and make their own strokes (`count: auto`)
INITS = ("uniform", "dark")
STRUCTURE_INITS = ("auto", "streamlines", "hatch")
# `init: auto` tries these and starts from the one that draws best on paper
AUTO_CANDIDATES = ("hatch", "streamlines")
AUTO_COUNT = 0  # StrokeSpec.count of a group whose strokes the init strategy makes
PARAMETRISATIONS = ("clamp", "sigmoid")


@dataclass
class StrokeSpec:
    """One group of strokes of a single kind."""

    kind: str
    count: int
    control_points: int  # per stroke (fixed by the kind except polyline / catmull_rom)
    width_px: float = 1.0
    learn_width: bool = False
    max_width_px: float | None = None  # learned widths are clamped to [0, this]
    grey: float = 1.0
    learn_grey: bool = False
    color: list[float] | None = None
    learn_color: bool = False
    parametrisation: str = "clamp"  # of learned grey/colour: "clamp" or "sigmoid"


@dataclass
class Page:
    """The drawing's size on paper; the working canvas follows at 1 px = 1 nib width."""

    width_mm: float | None = None
    height_mm: float | None = None
    long_side_mm: float | None = None

    def canvas_size(self, src_h: int, src_w: int, nib_mm: float) -> tuple[int, int]:
        """(H, W) of the working canvas for a source of src_h x src_w pixels."""
        aspect = src_w / src_h
        if self.long_side_mm is not None:
            long_px = self.long_side_mm / nib_mm
            h, w = (long_px / aspect, long_px) if aspect >= 1 else (long_px, long_px * aspect)
        elif self.width_mm is not None and self.height_mm is not None:
            h, w = self.height_mm / nib_mm, self.width_mm / nib_mm
        elif self.width_mm is not None:
            w = self.width_mm / nib_mm
            h = w / aspect
        else:
            h = float(self.height_mm) / nib_mm
            w = h * aspect
        return max(8, round(h)), max(8, round(w))


@dataclass
class Ink:
    """Caps on the amount of line (0 = no cap), and the motion figures plot time uses."""

    max_length_m: float = 0.0
    max_plot_minutes: float = 0.0
    max_strokes: int = 0
    draw_speed_mm_s: float = 40.0
    travel_speed_mm_s: float = 80.0
    pen_lift_s: float = 0.3
    tone_gamma: float = 1.0  # darkness ** gamma is the tone to lay


@dataclass
class CoarseToFine:
    scale: float = 0.5  # working-resolution factor of the coarse stage
    fraction: float = 0.5  # share of the iterations spent at the coarse resolution


@dataclass
class Pipeline:
    strokes: list[StrokeSpec]
    loss: dict[str, Any]  # {"type": name, **params}, defaults filled in
    name: str = ""
    description: str = ""
    composition: str = "softor"
    tau: float = 0.05
    channels: int = 1
    height: int | None = 200
    width: int | None = None
    iterations: int = 500
    lr: float = 0.01
    width_lr: float = 0.0005
    ink_lr: float = 0.01
    init: str = "uniform"
    init_spread: float = 0.1
    seed: int = 0
    reinit: bool = False
    reinit_every: int = 10
    coarse_to_fine: CoarseToFine | None = None
    curve_segments: int = 10
    allow_random_weights: bool = False
    max_input_megapixels: float = 100.0
    # control points may leave the canvas by this many pixels, so a stroke the loss wants
    # gone can leave the picture instead of sticking to its border; the vector stage clips
    # every stroke to the canvas
    canvas_margin_px: float = 3.0
    # the paper and the pen: with `page`, the canvas is the drawing's box at 1 px = 1 nib
    page: Page | None = None
    pen: dict[str, Any] = field(default_factory=lambda: RoundNib().to_dict())
    ink: Ink = field(default_factory=Ink)
    init_options: dict[str, Any] = field(default_factory=dict)  # for structure inits
    keep_best: bool = True  # end on the lowest-loss iterate (never worse than the start)
    # weight of a penalty on polylines' bends (mean squared second difference, px^2), so
    # refined lines stay smooth instead of wiggling (a wiggle is ink and plot time)
    smoothness: float = 0.0
    # with a page: the loss sees the pen model's drawing (hard nib, saturating ink), the
    # gradient comes from the smooth raster (straight-through)
    paper_forward: bool = False
    # light: the photo is decoded to linear luminance, its black laid at the pen's black
    # point, the page mixed in light and compared in L* (docs/pipelines.md); pixel: tone is
    # matched in sRGB values. A pipeline file with a page defaults to light, without to pixel
    tone: str = "pixel"
    source: str | None = field(default=None, compare=False)  # file it came from

    @property
    def pen_model(self) -> RoundNib | FittedPen:
        return pen_from_dict(self.pen)

    @property
    def loss_type(self) -> str:
        return str(self.loss["type"])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        d["resolution"] = {
            k: v for k, v in (("height", d.pop("height")), ("width", d.pop("width"))) if v
        }
        for s in d["strokes"]:
            if s["max_width_px"] is None:
                s.pop("max_width_px")
        if d["coarse_to_fine"] is None:
            d["coarse_to_fine"] = False
        for s in d["strokes"]:
            if s["count"] == AUTO_COUNT:
                s["count"] = "auto"
        if d["page"] is None:
            d.pop("page")
        else:
            d.pop("resolution")
            d["page"] = {k: v for k, v in d["page"].items() if v is not None}
        return d


# ---------------------------------------------------------------------------- validation


class _V:
    """Typed getters that raise ConfigError with the dotted key and the source file."""

    def __init__(self, source: str | None, pens_folder: Path | None = None):
        self.source = source
        self.pens_folder = pens_folder  # where `pen: {profile: NAME}` is read from

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(key, msg, self.source)

    def mapping(self, v: Any, key: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.err(key, f"must be a mapping, got {type(v).__name__}")
        for k in v:
            if not isinstance(k, str):
                raise self.err(key, f"keys must be strings, got {k!r}")
        return v

    def known(self, d: dict[str, Any], allowed: set[str], prefix: str) -> None:
        for k in d:
            if k not in allowed:
                raise self.err(
                    f"{prefix}{k}", f"unknown key (accepted: {', '.join(sorted(allowed))})"
                )

    def integer(self, v: Any, key: str, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(key, f"must be an integer, got {v!r}")
        self._range(v, key, lo, hi)
        return v

    def number(
        self, v: Any, key: str, lo: float | None = None, hi: float | None = None,
        positive: bool = False,
    ) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.err(key, f"must be a finite number, got {v!r}")
        if positive and v <= 0:
            raise self.err(key, f"must be > 0, got {v!r}")
        self._range(v, key, lo, hi)
        return float(v)

    def _range(self, v: float, key: str, lo: float | None, hi: float | None) -> None:
        if lo is not None and v < lo:
            raise self.err(key, f"must be >= {lo}, got {v!r}")
        if hi is not None and v > hi:
            raise self.err(key, f"must be <= {hi}, got {v!r}")

    def boolean(self, v: Any, key: str) -> bool:
        if not isinstance(v, bool):
            raise self.err(key, f"must be true or false, got {v!r}")
        return v

    def choice(self, v: Any, key: str, choices: tuple[str, ...]) -> str:
        if v not in choices:
            raise self.err(key, f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    def string(self, v: Any, key: str) -> str:
        if not isinstance(v, str):
            raise self.err(key, f"must be a string, got {v!r}")
        return v


_STROKE_KEYS = {f for f in StrokeSpec.__dataclass_fields__}
_TOP_KEYS = {
    f for f in Pipeline.__dataclass_fields__ if f not in ("source", "height", "width")
} | {"resolution"}


def _stroke_spec(v: _V, raw: Any, key: str, channels: int) -> StrokeSpec:
    # imported here: plotterd.draw imports this module, so a top-level import would be a cycle
    from plotterd.draw.strokes import KINDS

    d = v.mapping(raw, key)
    v.known(d, _STROKE_KEYS, f"{key}.")
    if "kind" not in d:
        raise v.err(f"{key}.kind", "missing")
    kind = v.choice(d["kind"], f"{key}.kind", tuple(KINDS))
    if "count" not in d:
        raise v.err(f"{key}.count", "missing")
    if d["count"] == "auto":
        count = AUTO_COUNT  # the init strategy decides (checked in pipeline_from_dict)
    else:
        count = v.integer(d["count"], f"{key}.count", 1, 1_000_000)
    fixed = KINDS[kind]
    min_k = {"polyline": 2, "catmull_rom": 4}.get(kind, fixed)
    if "control_points" in d:
        k = v.integer(d["control_points"], f"{key}.control_points", min_k, 64)
        if fixed is not None and k != fixed:
            raise v.err(f"{key}.control_points", f"a {kind} has exactly {fixed}, got {k}")
    else:
        k = fixed if fixed is not None else {"polyline": 2, "catmull_rom": 4}[kind]
    width = v.number(d.get("width_px", 1.0), f"{key}.width_px", hi=1000.0, positive=True)
    max_w = d.get("max_width_px")
    if max_w is not None:
        max_w = v.number(max_w, f"{key}.max_width_px", lo=width)
    grey = v.number(d.get("grey", 1.0), f"{key}.grey", 0.0, 1.0)
    color = d.get("color")
    if color is not None:
        if not isinstance(color, list) or len(color) != 3:
            raise v.err(f"{key}.color", f"must be [r, g, b] in [0, 1], got {color!r}")
        color = [v.number(c, f"{key}.color[{i}]", 0.0, 1.0) for i, c in enumerate(color)]
    learn_color = v.boolean(d.get("learn_color", False), f"{key}.learn_color")
    if (color is not None or learn_color) and channels != 3:
        raise v.err(
            f"{key}.{'learn_color' if learn_color else 'color'}",
            "colour strokes need `channels: 3`",
        )
    return StrokeSpec(
        kind=kind,
        count=count,
        control_points=k,
        width_px=width,
        learn_width=v.boolean(d.get("learn_width", False), f"{key}.learn_width"),
        max_width_px=max_w,
        grey=grey,
        learn_grey=v.boolean(d.get("learn_grey", False), f"{key}.learn_grey"),
        color=color,
        learn_color=learn_color,
        parametrisation=v.choice(
            d.get("parametrisation", "clamp"), f"{key}.parametrisation", PARAMETRISATIONS
        ),
    )


def pipeline_from_dict(
    raw: Any, *, name: str = "", source: str | None = None, pens_folder: Path | None = None
) -> Pipeline:
    """Validate a pipeline dict (as read from YAML) into a :class:`Pipeline`; a pen named
    by profile is read from ``pens_folder`` (default :func:`plotterd.pen.pens_dir`)."""
    v = _V(source, pens_folder)
    d = v.mapping(raw if raw is not None else {}, "pipeline")
    v.known(d, _TOP_KEYS, "")
    defaults = Pipeline(strokes=[], loss={})
    # the checks run in this order, so the first error a file shows stays the same
    channels = _channels(v, d)
    strokes = _strokes(v, d, channels)
    loss = _loss(v, d)
    height, width = _resolution(v, d)
    page = _page(v, d.get("page"))
    pen = _pen(v, d.get("pen", defaults.pen))
    if page is not None and "resolution" in d:
        raise v.err("resolution", "follows from page and pen.nib_mm; give one or the other")
    ink = _ink(v, d.get("ink", {}))
    init, init_options = _init(v, d, strokes, defaults.init)
    ctf = _coarse_to_fine(v, d.get("coarse_to_fine", False))

    def get(key: str) -> Any:
        return d.get(key, getattr(defaults, key))

    return Pipeline(
        strokes=strokes,
        loss=loss,
        name=v.string(get("name") or name, "name"),
        description=v.string(get("description") or "", "description"),
        composition=v.choice(get("composition"), "composition", COMPOSITIONS),
        tau=v.number(get("tau"), "tau", positive=True),
        channels=channels,
        height=height,
        width=width,
        iterations=v.integer(get("iterations"), "iterations", 0, 10_000_000),
        lr=v.number(get("lr"), "lr", positive=True),
        width_lr=v.number(get("width_lr"), "width_lr", positive=True),
        ink_lr=v.number(get("ink_lr"), "ink_lr", positive=True),
        init=init,
        init_options=init_options,
        page=page,
        pen=pen,
        ink=ink,
        keep_best=v.boolean(get("keep_best"), "keep_best"),
        smoothness=v.number(get("smoothness"), "smoothness", 0.0, 1e6),
        paper_forward=v.boolean(get("paper_forward"), "paper_forward"),
        tone=v.choice(d.get("tone", "light" if page is not None else "pixel"), "tone", TONES),
        init_spread=v.number(get("init_spread"), "init_spread", 0.0, 2.0),
        seed=v.integer(get("seed"), "seed", 0, 2**63 - 1),
        reinit=v.boolean(get("reinit"), "reinit"),
        reinit_every=v.integer(get("reinit_every"), "reinit_every", 1),
        coarse_to_fine=ctf,
        curve_segments=v.integer(get("curve_segments"), "curve_segments", 1, 1000),
        allow_random_weights=v.boolean(get("allow_random_weights"), "allow_random_weights"),
        max_input_megapixels=v.number(
            get("max_input_megapixels"), "max_input_megapixels", positive=True
        ),
        canvas_margin_px=v.number(get("canvas_margin_px"), "canvas_margin_px", 0.0, 1000.0),
        source=source,
    )


def _channels(v: _V, d: dict[str, Any]) -> int:
    channels = d.get("channels", 1)
    if type(channels) is not int or channels not in (1, 3):  # not 1.0 or True
        raise v.err("channels", f"must be 1 (grey) or 3 (colour), got {channels!r}")
    return channels


def _strokes(v: _V, d: dict[str, Any], channels: int) -> list[StrokeSpec]:
    if "strokes" not in d:
        raise v.err("strokes", "missing (a list of stroke groups)")
    if not isinstance(d["strokes"], list) or not d["strokes"]:
        raise v.err("strokes", "must be a non-empty list of stroke groups")
    return [_stroke_spec(v, s, f"strokes[{i}]", channels) for i, s in enumerate(d["strokes"])]


def _loss(v: _V, d: dict[str, Any]) -> dict[str, Any]:
    from plotterd.draw.losses import check_loss_config

    loss_raw = d.get("loss", {"type": "blurmse"})
    if isinstance(loss_raw, str):
        loss_raw = {"type": loss_raw}
    v.mapping(loss_raw, "loss")
    try:
        params = check_loss_config(loss_raw, "loss")
    except ConfigError as e:
        raise ConfigError(e.key, e.message, v.source) from e
    return {"type": loss_raw["type"], **params}


def _resolution(v: _V, d: dict[str, Any]) -> tuple[int | None, int | None]:
    res = v.mapping(d.get("resolution", {"height": 200}), "resolution")
    v.known(res, {"height", "width"}, "resolution.")
    height = res.get("height")
    width = res.get("width")
    if height is None and width is None:
        raise v.err("resolution", "give height, width or both")
    if height is not None:
        height = v.integer(height, "resolution.height", 8, 8192)
    if width is not None:
        width = v.integer(width, "resolution.width", 8, 8192)
    return height, width


def _pen(v: _V, raw: Any) -> dict[str, Any]:
    try:
        return pen_from_dict(v.mapping(raw, "pen"), pens_folder=v.pens_folder).to_dict()
    except ConfigError as e:
        raise ConfigError(e.key, e.message, v.source) from e


def _init(
    v: _V, d: dict[str, Any], strokes: list[StrokeSpec], default: str
) -> tuple[str, dict[str, Any]]:
    """The init strategy and its checked options; `count: auto` needs a structure init."""
    init = v.choice(d.get("init", default), "init", INITS + STRUCTURE_INITS)
    init_options = v.mapping(d.get("init_options", {}), "init_options")
    auto = [i for i, s in enumerate(strokes) if s.count == AUTO_COUNT]
    if init in STRUCTURE_INITS:
        if len(strokes) != 1 or not auto or strokes[0].kind != "polyline":
            raise v.err("strokes", f"init {init} makes its own strokes: give one group "
                                   "`{kind: polyline, count: auto}`")
        return init, _structure_init_options(v, init, init_options)
    if auto:
        raise v.err(f"strokes[{auto[0]}].count", f"`auto` needs a structure init "
                                               f"({', '.join(STRUCTURE_INITS)}), not {init}")
    if init_options:
        raise v.err("init_options", f"init {init} takes no options")
    return init, init_options


def _structure_init_options(v: _V, init: str, init_options: dict[str, Any]) -> dict[str, Any]:
    from plotterd.draw.inits import check_init_options

    try:
        if init == "auto":  # options per candidate: {hatch: {...}, streamlines: {...}}
            v.known(init_options, set(AUTO_CANDIDATES), "init_options.")
            return {
                name: _prefixed(check_init_options, name,
                                v.mapping(init_options.get(name, {}),
                                          f"init_options.{name}"))
                for name in AUTO_CANDIDATES}
        return check_init_options(init, init_options)
    except ConfigError as e:
        raise ConfigError(e.key, e.message, v.source) from e


def _coarse_to_fine(v: _V, raw: Any) -> CoarseToFine | None:
    if raw is True:
        return CoarseToFine()
    if isinstance(raw, dict):
        v.known(raw, {"scale", "fraction"}, "coarse_to_fine.")
        return CoarseToFine(
            scale=v.number(raw.get("scale", 0.5), "coarse_to_fine.scale", 0.05, 0.95),
            fraction=v.number(raw.get("fraction", 0.5), "coarse_to_fine.fraction", 0.0, 1.0),
        )
    if raw not in (False, None):
        raise v.err("coarse_to_fine", f"must be false, true or a mapping, got {raw!r}")
    return None


def _prefixed(check, name: str, options: dict[str, Any]) -> dict[str, Any]:
    try:
        return check(name, options)
    except ConfigError as e:
        raise ConfigError(e.key.replace("init_options.", f"init_options.{name}.", 1),
                          e.message) from None


def _page(v: _V, raw: Any) -> Page | None:
    if raw is None:
        return None
    d = v.mapping(raw, "page")
    v.known(d, {"width_mm", "height_mm", "long_side_mm"}, "page.")
    vals = {k: v.number(x, f"page.{k}", 1.0, 5000.0) for k, x in d.items()}
    if not vals:
        raise v.err("page", "give long_side_mm, or width_mm and/or height_mm")
    if "long_side_mm" in vals and len(vals) > 1:
        raise v.err("page.long_side_mm", "give it alone, or width_mm and/or height_mm")
    return Page(**vals)


def _ink(v: _V, raw: Any) -> Ink:
    d = v.mapping(raw, "ink")
    fields = Ink.__dataclass_fields__
    v.known(d, set(fields), "ink.")
    out = Ink()
    for k, x in d.items():
        if k == "max_strokes":
            out.max_strokes = v.integer(x, "ink.max_strokes", 0, 10_000_000)
        elif k in ("max_length_m", "max_plot_minutes"):
            setattr(out, k, v.number(x, f"ink.{k}", 0.0, 1e6))
        else:
            setattr(out, k, v.number(x, f"ink.{k}", 0.0, 1e4, positive=k != "pen_lift_s"))
    return out


# ------------------------------------------------------------------------------- loading


def _search_dirs(extra: tuple[str | Path, ...] | list[str | Path]) -> list[Path]:
    dirs = [Path(p) for p in extra]
    env = os.environ.get("PLOTTERD_PIPELINES")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(PIPELINES_DIR)
    return dirs


def pipeline_names(search_dirs: tuple[str | Path, ...] | list[str | Path] = ()) -> list[str]:
    """Names of the pipelines found in the search path (extra dirs, $PLOTTERD_PIPELINES,
    the shipped pipelines/)."""
    names: set[str] = set()
    for d in _search_dirs(search_dirs):
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def resolve_pipeline(
    name_or_path: str | Path, search_dirs: tuple[str | Path, ...] | list[str | Path] = ()
) -> Path:
    """A path to an existing file is used as is; a bare name is looked up as NAME.yaml in
    the search dirs (first match wins)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or os.sep in str(name_or_path) or "/" in str(name_or_path):
        if p.is_file():
            return p
        raise ConfigError("pipeline", f"no such pipeline file: {p}")
    for d in _search_dirs(search_dirs):
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    known = ", ".join(pipeline_names(search_dirs)) or "none"
    raise ConfigError("pipeline", f"unknown pipeline {str(name_or_path)!r} (known: {known})")


# replaced whole by an override: `resolution: {width: 300}` over `{height: 200}` means
# "300 wide, height from the aspect", not a 300 x 200 canvas
_REPLACE_WHOLE = {"resolution", "page"}


def _replaces_whole(key: str, val: dict[str, Any]) -> bool:
    # a pen named by its profile (or model) is another pen: none of the pipeline's own nib or
    # darkness may survive under the profile's name
    return key in _REPLACE_WHOLE or (key == "pen" and bool({"profile", "model"} & val.keys()))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Overrides win key by key; nested mappings (loss, coarse_to_fine) merge recursively;
    lists (strokes), `resolution`, `page` and a pen named by profile are replaced whole."""
    out = copy.deepcopy(base)
    for k, val in over.items():
        if isinstance(val, dict) and isinstance(out.get(k), dict) and not _replaces_whole(k, val):
            out[k] = _merge(out[k], val)
        else:
            out[k] = copy.deepcopy(val)
    return out


def load_pipeline(
    name_or_path: str | Path = DEFAULT_PIPELINE,
    overrides: dict[str, Any] | None = None,
    search_dirs: tuple[str | Path, ...] | list[str | Path] = (),
    pens_folder: Path | None = None,
) -> Pipeline:
    """Load and validate a pipeline by name or path, with ``overrides`` merged over it; a
    pen named by profile is read from ``pens_folder`` (default: the user's pens folder)."""
    path = resolve_pipeline(name_or_path, search_dirs)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("pipeline", f"cannot read {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError("pipeline", f"not valid YAML: {e}", str(path)) from e
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("pipeline", "must be a mapping of keys", str(path))
    source = str(path)
    if overrides:
        if not isinstance(overrides, dict):
            raise ConfigError("overrides", "must be a mapping of pipeline keys")
        if isinstance(raw.get("loss"), str):  # `loss: mse` shorthand, so a param override merges
            raw = {**raw, "loss": {"type": raw["loss"]}}
        # a loss type change drops the old loss's parameters
        if isinstance(overrides.get("loss"), dict) and "type" in overrides["loss"]:
            raw = {**raw, "loss": {}}
        elif isinstance(overrides.get("loss"), str):
            raw = {**raw, "loss": {}}
            overrides = {**overrides, "loss": {"type": overrides["loss"]}}
        raw = _merge(raw, overrides)
        source = f"{path} (with overrides)"
    return pipeline_from_dict(raw, name=path.stem, source=source, pens_folder=pens_folder)


def merge_overrides(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Two overrides mappings as one (``over`` wins), merged the way load_pipeline merges
    overrides over a pipeline (a daemon folder's ``set``, then a job's sidecar)."""
    return _merge(base, over)


# ---- dotted keys (``plotterd draw --set``, the daemon's ``folders.<name>.set``) ----

_KEY_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


def dotted_overrides(
    items: list[tuple[str, Any]] | dict[str, Any],
    pipeline: str | Path = DEFAULT_PIPELINE,
    search_dirs: tuple[str | Path, ...] | list[str | Path] = (),
) -> dict[str, Any]:
    """``[("loss.sigma", 2), ("strokes[0].count", 500)]`` -> the nested overrides mapping
    ``load_pipeline`` merges. A list on the way (``strokes[0]``) is copied from the
    pipeline's own value first, since the merge replaces lists whole. A malformed key is a
    ConfigError naming it; the values themselves are checked by load_pipeline."""
    pairs = list(items.items()) if isinstance(items, dict) else list(items)
    base: Any = None
    over: dict[str, Any] = {}
    for key, value in pairs:
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(str(key), "expected a dotted pipeline key (loss.sigma)")
        key = key.strip()
        path = _key_path(key)
        if any(isinstance(p, int) for p in path) and base is None:
            base = yaml.safe_load(resolve_pipeline(pipeline, search_dirs)
                                  .read_text(encoding="utf-8"))
        _assign(over, path, value, base, key)
    return over


def _key_path(key: str) -> list[str | int]:
    """``loss.sigma`` -> ["loss", "sigma"]; ``strokes[0].count`` -> ["strokes", 0, "count"]."""
    path: list[str | int] = []
    for part in key.split("."):
        m = _KEY_PART.fullmatch(part)
        if m is None:
            raise ConfigError(key, "not a dotted key (loss.sigma, strokes[0].count)")
        path.append(m.group(1))
        path += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    return path


def _assign(over: dict[str, Any], path: list[str | int], value: Any, base: Any,
            key: str) -> None:
    """Put ``value`` at ``path`` in ``over``; a list on the way is copied from ``base`` (the
    pipeline's own value) first, since the pipeline merge replaces lists whole."""
    node: Any = over
    base_node: Any = base
    for i, part in enumerate(path):
        last = i == len(path) - 1
        nxt = None if last else path[i + 1]
        base_child = _child(base_node, part)
        if isinstance(node, list):
            if not isinstance(part, int) or part >= len(node):
                raise ConfigError(key, f"the pipeline has no item {part} there")
        elif isinstance(part, int):
            raise ConfigError(key, f"{path[i - 1]} is not a list")
        if last:
            node[part] = value
            return
        current = node[part] if isinstance(node, list) or part in node else None
        if isinstance(nxt, int):
            if not isinstance(current, list):
                if not isinstance(base_child, list):
                    raise ConfigError(key, f"{part} is not a list in the pipeline")
                current = copy.deepcopy(base_child)
        elif not isinstance(current, dict):
            if current is not None and not isinstance(node, list):
                raise ConfigError(key, f"{part} is set twice")
            current = {} if current is None else current
        node[part] = current
        node, base_node = current, base_child


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict) and isinstance(part, str):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return None
