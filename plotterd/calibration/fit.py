"""A pen fitted from a photo of its plotted calibration sheet.

1. Registration: the sheet's four ArUco marks are found on a downscaled grey copy
   (``cv2.aruco.ArucoDetector``), their corners refined on the full photo
   (``cv2.cornerSubPix``), and a homography (``cv2.findHomography``, RANSAC) maps page mm to
   the photo. Only the sheet's box is rectified, at ``RECT_PX_PER_MM``.
2. Light: the photo is decoded to linear light (:mod:`plotterd.light`) *before* it is
   averaged or resampled (lines mix in light, not in pixel values), then divided by a smooth
   fit of the bare paper between the swatches (flat-field), so every swatch reads as a
   reflectance relative to paper white.
3. Each swatch's mean relative luminance is read over its window (a whole number of line
   periods, with fractional pixel weights at the window's edges).
4. Fit: Murray-Davies with a round nib of effective width ``w`` and darkness ``D``: a swatch
   of coverage ``a(w)`` reflects ``1 - D a(w)``, where ``a = min(1, w / s)`` for lines at
   spacing ``s`` and a dot's area over its pitch squared for dots. For each ``w`` the best
   ``D`` is a one-line least squares, so ``w`` is scanned and the pair then polished by
   ``scipy.optimize.least_squares``, together with a power ``g`` on the reflectance
   (``(1 - D a)^g``) that soaks up a phone's own tone curve. The colour is the solid
   patch's, relative to paper.

Anything that makes the numbers untrustworthy is refused with a :class:`CalibrationError`
that says which: no marks, marks cut off, blur, overexposure, no ink, or a fit that does not
explain the swatches (RMS reflectance error above ``MAX_RESIDUAL``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from scipy.optimize import least_squares

from plotterd.calibration.errors import CalibrationError
from plotterd.calibration.sheet import ARUCO_DICTIONARY, MARKER_CELLS
from plotterd.light import luminance, np_linear_to_srgb, np_srgb_to_linear
from plotterd.pen import FittedPen

__all__ = ["PenFit", "fit_pen", "marker_detector", "MAX_RESIDUAL", "MAX_BLUR_MM", "MAX_CLIPPED"]

RECT_PX_PER_MM = 10.0
DETECT_SIDES = (2000, 1000, 500)  # marks are looked for on copies this large (px)
MAX_RESIDUAL = 0.02  # RMS reflectance error a fit may leave
MAX_BLUR_MM = 0.5  # the marks' edge spread (Gaussian sigma on the page) a photo may have
MAX_CLIPPED = 0.01  # share of the paper's pixels at full scale in any channel
BLUR_SIDE = 1000  # the photo's blur is judged on a copy this large
MAX_PHOTO_SPREAD_PX = 2.0  # ... and called blurred beyond this edge spread
MIN_DARKNESS = 0.05  # below this the swatches show no ink
FLAT_FIELD_DEGREE = 3
W_SCAN = (0.3, 3.0, 541)  # the nib widths scanned, in nominal nibs (from, to, count)
TONE_RANGE = (0.6, 1.6)


@dataclass
class PenFit:
    """A fitted pen and the evidence: every swatch's measured and modelled reflectance."""

    pen: FittedPen
    residual: float  # RMS reflectance error over the swatches
    swatches: list[dict[str, Any]]  # id, kind, spacing_mm, direction_deg, measured, modelled
    tone_gamma: float = 1.0  # the camera's tone curve left after sRGB decoding (1 = none)
    blur_mm: float = 0.0
    clipped: float = 0.0
    registration_px: float = 0.0  # RMS error of the marks' corners under the homography
    rectified: np.ndarray | None = field(default=None, repr=False)  # sRGB uint8, for a look

    def to_json(self) -> dict[str, Any]:
        return {**self.pen.to_dict(), "residual": self.residual,
                "tone_gamma": self.tone_gamma, "blur_mm": self.blur_mm,
                "clipped": self.clipped, "registration_px": self.registration_px,
                "swatches": self.swatches}


