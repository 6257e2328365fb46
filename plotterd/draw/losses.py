"""Losses: how far a rendering is from the target.

Every loss is a ``torch.nn.Module`` built once per job from the target, so anything that
depends only on the target (its blur, its scale space, its VGG features) is computed once:

    loss = build_loss({"type": "blurmse", "sigma": 1.0}, target)   # target: (1, C, H, W)
    value = loss(rendering)                                           # scalar tensor

Images are float32 (1, C, H, W) in [0, 1] with white paper = 1; C is 1 (grey) or 3.
Losses register themselves with :func:`register_loss`, giving the parameters they accept, so
the pipeline validator can reject an unknown key by name without knowing the loss. The
optimiser only ever calls ``build_loss`` and ``loss(rendering)``.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from plotterd.errors import ConfigError


class Loss(torch.nn.Module):
    """Base class: compares a rendering with the fixed target given at construction."""

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.register_buffer("target", target)

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """What the job's outputs should record about this loss (e.g. weights used)."""
        return {}


@dataclass(frozen=True)
class LossSpec:
    factory: Callable[..., Loss]  # factory(target, **params) -> Loss
    params: dict[str, Any]  # accepted parameter -> default
    validate: Callable[[dict[str, Any]], None] | None = None  # raises ConfigError


_REGISTRY: dict[str, LossSpec] = {}
# modules that register further losses; imported on first use to keep start-up light
_PLUGIN_MODULES = ("plotterd.draw.perceptual", "plotterd.draw.paper_loss")


def register_loss(
    name: str,
    params: dict[str, Any],
    validate: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Callable[..., Loss]], Callable[..., Loss]]:
    def deco(factory: Callable[..., Loss]) -> Callable[..., Loss]:
        _REGISTRY[name] = LossSpec(factory, dict(params), validate)
        return factory

    return deco


def _load_plugins() -> None:
    for mod in _PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def loss_names() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def loss_spec(name: str, key: str = "loss.type") -> LossSpec:
    if name not in _REGISTRY:
        _load_plugins()
    if name not in _REGISTRY:
        raise ConfigError(key, f"unknown loss {name!r} (known: {', '.join(loss_names())})")
    return _REGISTRY[name]


def check_loss_config(cfg: dict[str, Any], key: str = "loss") -> dict[str, Any]:
    """Validate ``{"type": name, **params}``; returns params with defaults filled in."""
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ConfigError(f"{key}.type", "missing")
    if not isinstance(cfg["type"], str):
        raise ConfigError(f"{key}.type", f"must be a loss name, got {cfg['type']!r}")
    spec = loss_spec(cfg["type"], f"{key}.type")
    params = {k: v for k, v in cfg.items() if k != "type"}
    for k in params:
        if k not in spec.params:
            raise ConfigError(
                f"{key}.{k}",
                f"unknown parameter for loss {cfg['type']!r} "
                f"(accepted: {', '.join(spec.params) or 'none'})",
            )
    full = {**spec.params, **params}
    if spec.validate is not None:
        spec.validate(full)
    return full


def build_loss(cfg: dict[str, Any], target: torch.Tensor) -> Loss:
    params = check_loss_config(cfg)
    return loss_spec(cfg["type"]).factory(target, **params)


# --------------------------------------------------------------------------- pixel losses


