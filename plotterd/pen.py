"""The pen and the page: facts the draw, vector, G-code and simulator stages all share.

A :class:`PenModel` says how one pen lays ink on paper. Every stage takes the same object:

- the optimiser sizes its canvas and its strokes' Gaussian from it (:meth:`raster_width_px`),
- the vector and G-code stages draw with its nib width,
- the simulated plotter and the paper benchmark render with :meth:`PenModel.render`.

:class:`RoundNib` is the analytic model: a round nib of ``nib_mm`` that lays ink of
``darkness`` over every point within ``nib_mm / 2`` of its path; where lines cross, ink
saturates (a pixel is covered or not, never covered twice). A pen fitted from photographs of
real plots can replace it behind the same interface (``nib_mm``, ``darkness``,
``raster_width_px``, ``ink_per_mm``, ``render``).

:class:`DrawingBox` is the drawing's box on the paper, in mm; with a pen it gives the working
canvas of the optimiser: 1 canvas pixel = 1 nib width. That is the coarsest raster on which
two lines one nib apart stay distinct, and there the papers' Gaussian of
``sigma = 0.54925 * 1 px`` is the least-squares fit to the nib's box profile, whose integral
across the line (``sigma * sqrt(pi)`` = 0.97 px) equals the nib's width: the raster's tone is
the pen's tone. A finer raster costs four times as much per halving for little gain at
viewing distance.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import yaml

from plotterd.errors import ConfigError

__all__ = [
    "DrawingBox",
    "FittedPen",
    "PenModel",
    "RoundNib",
    "pen_from_dict",
    "box_from_dict",
    "pens_dir",
    "load_pen_profile",
    "save_pen_profile",
    "list_pen_profiles",
]

SIGMA_PER_PIXEL_WIDTH = 0.54925  # method.md, appendix A: Gaussian sigma of a 1-px-wide stroke


@runtime_checkable
class PenModel(Protocol):
    """How a pen lays ink. ``render`` returns grey in [0, 1] (1 = bare paper)."""

    nib_mm: float
    darkness: float

    def raster_width_px(self, px_per_mm: float) -> float: ...

    def ink_per_mm(self) -> float: ...

    def render(self, polylines_mm: Iterable[np.ndarray], box: DrawingBox, px_per_mm: float,
               *, supersample: int = 4) -> np.ndarray: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DrawingBox:
    """The drawing's box on the paper: ``width_mm`` x ``height_mm``, origin top-left, y down."""

    width_mm: float
    height_mm: float

    def canvas_px(self, pen: PenModel) -> tuple[int, int]:
        """(width, height) of the working canvas at 1 px = 1 nib width."""
        return (max(2, round(self.width_mm / pen.nib_mm)),
                max(2, round(self.height_mm / pen.nib_mm)))

    def to_dict(self) -> dict[str, float]:
        return {"width_mm": self.width_mm, "height_mm": self.height_mm}


@dataclass(frozen=True)
class RoundNib:
    """A round nib of ``nib_mm`` laying ink of ``darkness`` (1 = black); overlaps saturate."""

    nib_mm: float = 0.3
    darkness: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.nib_mm) and 0.01 <= self.nib_mm <= 20):
            raise ConfigError("pen.nib_mm", f"must be within [0.01, 20] mm, got {self.nib_mm}")
        if not (math.isfinite(self.darkness) and 0 < self.darkness <= 1):
            raise ConfigError("pen.darkness", f"must be within (0, 1], got {self.darkness}")

    def raster_width_px(self, px_per_mm: float) -> float:
        return self.nib_mm * px_per_mm

    def ink_per_mm(self) -> float:
        """mm^2 of full darkness one mm of line lays on bare paper."""
        return self.nib_mm * self.darkness

    def render(self, polylines_mm: Iterable[np.ndarray], box: DrawingBox, px_per_mm: float,
               *, supersample: int = 4) -> np.ndarray:
        """Grey image (H, W) float32 of the box at ``px_per_mm``; 1 = paper.

        Drawn at ``supersample`` times the resolution and area-averaged. The ink is every
        pixel within nib/2 of a path, by a Euclidean distance transform of the 1-px centre
        lines: exact width and round caps at any nib, unlike cv2's thick lines, whose width
        is rounded to odd pixel counts (a 0.3 mm line at 40 px/mm comes out 13 px, not 12)."""
        return render_paths(polylines_mm, box, px_per_mm, self.nib_mm, self.darkness,
                            supersample=supersample)

    def to_dict(self) -> dict[str, Any]:
        return {"model": "round", "nib_mm": self.nib_mm, "darkness": self.darkness}