def fit_pen(photo: str | Path | np.ndarray, layout: dict[str, Any], name: str, row: int = 0,
            nominal: float | None = None, *, photo_record: str | None = None,
            max_blur_mm: float = MAX_BLUR_MM) -> PenFit:
    """Fit the pen of ``row`` of the sheet ``layout`` from ``photo`` (a path, or an (H, W, 3)
    RGB / (H, W) grey uint8 array). ``photo_record`` is what the pen's ``photo`` field says
    (default: the path given); ``max_blur_mm`` the edge spread refused. Raises
    CalibrationError, saving nothing."""
    rgb = _load(photo)
    if not 0 <= row < len(layout["rows"]):
        raise CalibrationError(f"the sheet has rows 0..{len(layout['rows']) - 1}, not {row}")
    page_pts, photo_pts = _find_marks(rgb, layout)
    h_page, reg_err = _homography(page_pts, photo_pts)
    _check_inside(h_page, layout, rgb.shape)
    sheet = _Rectified.make(rgb, h_page, layout)
    clipped = sheet.clipped_share()
    if clipped > MAX_CLIPPED:
        raise CalibrationError(
            f"overexposed: {clipped:.0%} of the bare paper is at full scale (at most "
            f"{MAX_CLIPPED:.0%}); lower the exposure or the light so the paper is not white-"
            "clipped")
    blur = sheet.blur_mm()
    if blur > max_blur_mm:
        raise CalibrationError(
            f"blurred: the marks' edges spread over {blur:.2f} mm (at most {max_blur_mm} mm); "
            "hold the camera still, focus on the sheet, or come closer")
    readings = sheet.read_swatches(layout["rows"][row]["swatches"])
    nib0 = float(nominal or layout["rows"][row]["nib_mm"])
    w, darkness, tone, modelled = _fit_nib(readings, nib0)
    residual = float(np.sqrt(np.mean((modelled - readings.measured) ** 2)))
    _check_fit(w, darkness, residual, nib0)
    pen = FittedPen(name=name, nib_mm=round(w, 4), darkness=round(darkness, 4),
                    colour=_colour(readings.solid_rgb ** (1.0 / tone)), nominal_nib_mm=nib0,
                    fitted_at=datetime.now(timezone.utc).date().isoformat(),
                    photo=photo_record if photo_record is not None else _photo_name(photo),
                    residual=round(residual, 5))
    return PenFit(pen=pen, residual=residual, swatches=readings.report(modelled),
                  tone_gamma=tone, blur_mm=blur, clipped=clipped, registration_px=reg_err,
                  rectified=sheet.srgb_preview())


# --- the photo and its marks -----------------------------------------------------------


def _photo_name(photo: str | Path | np.ndarray) -> str:
    return "" if isinstance(photo, np.ndarray) else str(photo)


def _load(photo: str | Path | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    if isinstance(photo, np.ndarray):
        img = photo
        if img.dtype != np.uint8:
            img = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] != 3:
            raise CalibrationError(f"a photo is (H, W, 3) RGB or (H, W) grey, not {img.shape}")
        return img
    bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CalibrationError(f"{photo}: cannot read the photo (missing, or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def marker_detector() -> cv2.aruco.ArucoDetector:
    """ArUco's detector for the sheet's marks. Its bits are sampled on 8 px per cell, not
    4: small, tilted, slightly blurred marks in a phone photo are then read reliably."""
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, ARUCO_DICTIONARY))
    params = cv2.aruco.DetectorParameters()
    params.perspectiveRemovePixelPerCell = 8
    params.perspectiveRemoveIgnoredMarginPerCell = 0.2
    return cv2.aruco.ArucoDetector(dictionary, params)


def _detect(grey: np.ndarray) -> dict[int, np.ndarray]:
    corners, ids, _ = marker_detector().detectMarkers(grey)
    if ids is None:
        return {}
    return {int(i): c.reshape(4, 2) for i, c in zip(ids.ravel(), corners, strict=True)}


