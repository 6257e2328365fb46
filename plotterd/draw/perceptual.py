"""Perceptual losses over VGG16 features: ``lpips`` and ``feature``.

``lpips`` is LPIPS-VGG (Zhang et al. 2018) with the ``lpips`` package's learned linear heads
over an ImageNet VGG16 backbone that :mod:`plotterd.draw.weights` loads from disk (nothing is
downloaded). ``feature`` is the second paper's loss: at each chosen layer, unit-normalise
every pixel's feature vector, square the difference, sum over channels, average over space;
a weighted sum over layers, on ImageNet- or Stylized-ImageNet-trained VGG16.

Both compute the target's features once at construction. The network runs only as deep as
the deepest chosen layer. Pipeline form::

    loss: {type: lpips}
    loss: {type: feature, backbone: sin, layers: relu1_2..relu3_3}

Layers are named as in VGG16: ``convB_I``, ``reluB_I``, ``poolB``. ``layers`` takes a list,
a comma-separated string or a range ``a..b`` (a and b of one kind): one layer per block from
a's block to b's, a and b themselves at the ends and each block's last layer of that kind in
between, so ``relu1_2..relu3_3`` is relu1_2, relu2_2, relu3_3.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plotterd.draw import weights as W
from plotterd.draw.losses import Loss, register_loss
from plotterd.errors import ConfigError, InputError, WeightsError

__all__ = [
    "DEFAULT_LAYERS",
    "LAYERS",
    "LPIPS_LAYERS",
    "FeatureLoss",
    "LPIPSLoss",
    "VGG16Features",
    "lpips_heads",
    "parse_layers",
]


def _layer_table() -> dict[str, int]:
    names: dict[str, int] = {}
    idx, block, conv = 0, 1, 0
    for v in W.VGG16_CFG:
        if v == "M":
            names[f"pool{block}"] = idx
            idx, block, conv = idx + 1, block + 1, 0
        else:
            conv += 1
            names[f"conv{block}_{conv}"] = idx
            names[f"relu{block}_{conv}"] = idx + 1
            idx += 2
    return names


LAYERS: dict[str, int] = _layer_table()  # layer name -> index in vgg16().features, in order
LPIPS_LAYERS = ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
DEFAULT_LAYERS = list(LPIPS_LAYERS)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# lpips's ScalingLayer, applied to inputs in [-1, 1]
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

_NAME = re.compile(r"^(conv|relu|pool)(\d)(?:_(\d))?$")


def _kind_block(name: str) -> tuple[str, int]:
    m = _NAME.match(name)
    assert m is not None
    return m.group(1), int(m.group(2))


def _expand_range(a: str, b: str, key: str) -> list[str]:
    for n in (a, b):
        if n not in LAYERS:
            raise ConfigError(key, f"unknown layer {n!r} in range {a}..{b}")
    (ka, ba), (kb, bb) = _kind_block(a), _kind_block(b)
    if ka != kb:
        raise ConfigError(key, f"range {a}..{b} mixes {ka} and {kb} layers")
    if LAYERS[a] > LAYERS[b]:
        raise ConfigError(key, f"range {a}..{b} goes backwards")
    if ba == bb:
        return [a] if a == b else [a, b]
    out = [a]
    for block in range(ba + 1, bb):
        # the block's last layer of this kind
        out.append([n for n in LAYERS if _kind_block(n) == (ka, block)][-1])
    return out + [b]


def parse_layers(spec: Any, key: str = "loss.layers") -> list[str]:
    """Layer names from a list, a comma-separated string, or ``a..b`` ranges (see module)."""
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",")]
    elif isinstance(spec, Sequence) and all(isinstance(s, str) for s in spec):
        items = [s.strip() for s in spec]
    else:
        raise ConfigError(key, f"must be a list of layer names or a string, got {spec!r}")
    out: list[str] = []
    for item in items:
        if ".." in item:
            a, _, b = item.partition("..")
            names = _expand_range(a.strip(), b.strip(), key)
        elif item in LAYERS:
            names = [item]
        else:
            raise ConfigError(
                key, f"unknown layer {item!r} (VGG16 layers: conv1_1..conv5_3, relu1_1.., pool1..5)"
            )
        for n in names:
            if n in out:
                raise ConfigError(key, f"layer {n!r} given twice")
            out.append(n)
    if not out:
        raise ConfigError(key, "no layers given")
    return out


def _parse_layer_weights(
    spec: Any, layers: list[str], key: str = "loss.layer_weights"
) -> list[float]:
    def num(v: Any, k: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(k, f"must be a finite number >= 0, got {v!r}")
        return float(v)

    if spec is None:
        return [1.0] * len(layers)
    if isinstance(spec, Mapping):
        for name in spec:
            if name not in layers:
                raise ConfigError(f"{key}.{name}", f"not one of the layers ({', '.join(layers)})")
        return [num(spec.get(n, 1.0), f"{key}.{n}") for n in layers]
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        if len(spec) != len(layers):
            raise ConfigError(key, f"has {len(spec)} weights for {len(layers)} layers")
        return [num(v, f"{key}[{i}]") for i, v in enumerate(spec)]
    return [num(spec, key)] * len(layers)


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` up to the deepest of ``layers``, frozen, eval mode;
    ``forward`` returns the activations at ``layers``, in that order.

    Built here rather than from ``torchvision.models.vgg16()`` so that only the layers needed
    exist and the 120M-parameter classifier is never allocated; the module indices are
    torchvision's, so ``features.N`` keys load unchanged.
    """

    def __init__(self, features: Mapping[str, torch.Tensor], layers: Sequence[str]):
        super().__init__()
        self.layers = list(layers)
        self.out_index = [LAYERS[n] for n in self.layers]
        wanted = set(self.out_index)
        deepest = max(self.out_index)
        mods: list[nn.Module] = []
        c_in = 3
        for v in W.VGG16_CFG:
            if len(mods) > deepest:
                break
            if v == "M":
                mods.append(nn.MaxPool2d(2, 2))
                continue
            # skip_init: the weights are overwritten at once, so don't pay for kaiming init
            conv = nn.utils.skip_init(nn.Conv2d, c_in, int(v), 3, padding=1)
            i = len(mods)
            conv.weight.data.copy_(features[f"{i}.weight"])
            conv.bias.data.copy_(features[f"{i}.bias"])
            # in place saves memory, but not where the conv output itself is asked for
            mods += [conv, nn.ReLU(inplace=i not in wanted)]
            c_in = int(v)
        self.body = nn.Sequential(*mods[: deepest + 1])
        self.n_pools = sum(isinstance(m, nn.MaxPool2d) for m in self.body)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG16Features:
        return super().train(False)  # frozen: no train mode (VGG16 features have no BN anyway)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        found: dict[int, torch.Tensor] = {}
        last = max(self.out_index)
        for i, m in enumerate(self.body):
            x = m(x)
            if i in self.out_index:
                found[i] = x
            if i >= last:
                break
        return [found[i] for i in self.out_index]


