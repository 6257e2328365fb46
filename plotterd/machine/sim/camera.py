"""A simulated camera: the simulated plotter's page, photographed as a phone or a webcam
would, with everything that makes a real photo hard to measure.

Given a page's linear reflectance (grey or RGB, ``px_per_mm`` on the paper),
:func:`photograph` returns a JPEG and what it decodes to, after, in this order (the order
light meets them):

- perspective: a pinhole camera tilted up to ``max_tilt_deg`` out of the paper's plane in a
  random direction, rolled up to ``max_roll_deg``, the paper filling a random share of the
  frame at a random place in it, on a background (a table) around it;
- uneven light: a linear gradient across the frame and a vignette (cos^4 falloff);
- radial lens distortion (mild barrel), lens blur (Gaussian) and sensor noise (shot noise
  and read noise), in linear light;
- exposure (clipping at full scale), optionally a phone's tone curve (``tone_gamma``), sRGB
  encoding, JPEG compression.

The defaults are at least as harsh as a hand-held phone photo under a desk lamp. Seeded:
the same seed gives the same photo, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from plotterd.light import np_linear_to_srgb

__all__ = ["CameraSettings", "Photo", "photograph"]


@dataclass(frozen=True)
class CameraSettings:
    size_px: tuple[int, int] = (4000, 3000)  # width, height: a 12 MP phone
    max_tilt_deg: float = 20.0
    max_roll_deg: float = 25.0
    fill: tuple[float, float] = (0.55, 0.85)  # the paper's share of the frame (longer side)
    focal_frames: float = 0.8  # focal length in frame widths (a phone's wide lens)
    exposure: float = 0.8  # bare paper's level at the frame's centre (1 = clipping)
    gradient: float = 0.25  # light falls this much across the frame
    vignette: float = 1.0  # cos^4 falloff scale (0 = none)
    blur_px: float = 0.8  # lens blur sigma in photo pixels
    # radial lens distortion r' = r (1 + k1 r^2), r in half-diagonals: < 0 is barrel (what a
    # phone's own correction leaves; an uncorrected webcam is ten times worse)
    radial_k1: float = -0.02
    read_noise: float = 0.004  # linear light, one sigma
    shot_noise: float = 0.01  # sigma at full scale; scales with sqrt(signal)
    jpeg_quality: int = 85
    # a phone's own tone curve on top of sRGB, as a power on linear light (1 = none); phones
    # add contrast, and a reader that decodes plain sRGB does not know by how much
    tone_gamma: float = 1.1
    background: tuple[float, float, float] = field(default=(0.18, 0.13, 0.09))  # a wood desk


@dataclass
class Photo:
    jpeg: bytes
    image: np.ndarray  # (H, W, 3) uint8 RGB, the decoded JPEG
    # 3x3 homography, page mm -> photo px (pixel centres at 0), before the lens distortion
    page_to_photo: np.ndarray


def photograph(page: np.ndarray, px_per_mm: float, settings: CameraSettings | None = None,
               *, seed: int = 0) -> Photo:
    """Photograph ``page`` ((H, W) or (H, W, 3) linear reflectance, 1 = bare paper)."""
    s = settings or CameraSettings()
    rng = np.random.default_rng(seed)
    rgb = page if page.ndim == 3 else np.repeat(page[..., None], 3, axis=2)
    paper_mm = (rgb.shape[1] / px_per_mm, rgb.shape[0] / px_per_mm)
    h_page = _page_homography(paper_mm, s, rng)
    light = _warp(rgb.astype(np.float32), px_per_mm, h_page, s, rng)
    light = _distort(light, s.radial_k1)
    light *= _illumination(s, rng)[..., None]
    if s.blur_px > 0:
        light = cv2.GaussianBlur(light, (0, 0), s.blur_px)
    light = _noisy(light, s, rng)
    encoded = np_linear_to_srgb(np.clip(light, 0.0, 1.0) ** s.tone_gamma)
    pixels = np.round(encoded * 255.0).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(s.jpeg_quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode the JPEG")
    decoded = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return Photo(jpeg=buf.tobytes(), image=decoded, page_to_photo=h_page)


def _rotation(tilt: float, tilt_axis: float, roll: float) -> np.ndarray:
    """Tilt (rad) about an in-plane axis at angle ``tilt_axis``, then roll about the view."""
    axis = np.array([math.cos(tilt_axis), math.sin(tilt_axis), 0.0])
    tilt_m, _ = cv2.Rodrigues(axis * tilt)
    roll_m, _ = cv2.Rodrigues(np.array([0.0, 0.0, roll]))
    return roll_m @ tilt_m


def _page_homography(paper_mm: tuple[float, float], s: CameraSettings,
                     rng: np.random.Generator) -> np.ndarray:
    """Page mm -> photo px of a pinhole camera looking at the tilted, rolled paper."""
    w_px, h_px = s.size_px
    rot = _rotation(math.radians(rng.uniform(-s.max_tilt_deg, s.max_tilt_deg)),
                    rng.uniform(0, math.pi), math.radians(rng.uniform(-s.max_roll_deg,
                                                                     s.max_roll_deg)))
    corners = np.array([[0, 0], [paper_mm[0], 0], [paper_mm[0], paper_mm[1]],
                        [0, paper_mm[1]]], np.float64)
    centred = np.column_stack([corners - np.array(paper_mm) / 2, np.zeros(4)]) @ rot.T
    focal = s.focal_frames * w_px
    fill = rng.uniform(*s.fill)
    distance = focal * max(paper_mm) / (fill * max(w_px, h_px))  # first guess, then refine
    for _ in range(4):
        proj = focal * centred[:, :2] / (distance + centred[:, 2:3])
        extent = max(np.ptp(proj[:, 0]) / w_px, np.ptp(proj[:, 1]) / h_px)
        distance *= extent / fill
    proj = focal * centred[:, :2] / (distance + centred[:, 2:3])
    lo, hi = proj.min(axis=0), proj.max(axis=0)
    room = np.array([w_px, h_px]) - (hi - lo)
    shift = -lo + rng.uniform(0.1, 0.9, 2) * np.maximum(room, 0.0)
    return cv2.getPerspectiveTransform(corners.astype(np.float32),
                                       (proj + shift - 0.5).astype(np.float32))


def _warp(rgb: np.ndarray, px_per_mm: float, h_page: np.ndarray, s: CameraSettings,
          rng: np.random.Generator) -> np.ndarray:
    """The paper (anti-aliased in linear light, as a sensor's pixels integrate it) on the
    background."""
    to_page_px = np.diag([px_per_mm, px_per_mm, 1.0])
    to_page_px[:2, 2] = -0.5  # page pixel centres
    h_px = h_page @ np.linalg.inv(to_page_px)
    scale = math.sqrt(abs(np.linalg.det(h_px[:2, :2] / h_px[2, 2])))  # photo px / page px
    if scale < 1.0:
        rgb = cv2.GaussianBlur(rgb, (0, 0), 0.5 / scale)
    w_px, h_px_ = s.size_px
    warped = cv2.warpPerspective(rgb, h_px, (w_px, h_px_), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(-1, -1, -1))
    outside = warped[..., 0] < 0
    table = _background(s, rng)
    warped[outside] = table[outside]
    return warped


def _distort(img: np.ndarray, k1: float) -> np.ndarray:
    """Radial distortion about the frame's centre (inverse map to first order in k1)."""
    if k1 == 0:
        return img
    h, w = img.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, half_diag = (w - 1) / 2, (h - 1) / 2, math.hypot(w, h) / 2
    r2 = ((x - cx) ** 2 + (y - cy) ** 2) / half_diag ** 2
    scale = 1.0 - k1 * r2  # the undistorted point a distorted pixel sees
    return cv2.remap(img, cx + (x - cx) * scale, cy + (y - cy) * scale, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def _background(s: CameraSettings, rng: np.random.Generator) -> np.ndarray:
    """A dim surface with a low-frequency texture."""
    w_px, h_px = s.size_px
    small = rng.uniform(0.7, 1.3, (12, 16)).astype(np.float32)
    texture = cv2.resize(small, (w_px, h_px), interpolation=cv2.INTER_CUBIC)
    return texture[..., None] * np.asarray(s.background, np.float32)


def _illumination(s: CameraSettings, rng: np.random.Generator) -> np.ndarray:
    """Exposure x a gradient in a random direction x cos^4 vignetting."""
    w_px, h_px = s.size_px
    y, x = np.mgrid[0:h_px, 0:w_px].astype(np.float32)
    x = (x - w_px / 2) / w_px
    y = (y - h_px / 2) / w_px
    angle = rng.uniform(0, 2 * math.pi)
    gradient = 1.0 - s.gradient * (0.5 + math.cos(angle) * x + math.sin(angle) * y)
    cos_theta = 1.0 / np.sqrt(1.0 + (x * x + y * y) / (s.focal_frames ** 2))
    vignette = 1.0 - s.vignette * (1.0 - cos_theta ** 4)
    return (s.exposure * gradient * vignette / (1.0 - s.gradient * 0.5)).astype(np.float32)


def _noisy(light: np.ndarray, s: CameraSettings, rng: np.random.Generator) -> np.ndarray:
    sigma = np.sqrt(s.read_noise ** 2 + s.shot_noise ** 2 * np.clip(light, 0.0, None))
    return light + sigma * rng.standard_normal(light.shape, dtype=np.float32)
