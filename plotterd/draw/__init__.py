"""image -> Strokes: target loading, the differentiable rasteriser, losses and the optimiser.

The public entry points (the daemon and the CLI use exactly these)::

    pipeline = load_pipeline("lines-blurmse", overrides=None, search_dirs=())
    target = load_target("photo.jpg", pipeline)              # (1, C, H, W) in [0, 1]
    result = optimise("photo.jpg", pipeline, device="auto", progress=cb,
                      checkpoint="job/optimise.ckpt", checkpoint_every=25)
    paths = write_outputs(result, "job/")  # strokes.json, drawing.svg, preview.png, loss.*
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Lazy exports: the vector and G-code stages import plotterd.draw.strokes, and must not pay
# for torch (seconds) when they only read a strokes.json.
_EXPORTS = {
    "write_outputs": "plotterd.draw.export",
    "load_image": "plotterd.draw.image",
    "load_target": "plotterd.draw.image",
    "DrawResult": "plotterd.draw.optimise",
    "optimise": "plotterd.draw.optimise",
    "resolve_device": "plotterd.draw.optimise",
    "Canvas": "plotterd.draw.strokes",
    "StrokeGroup": "plotterd.draw.strokes",
    "Strokes": "plotterd.draw.strokes",
    "DEFAULT_PIPELINE": "plotterd.pipeline",
    "Pipeline": "plotterd.pipeline",
    "load_pipeline": "plotterd.pipeline",
    "pipeline_names": "plotterd.pipeline",
}

if TYPE_CHECKING:
    from plotterd.draw.export import write_outputs
    from plotterd.draw.image import load_image, load_target
    from plotterd.draw.optimise import DrawResult, optimise, resolve_device
    from plotterd.draw.strokes import Canvas, StrokeGroup, Strokes
    from plotterd.pipeline import DEFAULT_PIPELINE, Pipeline, load_pipeline, pipeline_names


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'plotterd.draw' has no attribute {name!r}")


__all__ = [
    "DEFAULT_PIPELINE",
    "Canvas",
    "DrawResult",
    "Pipeline",
    "StrokeGroup",
    "Strokes",
    "draw_image",
    "load_image",
    "load_pipeline",
    "load_target",
    "optimise",
    "pipeline_names",
    "resolve_device",
    "write_outputs",
]


def draw_image(
    image,
    outdir,
    pipeline: str | Pipeline = "paper",
    *,
    device: str = "auto",
    progress=None,
    checkpoint=None,
    iterations: int | None = None,
    seed: int | None = None,
):
    """Optimise ``image`` with ``pipeline`` (a name, a path or a Pipeline) and write the
    outputs into ``outdir``; returns (DrawResult, {name: path}). `plotterd draw` runs this."""
    from plotterd.draw.export import write_outputs
    from plotterd.draw.optimise import optimise
    from plotterd.pipeline import Pipeline, load_pipeline

    if not isinstance(pipeline, Pipeline):
        pipeline = load_pipeline(pipeline)
    result = optimise(
        image, pipeline, device=device, progress=progress, checkpoint=checkpoint,
        iterations=iterations, seed=seed,
    )
    return result, write_outputs(result, outdir)
