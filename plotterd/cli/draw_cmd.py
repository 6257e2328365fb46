"""`plotterd draw`: optimise strokes for one image and write the drawing's outputs."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from plotterd.pipeline import DEFAULT_PIPELINE


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
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Override the pipeline's random seed.")
def draw(
    image: Path,
    pipeline: str,
    outdir: Path | None,
    iterations: int | None,
    device: str,
    seed: int | None,
) -> None:
    """Draw IMAGE with strokes: writes strokes.json, drawing.svg, preview.png, loss.csv and
    loss.png into the output directory."""
    from plotterd.draw import draw_image  # torch is heavy: only when drawing

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
            image, outdir, pipeline, device=device, progress=progress,
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
