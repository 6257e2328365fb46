"""plotterd itself, through its public API: load_pipeline + optimise, then the vector stage.

The strokes are laid out by ``plotterd.vector.vectorise`` on a paper the size of the box
(no margin, fit and centre), so they reach the page exactly as the daemon would plot them:
sampled, clipped, simplified, merged and ordered. The optimisation time is ``optimise``'s
wall time (the vector stage is not counted).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np

from .paper_test import Drawing, Photo


def default_pipeline() -> str:
    from plotterd.pipeline import DEFAULT_PIPELINE

    return DEFAULT_PIPELINE


@contextlib.contextmanager
def one_core_busy() -> Iterator[int]:
    """Another process keeping one core busy (as a plot stream or a browser does)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"])
    try:
        time.sleep(0.5)  # let it get going
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def optimise_strokes(photo: Photo, pipeline_name: str, seed: int = 0,
                     iterations: int | None = None, pen=None):
    """(Strokes, wall seconds) for ``photo`` through the named pipeline (drawing for
    ``pen`` when given, else for the pipeline's own)."""
    import torch

    import plotterd.draw as draw
    from plotterd.cpu import auto_threads

    overrides = {"pen": pen.to_dict()} if pen is not None else None
    pipeline = draw.load_pipeline(pipeline_name, overrides)
    t0 = time.perf_counter()
    torch.set_num_threads(auto_threads())  # as `plotterd draw` does (counted in the time)
    result = draw.optimise(str(photo.path), pipeline, device="cpu", seed=seed,
                           iterations=iterations)
    return result, time.perf_counter() - t0


def strokes_to_mm(strokes, photo: Photo) -> tuple[list[np.ndarray], dict]:
    from plotterd.vector import PX_PER_MM, PageSpec, vectorise

    box = photo.box
    page = PageSpec(paper=f"{box.width_mm:g}x{box.height_mm:g}mm",
                    orientation="landscape" if box.width_mm >= box.height_mm else "portrait",
                    margin_mm=0.0, fit=True, center=True)
    vec = vectorise(strokes, page)
    lines = [np.column_stack([ln.real, ln.imag]) / PX_PER_MM
             for lid in sorted(vec.document.layers) for ln in vec.document.layers[lid].lines]
    return lines, vec.stats


_warm: set[str] = set()


def draw(photo: Photo, pipeline_name: str, *, quick: bool = False, under_load: bool = False,
         seed: int = 0, pen=None) -> Drawing:
    if pipeline_name not in _warm:
        # one iteration first: the first optimise in a process pays torch's one-time start-up
        # (seconds), which is no part of the optimisation time
        optimise_strokes(photo, pipeline_name, seed, 1)
        _warm.add(pipeline_name)
    iterations = None
    if quick:
        from plotterd.pipeline import load_pipeline

        iterations = max(1, min(30, load_pipeline(pipeline_name).iterations))
    result, elapsed = optimise_strokes(photo, pipeline_name, seed, iterations, pen)
    lines, _ = strokes_to_mm(result.strokes, photo)
    meta = result.strokes.metadata
    info: dict = {"iterations": len(result.losses),
                  **{k: meta[k] for k in ("tone", "tone_scale", "black_point", "init",
                                          "init_candidates", "init_ink_ratio",
                                          "refinement_kept") if k in meta}}
    if under_load:
        with one_core_busy():
            _, loaded = optimise_strokes(photo, pipeline_name, seed, iterations, pen)
        info["opt_s_under_load"] = loaded
        info["load_slowdown"] = loaded / elapsed if elapsed > 0 else float("nan")
    return Drawing(lines, pipeline_name, elapsed, info)