@dataclass(frozen=True)
class FittedPen:
    """A pen measured from a photograph of its calibration sheet (``plotterd pens fit``).

    It lays ink as a round nib of its *effective* width ``nib_mm`` (the nominal nib plus the
    ink's spread into the paper's fibres) and ``darkness`` (1 - the line's reflectance
    relative to the paper); ``colour`` is the solid ink's sRGB colour on this paper."""

    name: str
    nib_mm: float
    darkness: float
    colour: str = "#000000"
    nominal_nib_mm: float | None = None
    fitted_at: str = ""
    photo: str = ""
    residual: float = 0.0

    def __post_init__(self) -> None:
        RoundNib(self.nib_mm, self.darkness)  # the same checks
        if not _PROFILE_NAME.fullmatch(self.name):
            raise ConfigError("pen.profile", f"bad pen name {self.name!r} (letters, digits, "
                                             "'.', '_' and '-' only)")
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", self.colour):
            raise ConfigError("pen.colour", f"must be #rrggbb, got {self.colour!r}")

    def raster_width_px(self, px_per_mm: float) -> float:
        return self.nib_mm * px_per_mm

    def ink_per_mm(self) -> float:
        return self.nib_mm * self.darkness

    def render(self, polylines_mm: Iterable[np.ndarray], box: DrawingBox, px_per_mm: float,
               *, supersample: int = 4) -> np.ndarray:
        return render_paths(polylines_mm, box, px_per_mm, self.nib_mm, self.darkness,
                            supersample=supersample)

    def to_dict(self) -> dict[str, Any]:
        """Everything, so strokes.json's metadata rebuilds the pen without the pens folder."""
        return {"model": "fitted", "profile": self.name, **{
            k: v for k, v in asdict(self).items() if k != "name"}}


