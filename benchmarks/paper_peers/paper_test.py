"""The paper test: one box, one pen, one renderer, one viewing distance, the same scores.

Every method's strokes are polylines in mm inside the same box (150 mm on its long side,
the photo's aspect, origin top-left, y down). They are drawn by plotterd's pen model
(:class:`plotterd.pen.RoundNib`, 0.3 mm, exact width, round caps, saturating ink) at
10 px/mm, 4x supersampled, and compared with the photo in light:

- the page is reflectance (the pen model's ``1 - darkness x coverage``); the photo is its
  linear luminance Y (:mod:`plotterd.light`, from its RGB), whose black maps to the pen's
  black point: the target reflectance is ``1 - D (1 - Y)``;
- both are area-averaged to 2.5 px/mm in linear light (lines mix optically), then
  - tone: both blurred 1.5 mm in linear light, then CIE L*: mean |dL*| and SSIM of the
    L* maps;
  - structure: both sRGB-encoded alike, then HaarPSI, MS-SSIM and GMSD (piq).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from plotterd.gcode.motion import polyline_times, rest_to_rest
from plotterd.light import np_lightness, np_linear_to_srgb, np_srgb_to_luminance
from plotterd.pen import DrawingBox, PenModel, RoundNib, ink_needed_mm, total_length_mm

BOX_LONG_MM = 150.0
NIB_MM = 0.3
RENDER_PX_PER_MM = 10.0
VIEW_PX_PER_MM = 2.5
TONE_BLUR_MM = 1.5
# Plot-time model: the figures (40 mm/s drawing, 80 mm/s travel, 0.3 s per pen lift,
# which is grbl-servo's 0.15 s down + 0.15 s up dwell) with grbl-servo's acceleration and
# junction deviation, through plotterd's G-code motion model.
DRAW_FEED_MM_MIN = 40.0 * 60
TRAVEL_FEED_MM_MIN = 80.0 * 60
LIFT_S = 0.3
ACCEL_MM_S2 = 500.0
JUNCTION_DEVIATION_MM = 0.01

PEN = RoundNib(nib_mm=NIB_MM, darkness=1.0)


@dataclass
class Photo:
    name: str
    path: Path  # the grey photo (alpha composited on white), what every method reads
    grey: np.ndarray  # (H, W) float32 in [0, 1], 1 = white, source resolution, sRGB-encoded
    box: DrawingBox
    luminance: np.ndarray | None = None  # (H, W) linear Y of the photo's RGB; None: of grey

    def __post_init__(self) -> None:
        if self.luminance is None:
            self.luminance = np_srgb_to_luminance(self.grey)

    @property
    def view_size(self) -> tuple[int, int]:
        return view_size(self.box)

    def at_arms_length(self) -> np.ndarray:
        """The photo at 2.5 px/mm as a light-correct picture: Y area-averaged, sRGB-encoded."""
        return np_linear_to_srgb(self.light_view())

    def light_view(self) -> np.ndarray:
        """Linear luminance area-averaged to 2.5 px/mm (lines and pixels mix in light)."""
        return cv2.resize(self.luminance, self.view_size, interpolation=cv2.INTER_AREA)

    def at(self, px_per_mm: float) -> np.ndarray:
        """The grey photo resampled to ``px_per_mm`` over the box (area average when
        shrinking), as the peers read pixels: sRGB values."""
        w = max(2, round(self.box.width_mm * px_per_mm))
        h = max(2, round(self.box.height_mm * px_per_mm))
        interp = cv2.INTER_AREA if w < self.grey.shape[1] else cv2.INTER_LINEAR
        return cv2.resize(self.grey, (w, h), interpolation=interp)

    def ink_needed_mm(self) -> float:
        """Line length a drawing of this grey needs if it lays 1 - grey (sRGB values) as
        coverage, as the peers do: their own ink budget."""
        grey = cv2.resize(self.grey, self.view_size, interpolation=cv2.INTER_AREA)
        return ink_needed_mm(1.0 - grey, 1.0 / VIEW_PX_PER_MM, PEN)

    def light_ink_needed_mm(self, pen: PenModel | None = None) -> float:
        """Line length a drawing needs to match the photo in light: coverage 1 - Y (its black
        at the pen's black point, whatever the pen's darkness)."""
        nib = (pen or PEN).nib_mm
        return ink_needed_mm(1.0 - self.light_view(), 1.0 / VIEW_PX_PER_MM, RoundNib(nib))

    def with_gamma(self, gamma: float, workdir: Path) -> Photo:
        """The grey raised to ``gamma`` (> 1 darkens the mid-tones, as a DrawingBotV3 user's
        pre-correction does), saved for the methods that read a file; the luminance, which
        the drawing is scored against, stays the photo's."""
        if gamma == 1.0:
            return self
        grey = np.clip(self.grey, 0.0, 1.0) ** gamma
        out = workdir / f"{self.name}-gamma{gamma:g}.png"
        Image.fromarray(np.round(grey * 255).astype(np.uint8)).save(out)
        return Photo(self.name, out, grey.astype(np.float32), self.box, self.luminance)


