"""`plotterd draw`: optimise strokes for one image and write the drawing's outputs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from plotterd.pipeline import DEFAULT_PIPELINE


def check_device(ctx: click.Context | None, param: click.Parameter | None, value: str) -> str:
    """auto, cpu, cuda or cuda:N (which GPUs exist is checked when the optimiser starts)."""
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value or ""):
        return value
    raise click.BadParameter(f"{value!r}: expected auto, cpu, cuda or cuda:N", ctx, param)


def parse_sets(items: tuple[str, ...] | list[str], pipeline: str) -> dict[str, Any]:
    """``--set key=value`` items -> the overrides mapping ``load_pipeline`` merges (values
    are YAML scalars: 500, 0.5, true, null, "text", [1, 2])."""
    import yaml

    from plotterd.errors import ConfigError
    from plotterd.pipeline import dotted_overrides

    pairs: list[tuple[str, Any]] = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected key=value (loss.sigma=2)",
                                     param_hint="--set")
        try:
            pairs.append((key, yaml.safe_load(text)))
        except yaml.YAMLError as e:
            raise click.BadParameter(f"{key}: {text!r} is not a YAML value ({e})",
                                     param_hint="--set") from e
    try:
        return dotted_overrides(pairs, pipeline)
    except ConfigError as e:
        if e.key == "pipeline":  # an unknown pipeline: the usual error
            raise
        raise click.BadParameter(str(e), param_hint="--set") from e


@click.command()
@click.argument("image", type=click.Path(path_type=Path, dir_okay=True))
@click.option(
    "-p",
    "--pipeline",
    default=DEFAULT_PIPELINE,
    show_default=True,
    help="Pipeline name (pipelines/NAME.yaml, $PLOTTERD_PIPELINES) or path to a YAML file.",
)
@click.option(
    "-o",
    "--outdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Output directory [default: ./IMAGE-STEM-drawing].",
)
@click.option("--iterations", type=click.IntRange(min=0), default=None,
              help="Override the pipeline's iteration count.")
@click.option("--device", default="auto", show_default=True, callback=check_device,
              help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Override the pipeline's random seed.")
@click.option("--threads", default="auto", show_default=True,
              help="CPU threads for the optimiser: a number, or auto (the cores idle now; "
                   "fewer threads than busy cores would be slower, see plotterd/cpu.py).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a pipeline key (repeatable): loss.sigma=2, iterations=50, "
                   "strokes[0].count=500. Checked like the YAML.")
def draw(
    image: Path,
    pipeline: str,
    outdir: Path | None,
    iterations: int | None,
    device: str,
    seed: int | None,
    threads: str,
    sets: tuple[str, ...],
) -> None:
    """Draw IMAGE with strokes: writes strokes.json, drawing.svg, preview.png, loss.csv and
    loss.png into the output directory."""
    import torch

    from plotterd.cpu import auto_threads
    from plotterd.draw import draw_image  # torch is heavy: only when drawing

    if threads == "auto":
        torch.set_num_threads(auto_threads())
    elif threads.isdigit() and int(threads) >= 1:
        torch.set_num_threads(int(threads))
    else:
        raise click.BadParameter(f"{threads!r}: a number >= 1, or auto", param_hint="--threads")

    chosen: Any = pipeline
    if sets:
        from plotterd.pipeline import load_pipeline

        # the same validation as the YAML: a bad value is a ConfigError naming its key
        chosen = load_pipeline(pipeline, overrides=parse_sets(sets, pipeline))

    outdir = outdir or Path.cwd() / f"{image.stem}-drawing"
    bars: list[tqdm] = []  # made at the first report, so an early error prints no bar

    def progress(p) -> None:
        if not bars:
            bars.append(tqdm(total=p.total, initial=int(p.done) - 1, unit="it",
                             desc="optimise", dynamic_ncols=True))
        bar = bars[0]
        bar.update(int(p.done) - bar.n)
        if "loss" in p.info:
            bar.set_postfix(loss=f"{p.info['loss']:.5f}", refresh=False)

    try:
        result, paths = draw_image(
            image, outdir, chosen, device=device, progress=progress,
            iterations=iterations, seed=seed,
        )
    finally:
        for bar in bars:
            bar.close()
    click.echo(
        f"{len(result.strokes)} strokes, final loss {result.strokes.metadata['final_loss']:.5f}, "
        f"{result.elapsed_s:.1f} s on {result.device}"
    )
    meta = result.strokes.metadata
    if "ink_mm" in meta:
        click.echo(f"{meta['page_mm']['width_mm']:.0f} x {meta['page_mm']['height_mm']:.0f} mm "
                   f"with a {meta['pen']['nib_mm']} mm pen: ink {meta['ink_mm'] / 1000:.1f} m, "
                   f"{meta['pen_lifts']} pen lifts, about {meta['plot_minutes_estimate']:.0f} "
                   "min of plotting")
    click.echo(f"outputs in {outdir}:")
    for path in paths.values():
        click.echo(f"  {path}")
