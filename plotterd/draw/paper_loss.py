"""The ``paper`` loss: tone at viewing distance plus structure at arm's length.

A drawing on paper is judged twice: from across the room, where only its tone counts, and
at arm's length, where edges and texture show. The loss has one term for each:

- tone: MSE between the rendering and the target, both blurred at ``tone_sigma_px``
  (a 1.5 mm Gaussian at a 0.3 mm nib), as the papers' BlurMSE;
- structure: a weight-free full-reference similarity from piq on both images area-resampled
  to ``view_px_per_mm`` (2.5 px/mm is the eye's resolution at about 50 cm): HaarPSI
  (Reisenhofer et al. 2018, which tracks human judgement of structure closely), MS-SSIM or
  GMSD. No downloaded weights, so the default pipeline runs on a fresh machine.

The canvas resolution comes from the pipeline's pen (1 px = 1 nib), injected by the
optimiser as ``canvas_px_per_mm``.

With ``tone: light`` (injected by the optimiser from the pipeline, with the pen's
``pen_darkness``) the loss works in light: its images and target are ``1 - coverage``
(linear: the target is ``1 - scale x (1 - Y)`` of the photo's luminance Y), the page's
reflectance is ``1 - darkness x coverage``, the blur and the resample to the eye's view
happen on reflectance (lines mix optically), and then the tone term compares L* / 100 and
the structure term sees both views sRGB-encoded alike. With ``tone: pixel`` both terms
compare the values as given (coverage = 1 - sRGB grey).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F

from plotterd.draw.losses import (
    MAX_BLUR_SIGMA,
    Loss,
    _check_number,
    gaussian_blur,
    register_loss,
)
from plotterd.errors import ConfigError
from plotterd.light import lightness, linear_to_srgb

__all__ = ["PaperLoss", "STRUCTURE_TERMS", "black_point", "cap_shift_lightness",
           "capped_target"]

STRUCTURE_TERMS = ("haarpsi", "msssim", "gmsd", "none")
TONES = ("pixel", "light")
# light is squeezed into [eps, 1 - eps] before L* or the sRGB curve: their clamps to
# [0, 1] pass no gradient at exactly 0 or 1, which would leave a solid black, or bare
# paper where the photo is darker, without one; eps moves black's L* by under 1
_LIGHT_EPS = 1e-3


def _squeezed(light: torch.Tensor) -> torch.Tensor:
    return _LIGHT_EPS + (1.0 - 2.0 * _LIGHT_EPS) * light
_MIN_VIEW_PX = 40  # HaarPSI's three Haar scales after its 2x subsampling need this much
_MSSSIM_MIN_PX = 161  # piq's MS-SSIM: (kernel 11 - 1) x 2^(5 scales - 1) + 1


class PaperLoss(Loss):
    def __init__(self, target: torch.Tensor, tone_sigma_px: float, tone_weight: float,
                 structure: str, structure_weight: float, view_px_per_mm: float,
                 canvas_px_per_mm: float, view_blur_px: float, tone: str = "pixel",
                 pen_darkness: float = 1.0):
        super().__init__(target)
        self.light = tone == "light"
        self.pen_darkness = pen_darkness
        # the eye's blur before its "pixels": without it, a one-nib hatch beats against the
        # view grid, and the refinement learns the grid's phase instead of the picture
        self.view_blur = view_blur_px
        self.tone_sigma = tone_sigma_px
        self.tone_weight = tone_weight
        self.structure = structure
        self.structure_weight = structure_weight
        h, w = target.shape[-2:]
        ratio = view_px_per_mm / canvas_px_per_mm if canvas_px_per_mm > 0 else 1.0
        # an exact box (area) resample at a rational ratio up/down: nearest x up, then
        # average over down x down. F.interpolate(mode="area") is adaptive pooling, whose
        # uneven windows at 4:3 alias a one-nib hatch into moire the loss would then chase
        frac = Fraction(ratio).limit_denominator(8)
        self.up, self.down = frac.numerator, frac.denominator
        vh, vw = (h * self.up) // self.down, (w * self.up) // self.down
        if min(vh, vw) < _MIN_VIEW_PX or frac == 1:  # tiny: compare at its own resolution
            self.up = self.down = 1
            vh, vw = h, w
        self.view_size = (vh, vw)
        self.register_buffer("target_tone", self._tone(target))
        self.register_buffer("target_view", self._seen(target))

    def reflectance(self, image: torch.Tensor) -> torch.Tensor:
        """The page's reflectance where ``image`` is 1 - coverage (light)."""
        return 1.0 - self.pen_darkness * (1.0 - image)

    def _tone(self, image: torch.Tensor) -> torch.Tensor:
        if not self.light:
            return gaussian_blur(image, self.tone_sigma)
        mixed = gaussian_blur(self.reflectance(image), self.tone_sigma)
        return lightness(_squeezed(mixed)) / 100.0

    def _seen(self, image: torch.Tensor) -> torch.Tensor:
        """The view the structure term compares: values as given (pixel), or reflectance
        mixed in light and sRGB-encoded (light)."""
        if not self.light:
            return self._view(image).clamp(0.0, 1.0)
        return linear_to_srgb(_squeezed(self._view(self.reflectance(image))))

    def _view(self, image: torch.Tensor) -> torch.Tensor:
        if self.view_blur > 0:
            image = gaussian_blur(image, self.view_blur)
        if self.up == self.down:
            return image
        if self.up > 1:
            image = F.interpolate(image, scale_factor=self.up, mode="nearest")
        return F.avg_pool2d(image, self.down)

    def _structure(self, image: torch.Tensor) -> torch.Tensor:
        import piq

        view = self._seen(image)
        ref = self.target_view
        if self.structure == "haarpsi" and min(self.view_size) >= _MIN_VIEW_PX:
            return 1.0 - piq.haarpsi(view, ref, data_range=1.0)
        if self.structure == "msssim" and min(self.view_size) >= _MSSSIM_MIN_PX:
            return 1.0 - piq.multi_scale_ssim(view, ref, data_range=1.0)
        if self.structure == "gmsd":
            return piq.gmsd(view, ref, data_range=1.0)
        # too small for the chosen term's scales: single-scale SSIM
        return 1.0 - piq.ssim(view, ref, data_range=1.0, kernel_size=min(11, _odd(view)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        tone = F.mse_loss(self._tone(image), self.target_tone)
        loss = self.tone_weight * tone
        if self.structure != "none" and self.structure_weight > 0:
            loss = loss + self.structure_weight * self._structure(image)
        return loss

    def metadata(self) -> dict[str, Any]:
        return {"view_size": list(self.view_size), "structure": self.structure,
                "tone": "light" if self.light else "pixel"}


def _odd(image: torch.Tensor) -> int:
    n = min(image.shape[-2:])
    return max(1, n if n % 2 else n - 1)


def _validate(cfg: dict[str, Any]) -> None:
    _check_number(cfg, "tone_sigma_px", minimum=0.0, maximum=MAX_BLUR_SIGMA)
    _check_number(cfg, "tone_weight", minimum=0.0, maximum=1e6)
    _check_number(cfg, "structure_weight", minimum=0.0, maximum=1e6)
    _check_number(cfg, "view_px_per_mm", minimum=0.0, strict=True, maximum=1000.0)
    _check_number(cfg, "canvas_px_per_mm", minimum=0.0, maximum=10000.0)
    _check_number(cfg, "view_blur_px", minimum=0.0, maximum=MAX_BLUR_SIGMA)
    _check_number(cfg, "pen_darkness", minimum=0.0, strict=True, maximum=1.0)
    if cfg["tone"] not in TONES:
        raise ConfigError("loss.tone", f"must be one of {', '.join(TONES)}, got {cfg['tone']!r}"
                                       " (set it as the pipeline's tone)")
    if cfg["structure"] not in STRUCTURE_TERMS:
        raise ConfigError("loss.structure", f"must be one of {', '.join(STRUCTURE_TERMS)}, "
                                            f"got {cfg['structure']!r}")


@register_loss(
    "paper",
    {"tone_sigma_px": 5.0, "tone_weight": 10.0, "structure": "haarpsi",
     "structure_weight": 1.0, "view_px_per_mm": 2.5, "canvas_px_per_mm": 0.0,
     "view_blur_px": 0.6, "tone": "pixel", "pen_darkness": 1.0},
    _validate,
)
def _make_paper(target: torch.Tensor, **params: Any) -> Loss:
    return PaperLoss(target, **params)


def capped_target(target: torch.Tensor, scale: float) -> torch.Tensor:
    """The tone curve an ink cap imposes in light: coverage ``1 - target`` scaled by
    ``scale`` (<= 1). Every tone keeps its order and its share of the contrast; only the
    black point rises, to ``1 - scale x darkness``, rather than dark tones being clipped."""
    if scale >= 1.0:
        return target
    return 1.0 - scale * (1.0 - target)


def black_point(pen_darkness: float, scale: float = 1.0) -> dict[str, float]:
    """The darkest the drawing lays (reflectance, and its L*), after a cap's ``scale``."""
    reflectance = 1.0 - pen_darkness * min(scale, 1.0)
    with torch.no_grad():
        value = lightness(torch.full((1, 1, 1, 1), reflectance))
    return {"reflectance": round(reflectance, 4), "lightness": round(float(value), 2)}


@torch.no_grad()
def cap_shift_lightness(target: torch.Tensor, pen_darkness: float, scale: float) -> float:
    """Mean |dL*| between the page the photo asks for and the one the cap allows."""
    if scale >= 1.0:
        return 0.0

    def lstar(t: torch.Tensor) -> torch.Tensor:
        return lightness((1.0 - pen_darkness * (1.0 - t)).clamp(0.0, 1.0))

    return float((lstar(capped_target(target, scale)) - lstar(target)).abs().mean())