def render_paths(polylines_mm: Iterable[np.ndarray], box: DrawingBox, px_per_mm: float,
                 nib_mm: float, darkness: float, *, supersample: int = 4) -> np.ndarray:
    """See :meth:`RoundNib.render`."""
    import cv2  # only the renderer needs it

    w1 = max(1, round(box.width_mm * px_per_mm))
    h1 = max(1, round(box.height_mm * px_per_mm))
    ss = _supersample(int(supersample), nib_mm * px_per_mm, w1 * h1)
    scale = px_per_mm * ss
    w, h = w1 * ss, h1 * ss
    centre = np.full((h, w), 255, np.uint8)  # 0 on centre lines
    shift = 4
    for line in polylines_mm:
        pts = np.asarray(line, dtype=np.float64).reshape(-1, 2)
        if len(pts) == 0:
            continue
        # pixel centres sit at (i + 0.5) / scale mm
        px = np.round((pts * scale - 0.5) * (1 << shift)).astype(np.int32)
        if len(px) == 1:
            px = np.vstack([px, px])
        cv2.polylines(centre, [px.reshape(-1, 1, 2)], False, 0, 1, cv2.LINE_8, shift)
    dist = cv2.distanceTransform(centre, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    del centre
    # a pixel whose centre lies d from the path is covered over [d - 1/2, d + 1/2]: the
    # band of half-width r covers clip(r + 1/2 - d, 0, 1) of it (exact across straight
    # lines); in place, so a whole page needs one float array, not three
    np.subtract(nib_mm * scale / 2 + 0.5, dist, out=dist)
    covered = np.clip(dist, 0.0, 1.0, out=dist)
    if ss > 1:
        covered = cv2.resize(covered, (w // ss, h // ss), interpolation=cv2.INTER_AREA)
    return 1.0 - darkness * covered


# centre lines are rasterised to whole supersampled pixels: with fewer than this many across
# the nib, hatch lines one nib apart open and close slivers between them
_MIN_SS_PX_PER_NIB = 8
_MAX_SS_PIXELS = 40_000_000  # the supersampled page's size cap (160 MB of float work array)


def _supersample(asked: int, nib_px: float, pixels: int) -> int:
    """The supersampling: at least ``asked``, more for a thin nib, within the size cap."""
    want = max(1, asked, math.ceil(_MIN_SS_PX_PER_NIB / max(nib_px, 1e-9)))
    cap = max(1, math.isqrt(max(1, _MAX_SS_PIXELS // max(1, pixels))))
    return max(1, asked, min(want, cap))


_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FITTED_KEYS = {"nib_mm", "darkness", "colour", "nominal_nib_mm", "fitted_at", "photo",
                "residual"}


def pen_from_dict(d: dict[str, Any] | None, key: str = "pen",
                  pens_folder: Path | None = None) -> RoundNib | FittedPen:
    """Parse ``{nib_mm, darkness, model: round}``, ``{profile: NAME}`` (a fitted pen from
    the pens folder) or a fitted pen's own ``to_dict``; ConfigError names ``key.field``."""
    d = dict(d or {})
    model = d.pop("model", "fitted" if "profile" in d else "round")
    if model == "fitted":
        return _fitted_from_dict(d, key, pens_folder)
    if model != "round":
        raise ConfigError(f"{key}.model", f"unknown pen model {model!r} (known: round, fitted)")
    values = _numbers(d, {"nib_mm", "darkness"}, key)
    try:
        return RoundNib(**values)
    except ConfigError as e:
        raise ConfigError(e.key.replace("pen", key, 1), e.message) from None


def _numbers(d: dict[str, Any], allowed: set[str], key: str) -> dict[str, float]:
    for k in d:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}", f"unknown key (known: {', '.join(sorted(allowed))})")
    values = {}
    for k in allowed & d.keys():
        v = d[k]
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{key}.{k}", f"must be a number, got {v!r}")
        values[k] = float(v)
    return values


def _fitted_from_dict(d: dict[str, Any], key: str, pens_folder: Path | None) -> FittedPen:
    name = d.pop("profile", None)
    if not isinstance(name, str):
        raise ConfigError(f"{key}.profile", f"must be a pen profile's name, got {name!r}")
    if not d:  # a reference: the profile's file says the rest
        return load_pen_profile(name, pens_folder, key=key)
    unknown = set(d) - _FITTED_KEYS
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}",
                          f"unknown key (known: profile, {', '.join(sorted(_FITTED_KEYS))})")
    try:
        return FittedPen(name=name, **d)
    except (TypeError, ValueError) as e:
        raise ConfigError(key, f"not a fitted pen: {e}") from None
    except ConfigError as e:
        raise ConfigError(e.key.replace("pen", key, 1), e.message) from None


def pens_dir() -> Path:
    """Where fitted pen profiles live: ``$PLOTTERD_PENS_DIR``, else the user data folder."""
    env = os.environ.get("PLOTTERD_PENS_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("plotterd")) / "pens"


def _profile_path(name: str, folder: Path | None, key: str) -> Path:
    if not _PROFILE_NAME.fullmatch(name):  # a name, never a path
        raise ConfigError(f"{key}.profile", f"bad pen name {name!r} (letters, digits, '.', "
                                            "'_' and '-' only)")
    return (folder or pens_dir()) / f"{name}.yaml"


def load_pen_profile(name: str, folder: Path | None = None, key: str = "pen") -> FittedPen:
    """The fitted pen ``name`` from ``folder`` (default :func:`pens_dir`)."""
    path = _profile_path(name, folder, key)
    if not path.is_file():
        known = ", ".join(p.name for p in list_pen_profiles(folder)) or "none"
        raise ConfigError(f"{key}.profile", f"no pen profile {name!r} in {path.parent} "
                                            f"(known: {known}); fit one with `plotterd pens fit`")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{key}.profile", f"{path}: unreadable pen profile ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}.profile", f"{path}: not a pen profile")
    raw.pop("model", None)
    raw["profile"] = name
    return _fitted_from_dict(raw, key, folder)


def save_pen_profile(pen: FittedPen, folder: Path | None = None) -> Path:
    """Write ``pen`` as ``NAME.yaml`` (atomically: a reader never sees half a profile)."""
    path = _profile_path(pen.name, folder, "pen")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(pen.to_dict(), sort_keys=False))
    os.replace(tmp, path)
    return path


def list_pen_profiles(folder: Path | None = None) -> list[FittedPen]:
    """Every readable profile in ``folder``, by name."""
    folder = folder or pens_dir()
    out = []
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            out.append(load_pen_profile(path.stem, folder))
        except ConfigError:
            continue
    return out


def box_from_dict(d: Any, aspect: float | None = None, key: str = "page") -> DrawingBox:
    """``{width_mm, height_mm}``; either may be left out and follow the picture's aspect
    (width / height)."""
    if not isinstance(d, dict):
        raise ConfigError(key, "must be a mapping with width_mm and/or height_mm")
    for k in d:
        if k not in ("width_mm", "height_mm"):
            raise ConfigError(f"{key}.{k}", "unknown key (known: height_mm, width_mm)")
    vals: dict[str, float] = {}
    for k in ("width_mm", "height_mm"):
        if k in d:
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, int | float) or not (
                    math.isfinite(v) and 1 <= v <= 5000):
                raise ConfigError(f"{key}.{k}", "must be a number of mm within [1, 5000]")
            vals[k] = float(v)
    if not vals:
        raise ConfigError(key, "give width_mm or height_mm")
    if len(vals) == 1:
        if aspect is None:
            raise ConfigError(key, "both width_mm and height_mm are needed here")
        if "width_mm" in vals:
            vals["height_mm"] = vals["width_mm"] / aspect
        else:
            vals["width_mm"] = vals["height_mm"] * aspect
    return DrawingBox(vals["width_mm"], vals["height_mm"])


def ink_needed_mm(darkness: np.ndarray, mm_per_px: float, pen: PenModel) -> float:
    """Line length (mm) a faithful drawing of ``darkness`` (H, W in [0, 1], 0 = paper) needs:
    total darkness x area / (nib width x ink darkness)."""
    area_mm2 = float(np.clip(darkness, 0, 1).sum()) * mm_per_px * mm_per_px
    return area_mm2 / pen.ink_per_mm()


def total_length_mm(polylines_mm: Sequence[np.ndarray]) -> float:
    return float(sum(np.linalg.norm(np.diff(np.asarray(p), axis=0), axis=1).sum()
                     for p in polylines_mm if len(p) > 1))