def _find_marks(rgb: np.ndarray, layout: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Page mm and photo px of every corner of the layout's marks (all must be found).

    Marks are looked for on copies no larger than DETECT_SIDES (fast, and a blurred mark
    reads better smaller), the full photo only if it is smaller still."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    items = layout["markers"]["items"]
    wanted = {m["id"] for m in items}
    found: dict[int, np.ndarray] = {}
    for side in DETECT_SIDES:
        scale = min(1.0, side / max(grey.shape))
        small = grey if scale == 1.0 else cv2.resize(grey, None, fx=scale, fy=scale,
                                                     interpolation=cv2.INTER_AREA)
        for k, v in _detect(small).items():
            if k in wanted and k not in found:
                found[k] = (v + 0.5) / scale - 0.5  # pixel centres
        if len(found) == len(wanted):
            break
    if not found:
        spread = _edge_spread_px(grey)
        if spread > MAX_PHOTO_SPREAD_PX:
            raise CalibrationError(
                f"blurred: no calibration marks can be read, the photo's sharpest edges spread "
                f"over {spread:.1f} px of a {BLUR_SIDE} px copy; hold the camera still and "
                "focus on the sheet")
        raise CalibrationError(
            "no calibration marks found in the photo: photograph the plotted sheet with its "
            "four square corner marks in view")
    if len(found) < len(wanted):
        _explain_missing(found, items, grey)
    page, px = [], []
    for m in items:
        page.append(np.asarray(m["corners_mm"], np.float64))
        px.append(_refine(grey, found[m["id"]]))
    return np.concatenate(page), np.concatenate(px)


def _explain_missing(found: dict[int, np.ndarray], items: list[dict[str, Any]],
                     grey: np.ndarray) -> None:
    """Some marks were not read: cut off (they fall outside the photo, as the marks found
    place them), or in view but unreadable (blur)."""
    missing = [m for m in items if m["id"] not in found]
    names = ", ".join(str(m["id"]) for m in missing)
    seen = [m for m in items if m["id"] in found]
    h, _ = cv2.findHomography(np.concatenate([np.asarray(m["corners_mm"]) for m in seen]),
                              np.concatenate([found[m["id"]] for m in seen]))
    inside = h is not None
    if inside:
        where = cv2.perspectiveTransform(
            np.concatenate([np.asarray(m["corners_mm"]) for m in missing]).reshape(-1, 1, 2),
            h).reshape(-1, 2)
        inside = bool(((where >= 0) & (where <= [grey.shape[1] - 1, grey.shape[0] - 1])).all())
    if inside:
        raise CalibrationError(
            f"blurred: mark {names} is in the photo but cannot be read (found {len(found)} of "
            f"{len(items)}); hold the camera still, focus on the sheet, avoid glare")
    raise CalibrationError(
        f"marks cut off: found {len(found)} of the sheet's {len(items)} corner marks (missing "
        f"mark {names}); the whole sheet must be inside the photo")


def _edge_spread_px(grey: np.ndarray) -> float:
    """How blurred the whole photo is: the Gaussian sigma (px of a BLUR_SIDE copy) that
    turns its full contrast into its steepest slopes."""
    scale = min(1.0, BLUR_SIDE / max(grey.shape))
    small = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32) / 255.0
    slope = np.hypot(cv2.Sobel(small, cv2.CV_32F, 1, 0), cv2.Sobel(small, cv2.CV_32F, 0, 1))
    contrast = float(np.percentile(small, 99.5) - np.percentile(small, 0.5))
    steepest = float(np.percentile(slope, 99.9)) / 8.0  # Sobel's weights sum to 8
    return contrast / max(steepest * math.sqrt(2 * math.pi), 1e-9)


def _cell_px(corners: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(corners, axis=0, append=corners[:1]), axis=1).mean()
                 / MARKER_CELLS)