def gaussian_kernel1d(sigma: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian with radius ceil(4 sigma) (the tail beyond is < 3e-4 of the mass)."""
    radius = max(1, int(math.ceil(4.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (k / k.sum()).to(dtype=dtype, device=device)


def _mirror(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Indices beyond [0, n) mirrored back in, edge sample included ("symmetric" padding:
    ... 2 1 0 | 0 1 2 ... n-1 | n-1 n-2 ...), for any distance from the canvas."""
    idx = torch.remainder(idx, 2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


@functools.lru_cache(maxsize=64)
def _blur_matrix(n: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, n) matrix M with M @ v == 1-D Gaussian blur of v with mirrored edges: a tap that
    falls off an end is added onto the sample its mirror image lands on."""
    k = gaussian_kernel1d(sigma, torch.float64)
    r = (k.numel() - 1) // 2
    cols = _mirror(torch.arange(n)[:, None] + torch.arange(-r, r + 1)[None, :], n)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.scatter_add_(1, cols, k.expand(n, -1).contiguous())
    return m.to(dtype=dtype, device=device)


def _blur_conv(image: torch.Tensor, sigma: float) -> torch.Tensor:
    c = image.shape[1]
    h, w = image.shape[-2:]
    k = gaussian_kernel1d(sigma, image.dtype, image.device)
    r = (k.numel() - 1) // 2
    # torch's "reflect" pad leaves out the edge sample and needs r < n: mirror by indexing
    cols = _mirror(torch.arange(-r, w + r, device=image.device), w)
    rows = _mirror(torch.arange(-r, h + r, device=image.device), h)
    kx = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    out = F.conv2d(image.index_select(-1, cols), kx, groups=c)
    return F.conv2d(out.index_select(-2, rows), ky, groups=c)


def _blur_matmul(image: torch.Tensor, sigma: float) -> torch.Tensor:
    h, w = image.shape[-2:]
    ky = _blur_matrix(h, sigma, image.dtype, image.device)
    kxt = _blur_matrix(w, sigma, image.dtype, image.device).t()
    return ky @ image @ kxt


def gaussian_blur(image: torch.Tensor, sigma: float, method: str = "auto") -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W); sigma <= 0 returns the image unchanged.

    Edges are mirrored (the edge pixel included): beyond the canvas is more of the same
    picture, not black, and no pixel weighs more than its neighbours. Replicating the edge
    pixel instead would count it once per tap beyond the edge -- with SSMSE's wide kernels
    (sigma ~ 40 px) that makes the border rows dominate and pulls strokes onto them.
    Two equal implementations: a product with two dense (H x H, W x W) blur matrices, or a
    depthwise convolution. PyTorch's CPU depthwise conv with 1-D kernels is slow (measured
    ~50 M multiply-adds/s against ~10 G/s for the matrix product), so the matrix form wins up
    to large canvases even though it does (H + W) multiply-adds per pixel against 2 (2r + 1);
    "auto" picks by that cost with the measured ~200x factor.
    """
    if sigma <= 0:
        return image
    if method == "auto":
        taps = 2 * max(1, int(math.ceil(4.0 * sigma))) + 1
        h, w = image.shape[-2:]
        method = "matmul" if h + w <= 200 * 2 * taps else "conv"
    if method == "matmul":
        return _blur_matmul(image, sigma)
    if method == "conv":
        return _blur_conv(image, sigma)
    raise ValueError(f"unknown blur method {method!r}")


# the widest Gaussian a pixel loss may ask for: its kernel has 8 sigma + 1 taps and the blur
# matrices hold (n x taps) indices, so an unbounded sigma would exhaust memory
MAX_BLUR_SIGMA = 1000.0
_MAX_OCTAVES = 16
_MAX_INTERVALS = 16


def _check_number(
    cfg: dict[str, Any], name: str, *, minimum: float, integer: bool = False, strict: bool = False,
    maximum: float | None = None,
) -> None:
    v = cfg[name]
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type or not math.isfinite(v):
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"loss.{name}", f"must be {kind}, got {v!r}")
    if v < minimum or (strict and v == minimum):
        rel = ">" if strict else ">="
        raise ConfigError(f"loss.{name}", f"must be {rel} {minimum}, got {v!r}")
    if maximum is not None and v > maximum:
        raise ConfigError(f"loss.{name}", f"must be <= {maximum:g}, got {v!r}")


def _check_bool(cfg: dict[str, Any], name: str) -> None:
    if not isinstance(cfg[name], bool):
        raise ConfigError(f"loss.{name}", f"must be true or false, got {cfg[name]!r}")


def _validate_blurmse(cfg: dict[str, Any]) -> None:
    _check_number(cfg, "sigma", minimum=0.0, maximum=MAX_BLUR_SIGMA)
    _check_bool(cfg, "blur_target")


def _validate_ssmse(cfg: dict[str, Any]) -> None:
    _check_number(cfg, "octaves", minimum=1, integer=True, maximum=_MAX_OCTAVES)
    _check_number(cfg, "intervals", minimum=1, integer=True, maximum=_MAX_INTERVALS)
    _check_number(cfg, "sigma", minimum=0.0, strict=True)
    _check_bool(cfg, "pyramid")
    # the widest blur of the scale space: 2 sigma per octave on a pyramid's own grid, else
    # the top level's sigma * 2**(octaves - 1 + (intervals - 1) / intervals)
    o, i = cfg["octaves"], cfg["intervals"]
    widest = 2.0 * cfg["sigma"] if cfg["pyramid"] else cfg["sigma"] * 2.0 ** (o - 1 + (i - 1) / i)
    if widest > MAX_BLUR_SIGMA:
        # on a pyramid, or with one octave, sigma alone sets the widest blur
        raise ConfigError(
            "loss.sigma" if cfg["pyramid"] or o == 1 else "loss.octaves",
            f"the scale space's widest blur would be sigma {widest:g} px "
            f"(limit {MAX_BLUR_SIGMA:g}): fewer octaves or a smaller sigma",
        )


class BlurMSE(Loss):
    """Mean squared error after a Gaussian blur of the rendering (and of the target, if
    ``blur_target``); ``sigma`` in working-resolution pixels. sigma 0 is plain MSE."""

    def __init__(self, target: torch.Tensor, sigma: float = 1.0, blur_target: bool = True):
        self.sigma = float(sigma)
        self.blur_target = bool(blur_target)
        # the target never changes: blur it once here
        super().__init__(gaussian_blur(target, self.sigma) if self.blur_target else target)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(gaussian_blur(image, self.sigma), self.target)

    def metadata(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "blur_target": self.blur_target}


@register_loss("mse", params={})
def _make_mse(target: torch.Tensor) -> Loss:
    return BlurMSE(target, sigma=0.0)


@register_loss("blurmse", params={"sigma": 1.0, "blur_target": True}, validate=_validate_blurmse)
def _make_blurmse(target: torch.Tensor, sigma: float = 1.0, blur_target: bool = True) -> Loss:
    return BlurMSE(target, sigma=sigma, blur_target=blur_target)


def scale_space(
    image: torch.Tensor, octaves: int, intervals: int, sigma: float, pyramid: bool
) -> list[torch.Tensor]:
    """Lowe's Gaussian scale space of (B, C, H, W): ``octaves`` x ``intervals`` levels with
    blur sigma * 2**(o + i / intervals) (in pixels of the input).

    Without ``pyramid`` every level is a direct blur of the input at full resolution. With it,
    octave o is sampled every 2**o pixels as in Lowe (2004): each octave starts from the level
    of blur 2 sigma of the previous octave, subsampled by 2 (so its own blur is sigma on the
    new grid), and levels within an octave add the incremental blur
    sqrt(target**2 - current**2). Octaves that would shrink below 4 pixels are left out.
    """
    levels: list[torch.Tensor] = []
    if not pyramid:
        for o in range(octaves):
            for i in range(intervals):
                levels.append(gaussian_blur(image, sigma * 2.0 ** (o + i / intervals)))
        return levels
    base, base_sigma = image, 0.0  # the input is taken as unblurred
    for _o in range(octaves):
        if min(base.shape[-2:]) < 4:
            break
        for i in range(intervals):
            s = sigma * 2.0 ** (i / intervals)
            levels.append(gaussian_blur(base, math.sqrt(max(s * s - base_sigma**2, 0.0))))
        nxt = gaussian_blur(base, math.sqrt((2 * sigma) ** 2 - base_sigma**2))
        base, base_sigma = nxt[..., ::2, ::2], sigma
    return levels


class SSMSE(Loss):
    """Sum over the levels of a Gaussian scale space (see :func:`scale_space`) of the MSE
    between rendering and target at that level."""

    def __init__(
        self,
        target: torch.Tensor,
        octaves: int = 5,
        intervals: int = 2,
        sigma: float = 1.6,
        pyramid: bool = False,
    ):
        super().__init__(target)
        self.octaves, self.intervals = int(octaves), int(intervals)
        self.sigma, self.pyramid = float(sigma), bool(pyramid)
        levels = scale_space(target, self.octaves, self.intervals, self.sigma, self.pyramid)
        for n, lvl in enumerate(levels):  # the target's scale space, computed once
            self.register_buffer(f"target_level{n}", lvl)
        self.n_levels = len(levels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        levels = scale_space(image, self.octaves, self.intervals, self.sigma, self.pyramid)
        total = image.new_zeros(())
        for n, lvl in enumerate(levels):
            total = total + F.mse_loss(lvl, getattr(self, f"target_level{n}"))
        return total

    def metadata(self) -> dict[str, Any]:
        return {
            "octaves": self.octaves,
            "intervals": self.intervals,
            "sigma": self.sigma,
            "pyramid": self.pyramid,
            "levels": self.n_levels,
        }


@register_loss(
    "ssmse",
    params={"octaves": 5, "intervals": 2, "sigma": 1.6, "pyramid": False},
    validate=_validate_ssmse,
)
def _make_ssmse(
    target: torch.Tensor, octaves: int = 5, intervals: int = 2, sigma: float = 1.6,
    pyramid: bool = False,
) -> Loss:
    return SSMSE(target, octaves=octaves, intervals=intervals, sigma=sigma, pyramid=pyramid)
