"""`plotterd gcode` (strokes.json or SVG -> checked G-code) and `plotterd profiles`."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm


def _mm(value: str, name: str) -> float:
    """A length: a bare number is millimetres, else any vpype unit ("0.5in", "2cm")."""
    import math

    import vpype as vp

    from plotterd.vector import PX_PER_MM

    try:
        mm = float(value)
    except ValueError:
        try:
            mm = float(vp.convert_length(value)) / PX_PER_MM
        except ValueError as e:
            raise click.BadParameter(f"{value!r} is not a length (10mm, 0.5in, 2cm)",
                                     param_hint=name) from e
    if not math.isfinite(mm):  # float() takes "inf" and "nan"
        raise click.BadParameter(f"{value!r} is not a finite length", param_hint=name)
    return mm


@click.command()
@click.argument("input", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The .gcode to write; OUT.svg and OUT.stats.json go next to it.")
@click.option("--profile", default="grbl-servo", show_default=True,
              help="Firmware profile name or path to a YAML file (see `plotterd profiles`).")
@click.option("--profiles-dir", "profiles_dirs", multiple=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="Extra directory of profiles (repeatable; also $PLOTTERD_PROFILES).")
@click.option("--paper", default="a4", show_default=True,
              help="a0-a6, letter, legal, executive, tabloid, or WxH with a unit (300x200mm).")
@click.option("--orientation", type=click.Choice(["auto", "portrait", "landscape"]),
              default="auto", show_default=True)
@click.option("--margin", default="10mm", show_default=True, help="Margin on every side.")
@click.option("--fit/--no-fit", default=True, show_default=True,
              help="Scale the drawing to fill the drawable area (keeping its aspect).")
@click.option("--center/--no-center", default=True, show_default=True)
@click.option("--tolerance", default="0.05mm", show_default=True,
              help="Curve sampling + simplification tolerance.")
@click.option("--min-length", default="0.2mm", show_default=True,
              help="Drop shorter strokes (dots are kept).")
@click.option("--pens", default=None,
              help="Comma-separated pen colours (strokes go to the nearest); default black.")
@click.option("--grey-levels", type=click.IntRange(min=1), default=None,
              help="Quantise grey strokes onto N grey pens (instead of --pens).")
@click.option("--pen-width", default="0.3mm", show_default=True)
@click.option("--two-opt", is_flag=True, help="Improve the stroke order further (slower).")
@click.option("--travel-layer", is_flag=True, help="Show pen-up travel in the SVG's own layer.")
@click.option("--per-pen", is_flag=True,
              help="Also write OUT-penN-COLOUR.gcode per pen (one file, one pen).")
@click.option("--index", type=click.IntRange(min=0), default=None,
              help="QuickDraw .ndjson / Sketch-RNN .npz: the drawing to take [default: 0].")
@click.option("--grid", type=click.IntRange(min=1), default=None,
              help="QuickDraw / Sketch-RNN: lay out N drawings (from --index on) in a grid.")
@click.option("--split", "--set", "split", type=click.Choice(["train", "valid", "test"]),
              default=None, help="Sketch-RNN .npz: the array to read [default: test].")
def gcode(
    input: Path,
    output: Path,
    profile: str,
    profiles_dirs: tuple[Path, ...],
    paper: str,
    orientation: str,
    margin: str,
    fit: bool,
    center: bool,
    tolerance: str,
    min_length: str,
    pens: str | None,
    grey_levels: int | None,
    pen_width: str,
    two_opt: bool,
    travel_layer: bool,
    per_pen: bool,
    index: int | None,
    grid: int | None,
    split: str | None,
) -> None:
    """Turn INPUT (strokes.json, .svg, QuickDraw .ndjson or Sketch-RNN .npz) into G-code
    for a pen plotter."""
    from plotterd.gcode import load_profile, make_gcode
    from plotterd.vector import PageSpec, Pen, VectorOptions, grey_pens
    from plotterd.vector.sequences import SequenceSource, is_sequence_file

    source: Path | SequenceSource = input
    if is_sequence_file(input):
        source = SequenceSource(input, index=index or 0, grid=grid, split=split or "test")
    elif index is not None or grid is not None or split is not None:
        raise click.BadParameter("--index, --grid and --split are for .ndjson and .npz input",
                                 param_hint="INPUT")

    width = _mm(pen_width, "--pen-width")
    if grey_levels is not None:
        pen_list = grey_pens(grey_levels, width)
    elif pens:
        pen_list = [Pen(color=c.strip(), width_mm=width) for c in pens.split(",") if c.strip()]
    else:
        pen_list = [Pen(width_mm=width)]
    page = PageSpec(paper=paper, orientation=orientation, margin_mm=_mm(margin, "--margin"),
                    fit=fit, center=center)
    options = VectorOptions(tolerance_mm=_mm(tolerance, "--tolerance"),
                            min_length_mm=_mm(min_length, "--min-length"),
                            two_opt=two_opt, pens=pen_list)
    prof = load_profile(profile, profiles_dirs)
    bars: list[tqdm] = []

    def progress(p) -> None:
        if not bars:
            # vectorise reports 5 steps (sample .. done), the writer 2
            bars.append(tqdm(total=7, unit="step", desc="gcode", dynamic_ncols=True))
        bar = bars[0]
        bar.set_postfix_str(f"{p.stage}: {p.info.get('step', '')}", refresh=False)
        bar.update(1 if bar.n < bar.total else 0)

    try:
        result = make_gcode(source, profile=prof, page=page, options=options, progress=progress)
        paths = result.save(output, travel_layer=travel_layer)
        if per_pen:
            for k, path in enumerate(result.save_per_pen(output), start=1):
                paths[f"pen {k}"] = path
    finally:
        for bar in bars:
            bar.close()
    s = result.stats
    click.echo(
        f"{s['strokes']} strokes on {s['paper']} ({s['page_mm'][0]:g} x {s['page_mm'][1]:g} mm) "
        f"for {prof.name} ({prof.firmware})"
    )
    click.echo(f"  draw        {s['draw_mm'] / 1000:.2f} m")
    click.echo(f"  travel      {s['travel_mm_before'] / 1000:.2f} m before ordering, "
               f"{s['travel_mm_after'] / 1000:.2f} m after")
    click.echo(f"  pen lifts   {s['pen_lifts']}")
    click.echo(f"  dropped     {s['dropped_vanished']} vanished, {s['dropped_short']} short, "
               f"{s['clipped_mm']:.1f} mm clipped")
    click.echo(f"  estimated   {_hms(s['estimated_s'])} plotting time")
    click.echo(f"  G-code      {s['gcode_lines']} lines, {s['gcode_bytes'] / 1024:.0f} KiB")
    for name, path in paths.items():
        click.echo(f"  {name:<11} {path}")


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


@click.command()
@click.option("--profiles-dir", "profiles_dirs", multiple=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="Extra directory of profiles (repeatable; also $PLOTTERD_PROFILES).")
def profiles(profiles_dirs: tuple[Path, ...]) -> None:
    """List the firmware profiles: firmware, pen commands and machine bounds."""
    from plotterd.errors import ConfigError
    from plotterd.gcode import list_profiles

    errors: list[ConfigError] = []
    found = list_profiles(profiles_dirs, errors=errors)
    for p in found:
        click.echo(
            f"{p.name:<16} {p.firmware:<8} {p.pen.dialect:<14} "
            f"X {p.x_min:g}..{p.x_max:g}  Y {p.y_min:g}..{p.y_max:g} mm  "
            f"pen: {p.pen.summary}"
        )
        if p.source:
            click.echo(f"{'':<16} {p.source}")
    for e in errors:
        click.echo(f"plotterd: bad profile: {e}", err=True)
    if not found and not errors:
        click.echo("no profiles found", err=True)