def _refine(grey: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Sub-pixel corners on the full photo, in a window a third of a cell wide; a corner
    that moves by more than a quarter cell (a blurred, rounded corner) keeps ArUco's."""
    cell_px = _cell_px(corners)
    half = int(np.clip(cell_px / 3, 2, 15))
    pts = corners.astype(np.float32).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.01)
    cv2.cornerSubPix(grey, pts, (half, half), (-1, -1), criteria)
    refined = pts.reshape(4, 2).astype(np.float64)
    moved = np.linalg.norm(refined - corners, axis=1) > cell_px / 4
    refined[moved] = corners[moved]
    return refined


def _homography(page: np.ndarray, px: np.ndarray) -> tuple[np.ndarray, float]:
    cell_px = np.mean([_cell_px(px[k:k + 4]) for k in range(0, len(px), 4)])
    # a blurred mark's corners come out rounded, a pixel or two inside: the threshold
    # allows that, while a corner on another mark's edge (cells away) is an outlier
    h, inliers = cv2.findHomography(page, px, cv2.RANSAC, max(3.0, 0.3 * cell_px))
    if h is None or int(inliers.sum()) < 0.75 * len(page):
        raise CalibrationError("the marks do not lie on one flat sheet (is the paper bent, "
                               "or are these marks from two sheets?)")
    proj = cv2.perspectiveTransform(page.reshape(-1, 1, 2), h).reshape(-1, 2)
    return h, float(np.sqrt(np.mean(np.sum((proj - px) ** 2, axis=1))))