def _check_image(t: torch.Tensor, what: str, n_pools: int) -> None:
    if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[1] not in (1, 3):
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise InputError(f"{what} must be a (N, C, H, W) tensor with C 1 or 3, got {shape}")
    need = 2**n_pools
    if t.shape[-1] < need or t.shape[-2] < need:
        raise InputError(
            f"{what} is {t.shape[-1]}x{t.shape[-2]} pixels; the chosen VGG16 layers need at "
            f"least {need}x{need} (choose shallower layers or a higher resolution)"
        )


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    # as lpips.normalize_tensor: unit length over channels, eps added to the norm
    return f / (torch.sqrt((f * f).sum(dim=1, keepdim=True)) + eps)


def _weights_dir(v: Any) -> str | None:
    return None if v is None else os.fspath(v)


PRECISIONS = ("auto", "float32", "bfloat16")


def _native_bf16(device: torch.device) -> bool:
    """Whether this device runs bfloat16 convolutions natively (AVX512-BF16/AMX, or a GPU
    that supports it); emulated bf16 would be slower than float32."""
    try:
        if device.type == "cuda":
            return bool(torch.cuda.is_bf16_supported())
        if device.type == "cpu":
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        pass
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """"auto" -> bfloat16 where native (the VGG trunk is ~2x faster and the loss moves by
    ~1e-5 relative), else float32."""
    if precision == "bfloat16" or (precision == "auto" and _native_bf16(device)):
        return torch.bfloat16
    return torch.float32


