"""Light: sRGB pixel values, linear light (reflectance, luminance) and CIE lightness L*.

Ink on paper mixes in light, not in pixel values: a hatch covering half the paper reflects
half the light (L* 76), while a 50 % sRGB grey pixel is 21 % of the light (L* 53). So every
stage that averages a page (a blur at viewing distance, a downsample to the eye's
resolution, a swatch's mean) does it on linear values, and compares in L* or in sRGB
encoding applied to both images alike.

The conversions are kornia's (D65, the sRGB curve, CIELAB as skimage and OpenCV define
them), so the loss (torch, differentiable), the benchmark and the pen fit (numpy) share one
definition. kornia's functions take three channels; a grey image is converted as the
neutral colour it is.
"""

from __future__ import annotations

import numpy as np
import torch
from kornia.color import linear_rgb_to_rgb, rgb_to_lab, rgb_to_linear_rgb, rgb_to_xyz

__all__ = ["srgb_to_linear", "linear_to_srgb", "luminance", "lightness",
           "srgb_to_luminance", "np_lightness", "np_srgb_to_linear", "np_linear_to_srgb",
           "np_srgb_to_luminance"]


def _per_channel(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3-channel conversion to (..., C, H, W) with C 1 or 3."""
    if x.shape[-3] == 3:
        return fn(x)
    if x.shape[-3] != 1:
        raise ValueError(f"need 1 or 3 channels, got {x.shape[-3]}")
    return fn(x.expand(*x.shape[:-3], 3, *x.shape[-2:]))[..., :1, :, :]


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded values in [0, 1] -> linear light, channel by channel."""
    return _per_channel(rgb_to_linear_rgb, x.clamp(0.0, 1.0))


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear light in [0, 1] -> sRGB-encoded values, channel by channel."""
    return _per_channel(linear_rgb_to_rgb, x.clamp(0.0, 1.0))


def luminance(linear: torch.Tensor) -> torch.Tensor:
    """Relative luminance Y (..., 1, H, W) of linear RGB (or of linear grey, unchanged)."""
    if linear.shape[-3] == 1:
        return linear
    return rgb_to_xyz(linear)[..., 1:2, :, :]


def srgb_to_luminance(x: torch.Tensor) -> torch.Tensor:
    """A photo's sRGB pixels (..., 1 or 3, H, W) -> its linear luminance (..., 1, H, W)."""
    return luminance(srgb_to_linear(x))


# below this luminance the sRGB curve is linear and L* is 903.3 Y: the gradient of the cube
# root is finite there, but kornia's float path still evaluates it; a floor keeps it finite
_Y_FLOOR = 1e-6


def lightness(y: torch.Tensor) -> torch.Tensor:
    """CIE L* in [0, 100] of linear luminance (..., 1, H, W) relative to the white (paper)."""
    grey = y.clamp(_Y_FLOOR, 1.0).expand(*y.shape[:-3], 3, *y.shape[-2:])
    return rgb_to_lab(linear_rgb_to_rgb(grey))[..., :1, :, :]


def _np(fn, a: np.ndarray, *, channels_last: bool) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if a.ndim == 2:
        t = t[None, None]
    elif channels_last:
        t = t.permute(2, 0, 1)[None]
    else:
        t = t[None]
    with torch.no_grad():
        out = fn(t)[0]
    out = out.permute(1, 2, 0) if (a.ndim == 3 and channels_last) else out
    arr = out.numpy()
    return arr[0] if (a.ndim == 2 and arr.ndim == 3) else arr


def np_lightness(y: np.ndarray) -> np.ndarray:
    """L* of a linear-luminance array (H, W)."""
    return _np(lightness, y, channels_last=False)


def np_srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) sRGB values in [0, 1] -> linear light, same shape."""
    return _np(srgb_to_linear, x, channels_last=True)


def np_linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) linear light in [0, 1] -> sRGB values, same shape."""
    return _np(linear_to_srgb, x, channels_last=True)


def np_srgb_to_luminance(x: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB sRGB values in [0, 1] -> linear luminance (H, W)."""
    out = _np(srgb_to_luminance, x, channels_last=True)
    return out[..., 0] if out.ndim == 3 else out
