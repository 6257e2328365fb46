"""`plotterd weights`: list, import and fetch the VGG16 backbones of the perceptual losses."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

_dir_option = click.option(
    "--dir",
    "weights_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Weights directory [default: $PLOTTERD_WEIGHTS_DIR or the user data dir].",
)


def _bar_progress(desc: str):
    """A progress callback drawing a byte-count tqdm bar; returns (callback, close)."""
    bars: list[tqdm] = []

    def progress(p) -> None:
        if not bars or bars[0].desc != p.stage:
            for b in bars:
                b.close()
            bars[:] = [
                tqdm(
                    total=p.total or None,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=p.stage,
                    dynamic_ncols=True,
                    leave=False,
                )
            ]
        bars[0].update(int(p.done) - bars[0].n)

    def close() -> None:
        for b in bars:
            b.close()

    return progress, close


@click.group()
def weights() -> None:
    """Pretrained VGG16 backbones for the perceptual losses (offline first)."""


@weights.command("list")
@_dir_option
@click.option(
    "--hash/--no-hash",
    "check_hash",
    default=True,
    show_default=True,
    help="Compute each found file's SHA-256 (cached next to imported files).",
)
def list_(weights_dir: Path | None, check_hash: bool) -> None:
    """Each known backbone: where it was looked for, found or not, size, hash status."""
    from plotterd.draw.weights import list_weights

    progress, close = _bar_progress("hash")
    try:
        infos = list_weights(weights_dir, check_hash, progress)
    finally:
        close()
    for info in infos:
        b = info.backbone
        state = "found" if info.found else "MISSING"
        click.echo(f"{b.name}: {state}  ({b.filename}, layout {b.layout or 'auto'})")
        if info.found:
            click.echo(f"  path:   {info.path}")
            click.echo(f"  size:   {info.size:,} bytes ({info.size / 2**20:.1f} MiB)")
            click.echo(f"  sha256: {info.sha256 or '-'}  [{info.hash_note}]")
        else:
            click.echo("  looked in: " + ", ".join(str(p.parent) for p in info.searched))
            if b.url:
                click.echo(f"  source: {b.url}")
            click.echo(f"  import: plotterd weights import {b.name} /path/to/{b.filename}")


@weights.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@_dir_option
def import_(name: str, file: Path, weights_dir: Path | None) -> None:
    """Verify FILE as backbone NAME (hash, VGG16 layout) and install it."""
    from plotterd.draw.weights import install

    progress, close = _bar_progress("import")
    try:
        dest = install(name, file, weights_dir, progress)
    finally:
        close()
    click.echo(f"{name}: verified and installed as {dest}")


@weights.command("fetch")
@click.argument("name")
@_dir_option
@click.option("--url", default=None, help="Download from this URL (a mirror) instead.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Network timeout in seconds.",
)
def fetch(name: str, weights_dir: Path | None, url: str | None, timeout: float) -> None:
    """Download backbone NAME from its official URL, verify it and install it."""
    from plotterd.draw.weights import fetch as fetch_weights

    progress, close = _bar_progress("fetch")
    try:
        dest = fetch_weights(name, weights_dir, progress, url=url, timeout=timeout)
    finally:
        close()
    click.echo(f"{name}: downloaded, verified and installed as {dest}")