@dataclass
class Drawing:
    lines_mm: list[np.ndarray]  # pen-down polylines, box mm, in plotting order
    setting: str
    opt_s: float
    info: dict[str, Any] = field(default_factory=dict)


def box_for(width_px: int, height_px: int, long_mm: float = BOX_LONG_MM) -> DrawingBox:
    """The long side is ``long_mm``; the short side follows the aspect, rounded so that the
    box is a whole number of pixels at arm's length (then 10 px/mm is exactly 4x that)."""
    step = 1.0 / VIEW_PX_PER_MM
    if width_px >= height_px:
        short = max(step, round(long_mm * height_px / width_px / step) * step)
        return DrawingBox(long_mm, short)
    short = max(step, round(long_mm * width_px / height_px / step) * step)
    return DrawingBox(short, long_mm)


def view_size(box: DrawingBox) -> tuple[int, int]:
    return (max(1, round(box.width_mm * VIEW_PX_PER_MM)),
            max(1, round(box.height_mm * VIEW_PX_PER_MM)))


def load_rgb(path: Path) -> np.ndarray:
    """RGB float32 (H, W, 3) in [0, 1]; transparency is composited on white paper."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(paper, rgba)
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def load_grey(path: Path) -> np.ndarray:
    """The photo's grey: its linear luminance (from RGB), sRGB-encoded, float32 in [0, 1]."""
    return np_linear_to_srgb(np_srgb_to_luminance(load_rgb(path)))


def load_photo(path: Path, workdir: Path, name: str | None = None) -> Photo:
    luminance = np_srgb_to_luminance(load_rgb(path))
    grey = np_linear_to_srgb(luminance)
    name = name or path.stem
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"{name}.png"
    Image.fromarray(np.round(grey * 255).astype(np.uint8)).save(out)
    h, w = grey.shape
    return Photo(name=name, path=out, grey=grey, box=box_for(w, h), luminance=luminance)


def same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Two photos are the same picture if their aspect matches and 64x64 thumbnails differ by
    under 2 % grey on average (samples/camera.png is a downscaled copy of camera.png)."""
    ra, rb = a.shape[1] / a.shape[0], b.shape[1] / b.shape[0]
    if abs(ra - rb) > 0.02 * max(ra, rb):
        return False
    ta = cv2.resize(a, (64, 64), interpolation=cv2.INTER_AREA)
    tb = cv2.resize(b, (64, 64), interpolation=cv2.INTER_AREA)
    return float(np.abs(ta - tb).mean()) < 0.02


def render(lines_mm: list[np.ndarray], box: DrawingBox, pen: PenModel = PEN) -> np.ndarray:
    """The page at 10 px/mm, 4x supersampled: reflectance float32, 1 = paper."""
    return pen.render(lines_mm, box, RENDER_PX_PER_MM, supersample=4)


def to_arms_length(page: np.ndarray, box: DrawingBox) -> np.ndarray:
    """The page's reflectance area-averaged to 2.5 px/mm (linear: lines mix in light)."""
    return cv2.resize(page, view_size(box), interpolation=cv2.INTER_AREA)


def _tensor(img: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None].clamp(0, 1)


def msssim_kernel(shape: tuple[int, ...]) -> int:
    """piq's MS-SSIM (5 scales) needs the short side > (kernel - 1) * 16: the largest odd
    kernel up to the usual 11 that fits (the text photo's 58 mm side is 144 px)."""
    k = 11
    while k > 3 and (k - 1) * 16 >= min(shape[-2:]):
        k -= 2
    return k


def target_reflectance(luminance: np.ndarray, pen: PenModel = PEN) -> np.ndarray:
    """The photo as the pen can lay it: its black at the pen's black point 1 - darkness."""
    return 1.0 - pen.darkness * (1.0 - luminance)


