"""Target loading: formats, compositing, resizing, and refusing bad or enormous files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from plotterd.draw.image import load_image, load_target, read_image, working_size
from plotterd.errors import InputError
from plotterd.pipeline import load_pipeline

DATA = Path(__file__).resolve().parents[1] / "data"


def test_grey_png_values_and_shape():
    path = DATA / "camera_small.png"
    ref = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    t = load_image(path)
    assert t.dtype == torch.float32 and t.shape == (1, 1, *ref.shape)
    assert np.allclose(t[0, 0].numpy(), ref, atol=1e-6)


def test_rgb_channel_order_and_grey_conversion(tmp_path):
    img = np.zeros((4, 6, 3), np.uint8)
    img[:, :3] = (0, 0, 255)  # BGR red on the left
    img[:, 3:] = (255, 0, 0)  # BGR blue on the right
    p = tmp_path / "rb.png"
    cv2.imwrite(str(p), img)
    rgb = load_image(p, channels=3)[0]
    assert rgb.shape == (3, 4, 6)
    assert rgb[0, 0, 0] == 1.0 and rgb[2, 0, 0] == 0.0  # red
    assert rgb[2, 0, 5] == 1.0 and rgb[0, 0, 5] == 0.0  # blue
    grey = load_image(p, channels=1)[0, 0]
    assert grey[0, 0].item() == pytest.approx(0.299, abs=2e-3)
    assert grey[0, 5].item() == pytest.approx(0.114, abs=2e-3)


def test_rgba_is_composited_on_white(tmp_path):
    img = np.zeros((2, 3, 4), np.uint8)  # black ink everywhere ...
    img[0, 0, 3] = 0  # ... transparent: paper shows
    img[0, 1, 3] = 255  # opaque black
    img[0, 2, 3] = 128  # half
    img[1, :, 3] = 255
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), img)
    t = load_image(p)[0, 0]
    assert t[0, 0].item() == pytest.approx(1.0)
    assert t[0, 1].item() == pytest.approx(0.0)
    assert t[0, 2].item() == pytest.approx(1 - 128 / 255, abs=1e-4)
    # the shipped RGBA test image: its transparent background comes out white
    horse = load_image(DATA / "horse_small.png")
    assert horse[0, 0, 0, 0].item() == pytest.approx(1.0, abs=1e-3)
    assert horse.min().item() < 0.2


def test_grey_alpha_png(tmp_path):
    p = tmp_path / "la.png"
    Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8), mode="LA").save(p)
    t = load_image(p)[0, 0]
    assert t[0, 0].item() == pytest.approx(1.0) and t[0, 1].item() == pytest.approx(0.0)


def test_16bit_png(tmp_path):
    img = np.array([[0, 32768, 65535]], np.uint16)
    p = tmp_path / "s16.png"
    cv2.imwrite(str(p), img)
    assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    t = load_image(p)[0, 0, 0]
    assert t.tolist() == pytest.approx([0.0, 32768 / 65535, 1.0], abs=1e-6)


def test_jpeg_and_exif_orientation(tmp_path):
    img = np.zeros((20, 40), np.uint8)  # wide, dark left half
    img[:, 20:] = 255
    p = tmp_path / "o.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    Image.fromarray(img).save(p, exif=exif, quality=95)
    rgb = read_image(p)
    assert rgb.shape == (40, 20, 3)  # upright: tall
    assert rgb[:20].mean() < 0.1 and rgb[20:].mean() > 0.9  # clockwise: left -> top


def test_resize_to_working_resolution():
    t = load_image(DATA / "camera_small.png", height=32)
    src = cv2.imread(str(DATA / "camera_small.png"), cv2.IMREAD_GRAYSCALE)
    assert t.shape == (1, 1, 32, round(32 * src.shape[1] / src.shape[0]))
    assert load_image(DATA / "camera_small.png", height=20, width=50).shape == (1, 1, 20, 50)
    assert load_image(DATA / "camera_small.png", width=24).shape[-1] == 24
    assert 0.0 <= t.min().item() and t.max().item() <= 1.0
    # INTER_AREA keeps the mean brightness
    full = load_image(DATA / "camera_small.png")
    assert t.mean().item() == pytest.approx(full.mean().item(), abs=0.01)
    assert working_size(100, 300, 50, None) == (50, 150)


def test_load_target_follows_the_pipeline():
    p = load_pipeline("tiny", overrides={"resolution": {"height": 40}})
    t = load_target(DATA / "astronaut_small.png", p)
    assert t.shape[:3] == (1, 1, 40)
    p3 = load_pipeline("tiny", overrides={"channels": 3, "resolution": {"height": 30, "width": 30}})
    assert load_target(DATA / "astronaut_small.png", p3).shape == (1, 3, 30, 30)


def _assert_input_error(path: Path, match: str, **kw) -> None:
    with pytest.raises(InputError) as e:
        load_image(path, **kw)
    msg = str(e.value)
    assert str(path) in msg and match in msg, msg


def test_missing_zero_byte_directory_and_non_image(tmp_path):
    _assert_input_error(tmp_path / "nope.png", "no such file")
    (tmp_path / "zero.png").write_bytes(b"")
    _assert_input_error(tmp_path / "zero.png", "empty")
    _assert_input_error(tmp_path, "directory")
    (tmp_path / "notes.png").write_text("this is not a picture\n")
    _assert_input_error(tmp_path / "notes.png", "not an image")


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_files(tmp_path, ext):
    g = np.random.default_rng(0)
    img = (g.random((60, 80, 3)) * 255).astype(np.uint8)
    full = tmp_path / f"full.{ext}"
    cv2.imwrite(str(full), img)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    assert load_image(full).shape == (1, 1, 60, 80)
    with pytest.raises(InputError) as e:
        load_image(cut)
    assert str(cut) in str(e.value)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height, with a tiny (bogus) IDAT: a bomb header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_enormous_dimensions_are_refused_before_decoding(tmp_path):
    big = tmp_path / "bomb.png"
    _png_header_only(big, 12_000, 9_000)  # 108 MP: over our 100 MP default
    _assert_input_error(big, "too large")
    huge = tmp_path / "bomb2.png"
    _png_header_only(huge, 40_000, 40_000)  # 1.6 GP: Pillow's own guard trips first
    _assert_input_error(huge, "too large")
    # the limit is configurable: a real 96-pixel-wide image over a tiny limit
    _assert_input_error(DATA / "camera_small.png", "too large", max_pixels=1000)
    p = load_pipeline("tiny", overrides={"max_input_megapixels": 0.001})
    with pytest.raises(InputError, match="too large"):
        load_target(DATA / "camera_small.png", p)