def _check_inside(h_page: np.ndarray, layout: dict[str, Any], shape: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = layout["sheet_mm"]
    box = np.array([[[x0, y0]], [[x1, y0]], [[x1, y1]], [[x0, y1]]], np.float64)
    corners = cv2.perspectiveTransform(box, h_page).reshape(-1, 2)
    inside = ((corners >= 0) & (corners <= [shape[1] - 1, shape[0] - 1])).all()
    if not inside:
        raise CalibrationError("marks cut off: part of the sheet lies outside the photo; "
                               "the whole sheet must be inside the photo")


# --- the rectified sheet ---------------------------------------------------------------


def _srgb_lut() -> np.ndarray:
    """uint8 sRGB -> linear light, by plotterd.light's curve (a table: 12 MP in one pass)."""
    return np_srgb_to_linear((np.arange(256, dtype=np.float32) / 255.0).reshape(1, 256))[0]


_LUT = _srgb_lut()


@dataclass
class _Readings:
    ids: list[str]
    kinds: list[str]
    spacing: np.ndarray
    direction: np.ndarray
    extra: np.ndarray  # a dot's stroke length (mm), 0 for lines
    measured: np.ndarray  # mean relative luminance
    rgb: np.ndarray  # (n, 3) mean relative linear RGB

    @property
    def solid_rgb(self) -> np.ndarray:
        solid = [i for i, k in enumerate(self.kinds) if k == "solid"]
        return self.rgb[solid].mean(axis=0) if solid else np.zeros(3)

    def report(self, modelled: np.ndarray) -> list[dict[str, Any]]:
        return [{"id": i, "kind": k, "spacing_mm": round(float(s), 4),
                 "direction_deg": float(d), "measured": round(float(m), 4),
                 "modelled": round(float(p), 4)}
                for i, k, s, d, m, p in zip(self.ids, self.kinds, self.spacing, self.direction,
                                            self.measured, modelled, strict=True)]


@dataclass
class _Rectified:
    """The sheet's box at RECT_PX_PER_MM: linear RGB relative to paper, and what is needed
    to judge the photo."""

    origin_mm: tuple[float, float]
    relative: np.ndarray  # (H, W, 3) linear RGB / flat-field
    clipped: np.ndarray  # (H, W) share of clipped photo pixels
    paper: np.ndarray  # (H, W) bool, the flat-field's regions
    marks: np.ndarray  # (H, W) bool, the marks' squares

    @classmethod
    def make(cls, rgb: np.ndarray, h_page: np.ndarray, layout: dict[str, Any]) -> _Rectified:
        x0, y0, x1, y1 = layout["sheet_mm"]
        size = (math.ceil((x1 - x0) * RECT_PX_PER_MM), math.ceil((y1 - y0) * RECT_PX_PER_MM))
        to_mm = np.array([[1 / RECT_PX_PER_MM, 0, x0 + 0.5 / RECT_PX_PER_MM],
                          [0, 1 / RECT_PX_PER_MM, y0 + 0.5 / RECT_PX_PER_MM], [0, 0, 1]])
        rect_to_photo = h_page @ to_mm
        crop, clip, rect_to_crop = _crop(rgb, rect_to_photo, size)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        linear = cv2.warpPerspective(crop, rect_to_crop, size, flags=flags,
                                     borderMode=cv2.BORDER_REPLICATE)
        clipped = cv2.warpPerspective(clip, rect_to_crop, size, flags=flags,
                                      borderMode=cv2.BORDER_REPLICATE)
        paper = _mask(layout["paper_regions"], (x0, y0), size)
        edge = layout["markers"]["quiet_mm"] / 2  # the marks' outer edges, both sides
        marks = _mask([[m["corners_mm"][0][0] - edge, m["corners_mm"][0][1] - edge,
                        m["corners_mm"][2][0] + edge, m["corners_mm"][2][1] + edge]
                       for m in layout["markers"]["items"]], (x0, y0), size)
        relative = linear / _flat_field(linear, paper)
        return cls((x0, y0), relative, clipped, paper, marks)

    def clipped_share(self) -> float:
        return float(self.clipped[self.paper].mean())

    def luminance(self) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(self.relative.transpose(2, 0, 1)))
        return luminance(t).numpy()[0]

    def blur_mm(self) -> float:
        """The marks' edge spread as a Gaussian sigma on the page: a step of contrast C
        blurred by sigma has a steepest slope of C / (sigma sqrt(2 pi))."""
        y = self.luminance()
        gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        slope = np.hypot(gx, gy)[self.marks]
        values = y[self.marks]
        contrast = float(np.percentile(values, 90) - np.percentile(values, 10))
        steepest = float(np.percentile(slope, 99.5)) * RECT_PX_PER_MM  # per mm
        if contrast < 0.2 or steepest <= 0:
            return math.inf
        return contrast / (steepest * math.sqrt(2 * math.pi))

    def read_swatches(self, swatches: list[dict[str, Any]]) -> _Readings:
        y = self.luminance()
        measured, rgb = [], []
        for s in swatches:
            weights = self._window_weights(s["window_mm"])
            measured.append(_weighted_mean(y, *weights))
            rgb.append([_weighted_mean(self.relative[..., c], *weights) for c in range(3)])
        return _Readings(
            ids=[s["id"] for s in swatches], kinds=[s["kind"] for s in swatches],
            spacing=np.array([s["spacing_mm"] for s in swatches]),
            direction=np.array([s["direction_deg"] for s in swatches]),
            extra=np.array([s.get("dot_length_mm", 0.0) for s in swatches]),
            measured=np.array(measured), rgb=np.array(rgb))

    def _window_weights(self, window: list[float]) -> tuple[np.ndarray, np.ndarray, slice,
                                                            slice]:
        """Separable pixel weights: the share of each pixel inside the window."""
        x0, y0 = self.origin_mm
        a = (window[0] - x0) * RECT_PX_PER_MM, (window[2] - x0) * RECT_PX_PER_MM
        b = (window[1] - y0) * RECT_PX_PER_MM, (window[3] - y0) * RECT_PX_PER_MM
        wx, sx = _interval_weights(*a)
        wy, sy = _interval_weights(*b)
        return wx, wy, sx, sy

    def srgb_preview(self) -> np.ndarray:
        return np.round(np_linear_to_srgb(np.clip(self.relative, 0, 1)) * 255).astype(np.uint8)


