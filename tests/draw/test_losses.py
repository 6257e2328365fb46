"""Pixel losses: known values, the registry's validation, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from plotterd.draw.losses import (
    SSMSE,
    BlurMSE,
    build_loss,
    check_loss_config,
    gaussian_blur,
    gaussian_kernel1d,
    loss_names,
    scale_space,
)
from plotterd.errors import ConfigError


def _rand(seed: int, shape=(1, 1, 24, 31)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g)


def test_pixel_losses_are_registered():
    names = loss_names()
    for n in ("mse", "blurmse", "ssmse"):
        assert n in names


def test_mse_known_value():
    a, b = _rand(0), _rand(1)
    loss = build_loss({"type": "mse"}, b)
    assert loss(a).item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-6)
    assert loss(b).item() == 0.0


@pytest.mark.parametrize("channels", [1, 3])
def test_blurmse_sigma0_is_mse(channels):
    a, b = _rand(2, (1, channels, 20, 17)), _rand(3, (1, channels, 20, 17))
    mse = build_loss({"type": "mse"}, b)(a)
    for blur_target in (True, False):
        blur0 = build_loss({"type": "blurmse", "sigma": 0, "blur_target": blur_target}, b)(a)
        assert blur0.item() == mse.item()


def test_blurmse_blurs_both_or_only_the_rendering():
    a, b = _rand(4), _rand(5)
    both = build_loss({"type": "blurmse", "sigma": 1.5}, b)(a)
    assert both.item() == pytest.approx(
        ((gaussian_blur(a, 1.5) - gaussian_blur(b, 1.5)) ** 2).mean().item(), rel=1e-6
    )
    only = build_loss({"type": "blurmse", "sigma": 1.5, "blur_target": False}, b)(a)
    assert only.item() == pytest.approx(((gaussian_blur(a, 1.5) - b) ** 2).mean().item(), rel=1e-6)
    # blurring both smooths away high-frequency noise: the distance shrinks
    assert both.item() < only.item()
    assert build_loss({"type": "blurmse", "sigma": 2.0}, b)(b).item() == 0.0


def test_blurmse_target_is_blurred_once_at_construction():
    b = _rand(6)
    loss = BlurMSE(b, sigma=1.0)
    assert torch.equal(loss.target, gaussian_blur(b, 1.0))


def test_gaussian_kernel_and_blur_properties():
    k = gaussian_kernel1d(1.3, dtype=torch.float64)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-12)
    r = (k.numel() - 1) // 2
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    assert (k * x * x).sum().item() == pytest.approx(1.3**2, rel=1e-3)  # variance sigma^2
    # mirrored edges: a blank page stays exactly blank, even with a kernel wider than it
    white = torch.ones(1, 1, 5, 7)
    assert torch.allclose(gaussian_blur(white, 6.0), white, atol=1e-6)
    # a single dot spreads into the 2-D Gaussian with the same sigma
    dot = torch.zeros(1, 1, 41, 41, dtype=torch.float64)
    dot[0, 0, 20, 20] = 1.0
    out = gaussian_blur(dot, 2.0)[0, 0]
    yy, xx = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    var = (out * ((xx - 20) ** 2)).sum().item()
    assert var == pytest.approx(4.0, rel=1e-3)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("pyramid", [False, True])
def test_ssmse_identical_images_is_zero(pyramid):
    b = _rand(7, (1, 3, 40, 52))
    loss = build_loss({"type": "ssmse", "pyramid": pyramid}, b)
    assert loss(b.clone()).item() == 0.0


def test_ssmse_of_constant_images_is_levels_times_squared_difference():
    # blurring a constant image leaves it constant, so every level contributes (a - b)^2
    a = torch.full((1, 1, 64, 64), 0.25)
    b = torch.full((1, 1, 64, 64), 0.75)
    flat = SSMSE(b, octaves=5, intervals=2, sigma=1.6, pyramid=False)
    assert flat.n_levels == 10
    assert flat(a).item() == pytest.approx(10 * 0.25, rel=1e-5)
    pyr = SSMSE(b, octaves=5, intervals=4, sigma=1.6, pyramid=True)
    assert pyr.n_levels == 20  # 64 -> 32 -> 16 -> 8 -> 4: five octaves fit
    assert pyr(a).item() == pytest.approx(20 * 0.25, rel=1e-5)
    assert pyr.metadata()["levels"] == 20


def test_scale_space_levels():
    img = _rand(8, (1, 1, 64, 80))
    flat = scale_space(img, octaves=3, intervals=2, sigma=1.0, pyramid=False)
    assert len(flat) == 6
    assert torch.equal(flat[3], gaussian_blur(img, 1.0 * 2 ** (1 + 1 / 2)))
    pyr = scale_space(img, octaves=3, intervals=2, sigma=1.0, pyramid=True)
    assert [tuple(x.shape[-2:]) for x in pyr] == [(64, 80)] * 2 + [(32, 40)] * 2 + [(16, 20)] * 2
    # octave 0 of the pyramid is the direct blur; later octaves match a direct blur at the
    # same absolute scale, subsampled (Lowe's construction), up to discretisation
    assert torch.allclose(pyr[1], gaussian_blur(img, 2**0.5), atol=1e-6)
    direct = gaussian_blur(img, 2.0 * 2**0.5)[..., ::2, ::2]
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    assert (pyr[3][inner] - direct[inner]).abs().max().item() < 2e-3
    # an image too small for all octaves gives fewer levels, never an error
    assert len(scale_space(_rand(9, (1, 1, 10, 10)), 5, 1, 1.0, True)) == 2


def test_ssmse_pyramid_ignores_high_frequencies_more_than_mse():
    b = torch.full((1, 1, 64, 64), 0.5)
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2).float()
    a = checker.view(1, 1, 64, 64)  # mean 0.5, but every pixel off by 0.5
    assert build_loss({"type": "mse"}, b)(a).item() == pytest.approx(0.25)
    assert build_loss({"type": "ssmse"}, b)(a).item() < 0.01


@pytest.mark.parametrize(
    "cfg",
    [
        {"type": "mse"},
        {"type": "blurmse", "sigma": 1.0},
        {"type": "ssmse", "octaves": 3, "intervals": 1},
        {"type": "ssmse", "octaves": 3, "intervals": 2, "pyramid": True},
    ],
)
def test_losses_are_differentiable(cfg):
    b = _rand(10, (1, 1, 32, 32))
    a = _rand(11, (1, 1, 32, 32)).requires_grad_(True)
    value = build_loss(cfg, b)(a)
    value.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
    assert a.grad.abs().sum().item() > 0
    # one tiny step down the gradient lowers the loss
    with torch.no_grad():
        lower = build_loss(cfg, b)(a - 1e-2 * a.grad / a.grad.norm())
    assert lower.item() < value.item()


def test_check_loss_config_fills_defaults():
    assert check_loss_config({"type": "blurmse"}) == {"sigma": 1.0, "blur_target": True}
    assert check_loss_config({"type": "ssmse", "intervals": 4})["intervals"] == 4
    assert check_loss_config({"type": "mse"}) == {}


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({}, "loss.type"),
        ({"type": "nope"}, "loss.type"),
        ({"type": "mse", "sigma": 1}, "loss.sigma"),
        ({"type": "blurmse", "sigma": -1}, "loss.sigma"),
        ({"type": "blurmse", "sigma": "big"}, "loss.sigma"),
        ({"type": "blurmse", "blur_target": "yes"}, "loss.blur_target"),
        ({"type": "blurmse", "radius": 3}, "loss.radius"),
        ({"type": "ssmse", "octaves": 0}, "loss.octaves"),
        ({"type": "ssmse", "octaves": 2.5}, "loss.octaves"),
        ({"type": "ssmse", "intervals": True}, "loss.intervals"),
        ({"type": "ssmse", "sigma": 0}, "loss.sigma"),
        ({"type": "ssmse", "pyramid": 1}, "loss.pyramid"),
        ({"type": "blurmse", "sigma": float("nan")}, "loss.sigma"),
        ({"type": "blurmse", "sigma": float("inf")}, "loss.sigma"),
        ({"type": "blurmse", "sigma": 1e6}, "loss.sigma"),
        ({"type": "ssmse", "sigma": float("nan")}, "loss.sigma"),
        ({"type": "ssmse", "octaves": 10_000}, "loss.octaves"),
        ({"type": "ssmse", "octaves": 12}, "loss.octaves"),  # 1.6 * 2**11.5 px blur
        ({"type": "ssmse", "sigma": 600.0, "pyramid": True}, "loss.sigma"),
    ],
)
def test_bad_loss_configs_name_the_key(cfg, key):
    with pytest.raises(ConfigError) as e:
        check_loss_config(cfg)
    assert e.value.key == key
    assert str(e.value).startswith(key)


def test_blur_matches_continuous_gaussian_width():
    # the 4-sigma radius leaves < 1e-4 of the mass outside: check against erf
    k = gaussian_kernel1d(0.8, dtype=torch.float64)
    r = (k.numel() - 1) // 2
    assert r == math.ceil(4 * 0.8)
    centre = k[r].item()
    assert centre == pytest.approx(1 / (0.8 * math.sqrt(2 * math.pi)), rel=0.02)


@pytest.mark.parametrize("sigma", [0.7, 2.0, 9.0])
def test_blur_implementations_agree(sigma):
    img = _rand(12, (1, 3, 19, 44)).double()
    a = gaussian_blur(img, sigma, method="matmul")
    b = gaussian_blur(img, sigma, method="conv")
    assert torch.allclose(a, b, atol=1e-12)
    assert torch.equal(gaussian_blur(img, sigma), a)  # small canvas: the matrix form
    with pytest.raises(ValueError):
        gaussian_blur(img, sigma, method="fft")


def test_blur_edges_are_mirrored_not_replicated():
    # blurring preserves the total ink with mirrored edges: every pixel's weight is
    # spread over the canvas and its mirror images, which fold back onto the canvas
    img = torch.zeros(1, 1, 9, 12, dtype=torch.float64)
    img[0, 0, 0, 0] = 1.0  # ink in the corner
    for sigma in (0.8, 3.0, 30.0):
        for method in ("matmul", "conv"):
            assert gaussian_blur(img, sigma, method=method).sum().item() == pytest.approx(1.0)
    # and a wide blur tends to the mean of the image, not to its edge pixel
    g = _rand(13, (1, 1, 16, 16)).double()
    assert torch.allclose(gaussian_blur(g, 200.0), g.mean().expand_as(g), atol=1e-3)
