"""Target images: read any picture OpenCV reads, refuse bad or enormous ones, and bring it
to the pipeline's working resolution as a float32 (1, C, H, W) tensor in [0, 1] where white
paper is 1 and dark pixels are ink.

The tensor holds sRGB-encoded values, as an image file does. With ``tone: light`` the
photo is shrunk in linear light and its grey is its luminance (from RGB), encoded again:
the optimiser decodes it to the linear luminance the drawing must reflect.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from plotterd.errors import InputError
from plotterd.light import linear_to_srgb, luminance, np_linear_to_srgb, np_srgb_to_linear

if TYPE_CHECKING:
    from plotterd.pipeline import Pipeline

__all__ = ["DEFAULT_MAX_PIXELS", "load_image", "load_target", "working_size", "read_image"]

DEFAULT_MAX_PIXELS = 100_000_000

# EXIF orientation tag -> how to turn the stored pixels upright (as PIL's exif_transpose).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _header(path: Path, data: bytes, max_pixels: int) -> int:
    """Check the dimensions in the file's header BEFORE decoding it (decompression bombs);
    returns the EXIF orientation (1 when none).

    Pillow's ``Image.open`` is lazy: it parses the header and decodes nothing. Formats
    Pillow does not know are left to OpenCV, whose own pixel limit (2**30) then applies,
    and the decoded size is checked afterwards.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own bomb *warning*: we check below
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        # Pillow refuses above 2 x its MAX_IMAGE_PIXELS (~179 MP) before we can look.
        raise InputError(f"{path}: image is too large ({e})") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return 1
    w, h = im.size
    if w * h > max_pixels:
        raise InputError(
            f"{path}: image is too large: {w}x{h} = {w * h / 1e6:.1f} megapixels "
            f"(limit {max_pixels / 1e6:g})"
        )
    try:
        orientation = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not stop a good image
        orientation = 1
    try:
        if im.format == "JPEG":
            # OpenCV can decode a truncated JPEG without an error (grey fill); Pillow notices.
            # draft() makes Pillow decode at 1/8 scale (DCT scaling): all of the
            # entropy-coded data is still read, for a fraction of the time and memory.
            im.draft(im.mode, (max(1, w // 8), max(1, h // 8)))
            im.load()
        elif im.format == "PNG":
            # chunk structure and CRCs, without inflating: a truncated PNG is refused here
            # rather than by libpng, which also prints its error on stderr
            Image.open(io.BytesIO(data)).verify()  # on a fresh object: getexif read on
    except (OSError, ValueError, SyntaxError, struct.error) as e:
        raise InputError(f"{path}: corrupt or truncated image ({e})") from e
    return orientation if orientation in _ORIENT else 1


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to an upright float32 RGB (H, W, 3) array in [0, 1] on white:
    grey is repeated, alpha is composited over white paper, 16-bit and float images are
    scaled. Raises :class:`InputError` naming the file for anything unusable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise InputError(f"{path}: is a directory, not an image") from e
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from e
    if not data:
        raise InputError(f"{path}: empty file (0 bytes), not an image")
    orientation = _header(path, data, max_pixels)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise InputError(f"{path}: not an image OpenCV can read, or corrupt/truncated")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise InputError(
            f"{path}: image is too large: {img.shape[1]}x{img.shape[0]} "
            f"(limit {max_pixels / 1e6:g} megapixels)"
        )
    img = _ORIENT.get(orientation, lambda a: a)(img)
    if img.dtype == np.uint8:
        a = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        a = img.astype(np.float32) / 65535.0
    elif img.dtype.kind == "f":
        a = np.nan_to_num(img.astype(np.float32), nan=1.0)
        a = np.clip(a, 0.0, 1.0)  # HDR/EXR: values beyond paper white are still white
    else:
        raise InputError(f"{path}: unsupported pixel type {img.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    ch = a.shape[2]
    if ch == 1:
        rgb = np.repeat(a, 3, axis=2)
    elif ch == 2:  # grey + alpha
        rgb = np.repeat(a[:, :, :1], 3, axis=2)
        alpha = a[:, :, 1:2]
        rgb = rgb * alpha + (1.0 - alpha)
    elif ch in (3, 4):
        rgb = a[:, :, 2::-1]  # OpenCV's BGR(A) -> RGB
        if ch == 4:
            alpha = a[:, :, 3:4]
            rgb = rgb * alpha + (1.0 - alpha)  # composite on white paper
    else:
        raise InputError(f"{path}: unsupported number of channels ({ch})")
    return np.ascontiguousarray(rgb, dtype=np.float32)


def working_size(
    src_h: int, src_w: int, height: int | None, width: int | None
) -> tuple[int, int]:
    """(H, W) of the working canvas: both given, or one given and the other from the aspect."""
    if height and width:
        return int(height), int(width)
    if height:
        return int(height), max(2, round(height * src_w / src_h))
    if width:
        return max(2, round(width * src_h / src_w)), int(width)
    return src_h, src_w


def load_image(
    path: str | Path,
    *,
    height: int | None = None,
    width: int | None = None,
    channels: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    size=None,
    light: bool = False,
) -> torch.Tensor:
    """Read ``path`` and resize it (INTER_AREA) to the working size; (1, C, H, W) float32.
    ``size(src_h, src_w) -> (H, W)``, when given, chooses the working size instead.
    ``light``: average in linear light and take grey as the luminance (see the module)."""
    rgb = read_image(path, max_pixels=max_pixels)
    if size is not None:
        h, w = size(rgb.shape[0], rgb.shape[1])
    else:
        h, w = working_size(rgb.shape[0], rgb.shape[1], height, width)
    if light:
        return _light_target(rgb, h, w, channels)
    if (h, w) != rgb.shape[:2]:
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    if channels == 1:
        img = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None]
    elif channels == 3:
        img = rgb
    else:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).unsqueeze(0)
    return t.clamp_(0.0, 1.0)


def _light_target(rgb: np.ndarray, h: int, w: int, channels: int) -> torch.Tensor:
    """(1, C, H, W) sRGB values of ``rgb`` shrunk in linear light; grey is its luminance."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    linear = np_srgb_to_linear(rgb)
    if (h, w) != rgb.shape[:2]:
        linear = cv2.resize(linear, (w, h), interpolation=cv2.INTER_AREA)
    t = torch.from_numpy(np.ascontiguousarray(linear.transpose(2, 0, 1))).unsqueeze(0)
    if channels == 1:
        t = luminance(t.clamp(0.0, 1.0))
        return linear_to_srgb(t).contiguous()
    return torch.from_numpy(np.ascontiguousarray(
        np_linear_to_srgb(linear).transpose(2, 0, 1))).unsqueeze(0).clamp_(0.0, 1.0)


def load_target(path: str | Path, pipeline: Pipeline) -> torch.Tensor:
    """The pipeline's target: ``path`` at ``pipeline.resolution`` with ``pipeline.channels``."""
    size = None
    if pipeline.page is not None:  # the canvas is the drawing's box at 1 px = 1 nib
        page, nib = pipeline.page, pipeline.pen_model.nib_mm

        def size(src_h: int, src_w: int) -> tuple[int, int]:
            return page.canvas_size(src_h, src_w, nib)

    return load_image(path, height=pipeline.height, width=pipeline.width, size=size,
                      channels=pipeline.channels, light=pipeline.tone == "light",
                      max_pixels=int(pipeline.max_input_megapixels * 1_000_000))
