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

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

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
_PLUGIN_MODULES = ("plotterd.draw.perceptual",)


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