def scores(page_light: np.ndarray, photo_light: np.ndarray) -> dict[str, float]:
    """Scores of a page against its photo, both (H, W) linear reflectance at 2.5 px/mm."""
    import piq
    import torch

    sigma = TONE_BLUR_MM * VIEW_PX_PER_MM
    lp = np_lightness(cv2.GaussianBlur(page_light, (0, 0), sigma))
    lt = np_lightness(cv2.GaussianBlur(photo_light, (0, 0), sigma))
    x, y = _tensor(np_linear_to_srgb(page_light)), _tensor(np_linear_to_srgb(photo_light))
    with torch.no_grad():
        haar = float(piq.haarpsi(x, y, data_range=1.0))
        ms = float(piq.multi_scale_ssim(x, y, data_range=1.0,
                                        kernel_size=msssim_kernel(x.shape)))
        gmsd = float(piq.gmsd(x, y, data_range=1.0))
        tone = float(piq.ssim(_tensor(lp / 100.0), _tensor(lt / 100.0), data_range=1.0,
                              downsample=False))
    return {
        "haarpsi": haar,
        "msssim": ms,
        "gmsd": gmsd,
        "lightness_ssim": tone,
        "lightness_page": float(lp.mean()),
        "lightness_photo": float(lt.mean()),
        "delta_lightness": float(np.abs(lp - lt).mean()),
    }


def plot_time_s(lines_mm: list[np.ndarray]) -> float:
    """Seconds to plot the polylines in their order from the box's corner (0, 0): pen-down
    paths planned by plotterd's motion model, rest-to-rest travels, 0.3 s per pen lift."""
    paths = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in lines_mm if len(p)]
    if not paths:
        return 0.0
    paths = [p if len(p) > 1 else np.vstack([p, p]) for p in paths]
    draw = sum(float(t.sum()) for t in polyline_times(paths, DRAW_FEED_MM_MIN, ACCEL_MM_S2,
                                                      JUNCTION_DEVIATION_MM))
    starts = np.array([p[0] for p in paths])
    ends = np.vstack([[0.0, 0.0], [p[-1] for p in paths]])
    hops = np.hypot(*(starts - ends[:-1]).T)
    back = float(np.hypot(*ends[-1]))  # home again
    travel = float(rest_to_rest(np.r_[hops, back], TRAVEL_FEED_MM_MIN, ACCEL_MM_S2).sum())
    return draw + travel + LIFT_S * len(paths)


def order_for_plotting(lines_mm: list[np.ndarray]) -> list[np.ndarray]:
    """plotterd's vector-stage ordering (greedy nearest end, lines may flip), so that travel
    is planned the same way for every method."""
    from plotterd.vector import ordering

    lines = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in lines_mm if len(p)]
    if not lines:
        return []
    cplx = [p[:, 0] + 1j * p[:, 1] for p in lines]
    ordered = ordering.sort_lines(cplx, 0j, True, False)
    return [np.column_stack([c.real, c.imag]) for c in ordered]


def clip_to_box(lines_mm: list[np.ndarray], box: DrawingBox) -> list[np.ndarray]:
    """Clamp points into the box (the peers work in their own pixel frames)."""
    hi = np.array([box.width_mm, box.height_mm])
    return [np.clip(np.asarray(p, dtype=np.float64).reshape(-1, 2), 0, hi) for p in lines_mm]


def evaluate(drawing: Drawing, photo: Photo, pen: PenModel = PEN) -> dict[str, Any]:
    """Render (by ``pen``), view and score one drawing; returns the figures, the page and
    its light-correct view (sRGB-encoded, for the sheet)."""
    t0 = time.perf_counter()
    page = render(drawing.lines_mm, photo.box, pen)
    view = to_arms_length(page, photo.box)
    figures = scores(view, target_reflectance(photo.light_view(), pen))
    figures.update({
        "setting": drawing.setting,
        "ink_mm": total_length_mm(drawing.lines_mm),
        "ink_needed_mm": photo.light_ink_needed_mm(pen),
        "pen_lifts": len([p for p in drawing.lines_mm if len(p)]),
        "plot_min": plot_time_s(drawing.lines_mm) / 60.0,
        "opt_s": drawing.opt_s,
        "score_s": time.perf_counter() - t0,
        **drawing.info,
    })
    return {"figures": figures, "page": page, "view": np_linear_to_srgb(view)}


def finite(v: float) -> bool:
    return isinstance(v, float) and math.isfinite(v)
