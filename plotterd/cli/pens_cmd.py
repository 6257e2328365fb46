"""`plotterd pens`: print a calibration sheet, fit a pen from a photo of it, list the pens.

    plotterd pens sheet -o DIR [--pen NAME ...] [--paper a5] [--nib 0.3]
    plotterd pens fit PHOTO --sheet DIR --name NAME [--row N]
    plotterd pens list | show NAME
    plotterd pens photo --sheet DIR -o photo.jpg --true-nib 0.38   (the simulated camera)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

_PENS_DIR = click.option("--pens-dir", type=click.Path(path_type=Path, file_okay=False),
                         default=None,
                         help="Folder of pen profiles [default: $PLOTTERD_PENS_DIR, else the "
                              "user data folder].")


@click.group()
def pens() -> None:
    """Measure pens: a calibration sheet to plot, and a pen fitted from its photo."""


def _paper_mm(paper: str) -> tuple[float, float]:
    import vpype as vp

    from plotterd.vector import PX_PER_MM

    try:
        w, h = vp.convert_page_size(paper.strip().lower())
    except ValueError as e:
        raise click.BadParameter(f"{paper!r} is not a paper size (a4, a5, letter, 150x200mm)",
                                 param_hint="--paper") from e
    return (w / PX_PER_MM, h / PX_PER_MM)


def _sheet_pens(names: tuple[str, ...], nib: float, pens_dir: Path | None):
    """A fitted profile where one has the name, else a nominal round nib of ``nib``."""
    from plotterd.pen import RoundNib, list_pen_profiles

    fitted = {p.name: p for p in list_pen_profiles(pens_dir)}
    names = names or ("pen1",)
    return [fitted.get(n) or RoundNib(nib) for n in names], list(names)


@pens.command("sheet")
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              required=True, help="Folder for sheet.gcode, sheet.svg, sheet.json, sheet.png.")
@click.option("--pen", "pen_names", multiple=True,
              help="A pen (repeatable, one row each): a fitted profile's name, else a new pen "
                   "of --nib.")
@click.option("--profile", default="grbl-servo", show_default=True,
              help="Firmware profile for sheet.gcode (see `plotterd profiles`).")
@click.option("--profiles-dir", "profiles_dirs", multiple=True,
              type=click.Path(path_type=Path, file_okay=False))
@click.option("--paper", default="a5", show_default=True,
              help="a4, a5, letter, ... or WxH with a unit.")
@click.option("--margin", type=float, default=10.0, show_default=True, help="mm.")
@click.option("--nib", type=float, default=0.3, show_default=True,
              help="Nominal nib width (mm) of pens without a fitted profile.")
@_PENS_DIR
def sheet_cmd(out_dir: Path, pen_names: tuple[str, ...], profile: str,
              profiles_dirs: tuple[Path, ...], paper: str, margin: float, nib: float,
              pens_dir: Path | None) -> None:
    """Write a calibration sheet to plot: G-code, SVG, its layout and a preview."""
    import cv2
    import numpy as np

    from plotterd.calibration import make_sheet, render_sheet, write_sheet
    from plotterd.errors import ConfigError
    from plotterd.gcode import load_profile, write_program
    from plotterd.light import np_linear_to_srgb
    from plotterd.pen import FittedPen

    if not 0.1 <= nib <= 1.0:
        raise ConfigError("--nib", f"must be within 0.1..1.0 mm, got {nib:g}")
    pen_list, names = _sheet_pens(pen_names, nib, pens_dir)
    sheet = make_sheet(pen_list, _paper_mm(paper), margin_mm=margin, names=names)
    program = write_program(sheet.document, load_profile(profile, profiles_dirs))
    paths = write_sheet(sheet, out_dir)
    program.save(out_dir / "sheet.gcode")
    paths["gcode"] = out_dir / "sheet.gcode"
    colours = [p.colour if isinstance(p, FittedPen) else None for p in pen_list]
    preview = np_linear_to_srgb(render_sheet(sheet.layout, pen_list, 6.0, colours=colours))
    paths["png"] = out_dir / "sheet.png"
    cv2.imwrite(str(paths["png"]), np.round(preview * 255).astype(np.uint8)[..., ::-1])
    x0, y0, x1, y1 = sheet.layout["sheet_mm"]
    click.echo(f"calibration sheet for {', '.join(names)}: {x1 - x0:g} x {y1 - y0:g} mm on "
               f"{paper} for {profile}")
    for kind, path in paths.items():
        click.echo(f"  {kind:<5} {path}")
    click.echo("plot sheet.gcode, photograph the sheet, then: plotterd pens fit PHOTO "
               f"--sheet {out_dir} --name NAME")


@pens.command("fit")
@click.argument("photo", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--sheet", "sheet_dir", type=click.Path(path_type=Path), required=True,
              help="The sheet's folder (or its sheet.json).")
@click.option("--name", required=True, help="The pen profile's name.")
@click.option("--row", type=click.IntRange(min=0), default=0, show_default=True,
              help="The pen's row on a multi-pen sheet.")
@click.option("--rectified", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the sheet as the fit saw it (rectified, flat-fielded) here.")
@_PENS_DIR
def fit_cmd(photo: Path, sheet_dir: Path, name: str, row: int, rectified: Path | None,
            pens_dir: Path | None) -> None:
    """Fit a pen from PHOTO of its plotted sheet and save it as profile NAME."""
    import cv2

    from plotterd.calibration import fit_pen, read_layout
    from plotterd.pen import FittedPen, save_pen_profile
    from plotterd.pen import pens_dir as default_pens_dir

    FittedPen(name=name, nib_mm=0.3, darkness=1.0)  # the name is checked before any work
    layout = read_layout(sheet_dir)
    folder = pens_dir or default_pens_dir()
    kept = folder / f"{name}{photo.suffix.lower() or '.jpg'}"
    fit = fit_pen(photo, layout, name, row=row, photo_record=str(kept))
    folder.mkdir(parents=True, exist_ok=True)
    if photo.resolve() != kept.resolve():
        shutil.copyfile(photo, kept)
    profile = save_pen_profile(fit.pen, folder)
    if rectified is not None and fit.rectified is not None:
        cv2.imwrite(str(rectified), fit.rectified[..., ::-1])
    p = fit.pen
    click.echo(f"pen {p.name}: nib {p.nib_mm:.3f} mm (nominal {p.nominal_nib_mm:g}), darkness "
               f"{p.darkness:.3f}, colour {p.colour}")
    click.echo(f"  fit error   {fit.residual:.4f} RMS reflectance over "
               f"{len(fit.swatches)} swatches")
    click.echo(f"  photo       blur {fit.blur_mm:.2f} mm, registration "
               f"{fit.registration_px:.2f} px, {fit.clipped:.1%} clipped, tone curve "
               f"{fit.tone_gamma:.2f}")
    click.echo(f"  profile     {profile}")
    click.echo(f"  photo kept  {kept}")
    click.echo(json.dumps({"name": p.name, "nib_mm": p.nib_mm, "darkness": p.darkness,
                           "colour": p.colour, "residual": round(fit.residual, 5),
                           "nominal_nib_mm": p.nominal_nib_mm, "fitted_at": p.fitted_at,
                           "profile": str(profile), "photo": str(kept)}))


@pens.command("list")
@_PENS_DIR
def list_cmd(pens_dir: Path | None) -> None:
    """The fitted pens."""
    from plotterd.pen import list_pen_profiles
    from plotterd.pen import pens_dir as default_pens_dir

    found = list_pen_profiles(pens_dir)
    if not found:
        click.echo(f"no pen profiles in {pens_dir or default_pens_dir()}", err=True)
    for p in found:
        click.echo(f"{p.name:<20} nib {p.nib_mm:.3f} mm  darkness {p.darkness:.2f}  "
                   f"{p.colour}  fitted {p.fitted_at or '?'}")


@pens.command("show")
@click.argument("name")
@_PENS_DIR
def show_cmd(name: str, pens_dir: Path | None) -> None:
    """One fitted pen: name, date, nib, darkness, colour, fit error and photo."""
    from plotterd.pen import load_pen_profile

    p = load_pen_profile(name, pens_dir)
    for key, value in (("name", p.name), ("fitted", p.fitted_at),
                       ("nib", f"{p.nib_mm:.3f} mm (nominal {p.nominal_nib_mm} mm)"),
                       ("darkness", f"{p.darkness:.3f}"), ("colour", p.colour),
                       ("fit error", f"{p.residual:.4f}"), ("photo", p.photo or "-")):
        click.echo(f"{key:<10} {value}")


@pens.command("photo")
@click.option("--sheet", "sheet_dir", type=click.Path(path_type=Path), required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="The JPEG to write.")
@click.option("--true-nib", type=float, default=0.38, show_default=True,
              help="The width (mm) the simulated pen really lays.")
@click.option("--true-darkness", type=float, default=0.9, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", default="4000x3000", show_default=True, help="Photo size WxH (px).")
def photo_cmd(sheet_dir: Path, output: Path, true_nib: float, true_darkness: float, seed: int,
              size: str) -> None:
    """A simulated camera's photo of the sheet as drawn by a pen of --true-nib (for dry runs
    and demos)."""
    from plotterd.calibration import read_layout, render_sheet
    from plotterd.machine.sim.camera import CameraSettings, photograph
    from plotterd.pen import RoundNib

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError as e:
        raise click.BadParameter(f"{size!r} is not WxH", param_hint="--size") from e
    layout = read_layout(sheet_dir)
    page = render_sheet(layout, RoundNib(true_nib, true_darkness), 10.0)
    shot = photograph(page, 10.0, CameraSettings(size_px=(w, h)), seed=seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(shot.jpeg)
    click.echo(f"{output}: {w} x {h} photo of the sheet drawn by a {true_nib:g} mm pen of "
               f"darkness {true_darkness:g} (seed {seed})")