def _interval_weights(lo: float, hi: float) -> tuple[np.ndarray, slice]:
    """Pixel i spans [i, i + 1): its share of [lo, hi]."""
    first, last = int(math.floor(lo)), int(math.ceil(hi))
    edges = np.arange(first, last, dtype=np.float64)
    w = np.clip(np.minimum(edges + 1, hi) - np.maximum(edges, lo), 0.0, 1.0)
    return w, slice(first, last)


def _weighted_mean(img: np.ndarray, wx: np.ndarray, wy: np.ndarray, sx: slice,
                   sy: slice) -> float:
    return float(wy @ img[sy, sx].astype(np.float64) @ wx / (wy.sum() * wx.sum()))


def _crop(rgb: np.ndarray, rect_to_photo: np.ndarray, size: tuple[int, int]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The photo around the sheet in linear light (area-averaged down to about 1.5 photo px
    per rectified px: sampling a finer photo would alias the line patterns), its clipped
    pixels, and the rectified px -> crop px homography."""
    w, h = size
    box = np.array([[[0, 0]], [[w, 0]], [[w, h]], [[0, h]]], np.float64)
    pts = cv2.perspectiveTransform(box, rect_to_photo).reshape(-1, 2)
    c0, r0 = np.maximum(np.floor(pts.min(axis=0)).astype(int) - 4, 0)
    c1, r1 = np.minimum(np.ceil(pts.max(axis=0)).astype(int) + 4,
                        [rgb.shape[1], rgb.shape[0]])
    crop = rgb[r0:r1, c0:c1]
    clip = (crop.max(axis=2) >= 254).astype(np.float32)
    linear = _LUT[crop]
    shift = np.array([[1, 0, -c0], [0, 1, -r0], [0, 0, 1]], np.float64)
    photo_px_per_rect = math.sqrt(abs(np.linalg.det(rect_to_photo[:2, :2]
                                                    / rect_to_photo[2, 2])))
    factor = photo_px_per_rect / 1.5
    if factor > 1.0:
        dsize = (max(1, round(linear.shape[1] / factor)), max(1, round(linear.shape[0] / factor)))
        sx, sy = dsize[0] / linear.shape[1], dsize[1] / linear.shape[0]
        linear = cv2.resize(linear, dsize, interpolation=cv2.INTER_AREA)
        clip = cv2.resize(clip, dsize, interpolation=cv2.INTER_AREA)
        # pixel centres: x' + 0.5 = (x + 0.5) * s
        shift = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]]) @ shift
    return linear, clip, shift @ rect_to_photo


def _mask(rects: list[list[float]], origin: tuple[float, float], size: tuple[int, int]
          ) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), bool)
    for x0, y0, x1, y1 in rects:
        c0, c1 = (round((v - origin[0]) * RECT_PX_PER_MM) for v in (x0, x1))
        r0, r1 = (round((v - origin[1]) * RECT_PX_PER_MM) for v in (y0, y1))
        mask[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] = True
    return mask


def _flat_field(linear: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """A smooth fit of the bare paper's light over the whole box, per channel: a cubic
    polynomial in x and y by least squares (numpy's lstsq on a handful of terms; no library
    fits a 2-D polynomial to scattered samples more simply), refitted once without outliers
    (dust, a stray mark)."""
    h, w = paper.shape
    rows, cols = np.nonzero(paper)
    pick = slice(None, None, max(1, len(rows) // 20000))
    rows, cols = rows[pick], cols[pick]
    design = _poly_terms(cols / w, rows / h)
    field = np.empty_like(linear)
    gy, gx = np.mgrid[0:h, 0:w]
    full = _poly_terms(gx.ravel() / w, gy.ravel() / h)
    for c in range(linear.shape[2]):
        values = linear[rows, cols, c].astype(np.float64)
        coef = np.linalg.lstsq(design, values, rcond=None)[0]
        resid = values - design @ coef
        keep = np.abs(resid) <= 3 * resid.std() + 1e-9
        coef = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
        field[..., c] = (full @ coef).reshape(h, w)
    if float(field.min()) <= 0.01:
        raise CalibrationError("underexposed: the paper is (nearly) black in the photo; light "
                               "the sheet evenly and photograph it again")
    return field


def _poly_terms(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.column_stack([x ** i * y ** j for i in range(FLAT_FIELD_DEGREE + 1)
                            for j in range(FLAT_FIELD_DEGREE + 1 - i)])


# --- the fit ---------------------------------------------------------------------------


def coverage(w: float | np.ndarray, kinds: list[str], spacing: np.ndarray,
             extra: np.ndarray) -> np.ndarray:
    """Murray-Davies coverage of each swatch by a round nib of width ``w`` (mm)."""
    w = np.asarray(w, np.float64)[..., None]
    lines = w / spacing
    dots = (math.pi * w * w / 4 + w * extra) / (spacing * spacing)
    is_dots = np.array([k == "dots" for k in kinds])
    return np.minimum(1.0, np.where(is_dots, dots, lines))


def _best_darkness(a: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """For each row of coverages, the darkness minimising sum (1 - D a - m)^2."""
    ink = 1.0 - measured
    return np.clip((a @ ink) / np.maximum((a * a).sum(axis=-1), 1e-12), 0.0, 1.0)


def _fit_nib(r: _Readings, nib0: float) -> tuple[float, float, float, np.ndarray]:
    """(width, darkness, tone, modelled reflectances): a scan over w (D in closed form),
    then all three polished together. ``tone`` is a power on the modelled reflectance: what
    is left of the camera's tone curve after sRGB decoding (a phone adds its own), which
    would otherwise pull the width and darkness."""
    widths = np.linspace(W_SCAN[0] * nib0, W_SCAN[1] * nib0, W_SCAN[2])
    a = coverage(widths, r.kinds, r.spacing, r.extra)
    d = _best_darkness(a, r.measured)
    sse = ((1.0 - d[:, None] * a - r.measured) ** 2).sum(axis=1)
    k = int(np.argmin(sse))

    def model(p: np.ndarray) -> np.ndarray:
        return (1.0 - p[1] * coverage(p[0], r.kinds, r.spacing, r.extra)) ** p[2]

    lo, hi = widths[0], widths[-1]
    start = np.array([widths[k], max(float(d[k]), 1e-3), 1.0])
    sol = least_squares(lambda p: model(p) - r.measured, start,
                        bounds=([lo, 1e-3, TONE_RANGE[0]], [hi, 1.0, TONE_RANGE[1]]),
                        x_scale=[nib0, 1.0, 1.0])
    return float(sol.x[0]), float(sol.x[1]), float(sol.x[2]), model(sol.x)


def _check_fit(w: float, darkness: float, residual: float, nib0: float) -> None:
    if darkness < MIN_DARKNESS:
        raise CalibrationError("no ink in the swatches: is this the photo of this sheet, and "
                               "of this pen's row (--row)?")
    if not W_SCAN[0] * nib0 * 1.01 < w < W_SCAN[1] * nib0 * 0.99:
        raise CalibrationError(
            f"the pen's lines are {w:.2f} mm wide, too far from the sheet's nominal "
            f"{nib0:g} mm to measure; make a sheet for a nib near {w:.2f} mm")
    if residual > MAX_RESIDUAL:
        raise CalibrationError(
            f"the fit does not explain the swatches (RMS error {residual:.3f}, at most "
            f"{MAX_RESIDUAL}): glare, shadows, a smudged or wrong sheet? Photograph it again "
            "in even light")


def _colour(rgb: np.ndarray) -> str:
    srgb = np_linear_to_srgb(np.clip(rgb, 0.0, 1.0).astype(np.float32).reshape(1, 1, 3))
    r, g, b = (int(round(float(v) * 255)) for v in srgb.reshape(3))
    return f"#{r:02x}{g:02x}{b:02x}"