class _VGGLoss(Loss):
    """Shared machinery: frozen VGG16 slice, input normalisation ``(x - shift) / scale``
    (after :meth:`to_range`), the target's unit features as buffers."""

    def __init__(
        self,
        target: torch.Tensor,
        layers: list[str],
        shift: tuple[float, float, float],
        scale: tuple[float, float, float],
        backbone: str,
        allow_random_weights: bool,
        weights_dir: str | os.PathLike[str] | None,
        precision: str = "auto",
    ):
        super().__init__(target)
        # the trunk runs under autocast in this dtype; unit features and sums stay float32
        self.dtype = resolve_precision(precision, target.device)
        self.register_buffer("in_shift", torch.tensor(shift, device=target.device).view(1, 3, 1, 1))
        self.register_buffer("in_scale", torch.tensor(scale, device=target.device).view(1, 3, 1, 1))
        self.loaded = W.load_backbone(backbone, _weights_dir(weights_dir), allow_random_weights)
        # channels_last: oneDNN runs these convolutions faster on NHWC (forward + backward
        # at 266x200: 18-27% less wall time in two A/B runs on a shared 2-core CPU)
        self.net = VGG16Features(self.loaded.features, layers).to(
            target.device, memory_format=torch.channels_last
        )
        _check_image(target, "the target", self.net.n_pools)
        with torch.no_grad():  # the target's features never change: computed once, here
            for i, f in enumerate(self._features(target.float())):
                self.register_buffer(f"target_feat{i}", _unit(f).detach())

    def to_range(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        # broadcasting a grey (N, 1, H, W) against the 3-channel shift repeats it to 3 channels
        x = (self.to_range(image) - self.in_shift) / self.in_scale
        return x.contiguous(memory_format=torch.channels_last)

    def _features(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = self.prepare(image)
        if self.dtype == torch.float32:
            return self.net(x)
        with torch.autocast(x.device.type, dtype=self.dtype):
            feats = self.net(x)
        return [f.float() for f in feats]

    def _diffs(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Per layer: (N, C, h, w) squared differences of unit features."""
        _check_image(image, "the rendering", self.net.n_pools)
        feats = self._features(image)
        return [(_unit(f) - getattr(self, f"target_feat{i}")) ** 2 for i, f in enumerate(feats)]


class FeatureLoss(_VGGLoss):
    """The second paper's VGG16 feature loss (LPIPS without learned heads, layers chosen)."""

    def __init__(
        self,
        target: torch.Tensor,
        layers: Any = None,
        layer_weights: Any = None,
        backbone: str = "imagenet",
        allow_random_weights: bool = False,
        weights_dir: str | os.PathLike[str] | None = None,
        precision: str = "auto",
    ):
        names = parse_layers(DEFAULT_LAYERS if layers is None else layers)
        weights = _parse_layer_weights(layer_weights, names)
        super().__init__(
            target, names, IMAGENET_MEAN, IMAGENET_STD, backbone, allow_random_weights,
            weights_dir, precision,
        )
        self.layer_weights = weights

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        total = image.new_zeros(())
        for w, d in zip(self.layer_weights, self._diffs(image), strict=True):
            if w:
                total = total + w * d.sum(dim=1).mean()
        return total

    def metadata(self) -> dict[str, Any]:
        return {
            "loss": "feature",
            **self.loaded.metadata(),
            "layers": list(self.net.layers),
            "layer_weights": list(self.layer_weights),
            "precision": str(self.dtype).removeprefix("torch."),
        }


_HEADS_CACHE: dict[str, list[torch.Tensor]] = {}
_HEADS_LOCK = threading.Lock()


def lpips_heads(version: str = "0.1") -> tuple[Path, list[torch.Tensor]]:
    """The lpips package's learned VGG heads (five (1, C, 1, 1) tensors) and their file."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        raise WeightsError("the lpips package is not installed (pip install lpips)")
    path = Path(spec.origin).parent / "weights" / f"v{version}" / "vgg.pth"
    with _HEADS_LOCK:
        if str(path) in _HEADS_CACHE:
            return path, _HEADS_CACHE[str(path)]
    if not path.is_file():
        raise WeightsError(f"{path}: the lpips package's VGG heads are missing; reinstall lpips")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        heads = [sd[f"lin{i}.model.1.weight"].float() for i in range(5)]
    except Exception as e:  # any failure here means a damaged lpips install
        raise WeightsError(f"{path}: cannot read the LPIPS heads ({e})") from None
    with _HEADS_LOCK:
        _HEADS_CACHE[str(path)] = heads
    return path, heads


class LPIPSLoss(_VGGLoss):
    """LPIPS-VGG v0.1, computed as ``lpips.LPIPS(net="vgg")(image, target, normalize=True)``
    with our backbone: inputs [0, 1] -> [-1, 1] -> lpips's scaling layer; unit features at
    relu1_2..relu5_3; learned 1x1 heads on the squared differences; spatial mean; sum."""

    def __init__(
        self,
        target: torch.Tensor,
        backbone: str = "imagenet",
        allow_random_weights: bool = False,
        weights_dir: str | os.PathLike[str] | None = None,
        precision: str = "auto",
    ):
        heads_path, heads = lpips_heads()
        super().__init__(
            target,
            LPIPS_LAYERS,
            LPIPS_SHIFT,
            LPIPS_SCALE,
            backbone,
            allow_random_weights,
            weights_dir,
            precision,
        )
        self.heads_path = heads_path
        for i, h in enumerate(heads):
            self.register_buffer(f"head{i}", h.to(target.device))

    def to_range(self, image: torch.Tensor) -> torch.Tensor:
        return 2 * image - 1  # lpips's normalize=True: [0, 1] -> [-1, 1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        total = image.new_zeros(())
        for i, d in enumerate(self._diffs(image)):
            total = total + (d * getattr(self, f"head{i}")).sum(dim=1).mean()
        return total

    def metadata(self) -> dict[str, Any]:
        return {
            "loss": "lpips",
            **self.loaded.metadata(),
            "heads": str(self.heads_path),
            "layers": list(LPIPS_LAYERS),
            "precision": str(self.dtype).removeprefix("torch."),
        }


# ------------------------------------------------------------------------------ registry


def _validate_common(cfg: dict[str, Any]) -> None:
    if not isinstance(cfg["allow_random_weights"], bool):
        raise ConfigError(
            "loss.allow_random_weights",
            f"must be true or false, got {cfg['allow_random_weights']!r}",
        )
    wd = cfg["weights_dir"]
    if wd is not None and not (isinstance(wd, (str, os.PathLike)) and os.fspath(wd)):
        raise ConfigError("loss.weights_dir", f"must be a directory path or null, got {wd!r}")
    W.get_backbone(cfg["backbone"], "loss.backbone", _weights_dir(wd))
    if cfg["precision"] not in PRECISIONS:
        raise ConfigError(
            "loss.precision", f"{cfg['precision']!r} is not one of {', '.join(PRECISIONS)}"
        )


def _validate_feature(cfg: dict[str, Any]) -> None:
    names = parse_layers(cfg["layers"], "loss.layers")
    _parse_layer_weights(cfg["layer_weights"], names)
    _validate_common(cfg)


_COMMON = {
    "backbone": "imagenet",
    "allow_random_weights": False,
    "weights_dir": None,
    "precision": "auto",
}


@register_loss("lpips", params=dict(_COMMON), validate=_validate_common)
def _make_lpips(target: torch.Tensor, **params: Any) -> Loss:
    return LPIPSLoss(target, **params)


@register_loss(
    "feature",
    params={"layers": list(DEFAULT_LAYERS), "layer_weights": None, **_COMMON},
    validate=_validate_feature,
)
def _make_feature(target: torch.Tensor, **params: Any) -> Loss:
    return FeatureLoss(target, **params)
