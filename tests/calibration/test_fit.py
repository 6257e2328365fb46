"""Fitting a pen from simulated phone photos of its sheet, and refusing bad photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from plotterd.calibration import CalibrationError, fit_pen, write_sheet
from plotterd.cli import cli
from plotterd.machine.sim.camera import CameraSettings
from plotterd.pen import load_pen_profile

from .conftest import TEST_CAMERA, sheet_photo, sheet_shot


@pytest.mark.parametrize("nib,darkness,seed", [
    (0.25, 0.8, 1), (0.38, 0.9, 2), (0.5, 0.6, 3), (0.38, 1.0, 4), (0.25, 0.6, 5)])
def test_fit_recovers_the_true_pen(a5_sheet, nib, darkness, seed) -> None:
    photo = sheet_photo(a5_sheet.layout, nib, darkness, seed)
    fit = fit_pen(photo, a5_sheet.layout, "p")
    assert fit.pen.nib_mm == pytest.approx(nib, rel=0.05)
    assert fit.pen.darkness == pytest.approx(darkness, abs=0.05)
    assert fit.residual < 0.01 and fit.pen.residual == pytest.approx(fit.residual, abs=1e-4)
    assert fit.pen.nominal_nib_mm == 0.3 and len(fit.pen.fitted_at) == 10
    rgb = [int(fit.pen.colour[i:i + 2], 16) for i in (1, 3, 5)]
    assert max(rgb) - min(rgb) <= 3  # a neutral ink
    assert {"measured", "modelled", "kind", "spacing_mm"} <= set(fit.swatches[0])
    json.dumps(fit.to_json())


def test_harsher_light_and_stronger_jpeg(a5_sheet) -> None:
    harsh = CameraSettings(size_px=(2000, 1500), gradient=0.45, vignette=1.5, jpeg_quality=60,
                           read_noise=0.01, shot_noise=0.02)
    fit = fit_pen(sheet_photo(a5_sheet.layout, 0.42, 0.85, 11, harsh), a5_sheet.layout, "p")
    assert fit.pen.nib_mm == pytest.approx(0.42, rel=0.05)
    assert fit.pen.darkness == pytest.approx(0.85, abs=0.05)


def test_a_coloured_pen_gets_its_colour(a5_sheet) -> None:
    photo = sheet_photo(a5_sheet.layout, 0.4, 0.8, 7, colours=["#3050b0"])
    fit = fit_pen(photo, a5_sheet.layout, "blue")
    rgb = [int(fit.pen.colour[i:i + 2], 16) for i in (1, 3, 5)]
    assert np.abs(np.array(rgb) - [0x30, 0x50, 0xb0]).max() <= 10, fit.pen.colour
    assert fit.pen.nib_mm == pytest.approx(0.4, rel=0.05)


@pytest.mark.slow
def test_fit_reads_the_named_row_of_a_multi_pen_sheet() -> None:
    from plotterd.calibration import make_sheet, render_sheet
    from plotterd.machine.sim.camera import photograph
    from plotterd.pen import RoundNib

    sheet = make_sheet([RoundNib(0.3), RoundNib(0.5)], (148.0, 210.0), names=["a", "b"])
    page = render_sheet(sheet.layout, [RoundNib(0.33, 0.9), RoundNib(0.55, 0.7)], 10.0)
    image = photograph(page, 10.0, TEST_CAMERA, seed=3).image
    a = fit_pen(image, sheet.layout, "a", row=0)
    b = fit_pen(image, sheet.layout, "b", row=1)
    assert a.pen.nib_mm == pytest.approx(0.33, rel=0.05) and a.pen.nominal_nib_mm == 0.3
    assert b.pen.nib_mm == pytest.approx(0.55, rel=0.05) and b.pen.nominal_nib_mm == 0.5
    assert b.pen.darkness == pytest.approx(0.7, abs=0.05)
    with pytest.raises(CalibrationError, match="rows 0..1"):
        fit_pen(image, sheet.layout, "c", row=2)


# --- refusals ----------------------------------------------------------------------------


def test_no_marks(a5_sheet) -> None:
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (900, 1200)).astype(np.uint8), (0, 0), 0.7)
    with pytest.raises(CalibrationError, match="no calibration marks found"):
        fit_pen(noise, a5_sheet.layout, "p")


def test_marks_cut_off(a5_sheet) -> None:
    shot = sheet_shot(a5_sheet.layout, 0.38, 0.9, 2)
    x0, y0, x1, y1 = a5_sheet.layout["sheet_mm"]
    centre = cv2.perspectiveTransform(np.array([[[(x0 + x1) / 2, (y0 + y1) / 2]]]),
                                      shot.page_to_photo)[0, 0]
    mark0 = cv2.perspectiveTransform(np.array([[[x0 + 6, y0 + 6]]]), shot.page_to_photo)[0, 0]
    cut = shot.image[:, : int(centre[0])] if mark0[0] < centre[0] else \
        shot.image[:, int(centre[0]):]
    with pytest.raises(CalibrationError, match="marks cut off: found [123] of"):
        fit_pen(cut, a5_sheet.layout, "p")


def test_heavy_blur(a5_sheet) -> None:
    photo = sheet_photo(a5_sheet.layout, 0.38, 0.9, 2)
    with pytest.raises(CalibrationError, match="blurred"):
        fit_pen(cv2.GaussianBlur(photo, (0, 0), 6.0), a5_sheet.layout, "p")


def test_blur_is_measured_and_refused_beyond_the_limit(a5_sheet) -> None:
    """Marks found, but edges softer than allowed: refused after registration."""
    spreads = []
    for blur_px in (0.5, 1.2):
        photo = sheet_photo(a5_sheet.layout, 0.38, 0.9, 2,
                            CameraSettings(size_px=(1600, 1200), blur_px=blur_px))
        spreads.append(fit_pen(photo, a5_sheet.layout, "p").blur_mm)
    assert spreads[0] + 0.05 < spreads[1]
    with pytest.raises(CalibrationError, match=r"blurred: the marks' edges spread over 0\.\d+"):
        fit_pen(photo, a5_sheet.layout, "p", max_blur_mm=spreads[1] - 0.02)


def test_overexposure(a5_sheet) -> None:
    photo = sheet_photo(a5_sheet.layout, 0.38, 0.9, 2,
                        CameraSettings(size_px=(2000, 1500), exposure=1.5))
    with pytest.raises(CalibrationError, match="overexposed"):
        fit_pen(photo, a5_sheet.layout, "p")


def test_a_sheet_with_no_ink_is_refused(a5_sheet) -> None:
    """Read where no pen drew (the swatches' windows moved onto bare paper): nothing to fit."""
    layout = json.loads(json.dumps(a5_sheet.layout))
    photo = sheet_photo(layout, 0.38, 0.9, 2)
    gaps = layout["paper_regions"][1:]
    for swatch, gap in zip(layout["rows"][0]["swatches"], gaps, strict=False):
        swatch["window_mm"] = gap
    with pytest.raises(CalibrationError, match="no ink"):
        fit_pen(photo, layout, "p")


def test_a_smudged_sheet_is_refused(a5_sheet) -> None:
    """Ink smeared over three swatches: no pen explains them all."""
    shot = sheet_shot(a5_sheet.layout, 0.38, 0.9, 2)
    image = shot.image.copy()
    for swatch in a5_sheet.layout["rows"][0]["swatches"][4:7]:  # 3, 4 and 6 nib at 0 deg
        x0, y0, x1, y1 = swatch["rect_mm"]
        quad = np.array([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]], np.float64)
        corners = cv2.perspectiveTransform(quad, shot.page_to_photo)[0]
        cv2.fillConvexPoly(image, np.round(corners).astype(np.int32), (70, 70, 70))
    with pytest.raises(CalibrationError, match="does not explain the swatches"):
        fit_pen(image, a5_sheet.layout, "p")


# --- the CLI -----------------------------------------------------------------------------


def test_cli_sheet_photo_fit_list_show(tmp_path: Path) -> None:
    runner = CliRunner()
    sheet, pens = tmp_path / "sheet", tmp_path / "pens"
    assert runner.invoke(cli, ["pens", "sheet", "-o", str(sheet)]).exit_code == 0
    res = runner.invoke(cli, ["pens", "photo", "--sheet", str(sheet), "-o",
                              str(tmp_path / "p.jpg"), "--true-nib", "0.36",
                              "--true-darkness", "0.85", "--seed", "4", "--size", "2000x1500"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["pens", "fit", str(tmp_path / "p.jpg"), "--sheet", str(sheet),
                              "--name", "fine03", "--pens-dir", str(pens)])
    assert res.exit_code == 0, res.output
    last = json.loads(res.output.strip().splitlines()[-1])
    assert last["nib_mm"] == pytest.approx(0.36, rel=0.05)
    assert last["darkness"] == pytest.approx(0.85, abs=0.05)
    assert last["residual"] < 0.01 and last["colour"].startswith("#")
    pen = load_pen_profile("fine03", pens)
    assert pen.nib_mm == last["nib_mm"] and Path(pen.photo) == pens / "fine03.jpg"
    assert (pens / "fine03.jpg").read_bytes() == (tmp_path / "p.jpg").read_bytes()
    listed = runner.invoke(cli, ["pens", "list", "--pens-dir", str(pens)]).output
    assert "fine03" in listed and f"{pen.nib_mm:.3f}" in listed
    shown = runner.invoke(cli, ["pens", "show", "fine03", "--pens-dir", str(pens)]).output
    assert pen.fitted_at in shown and "fine03.jpg" in shown and pen.colour in shown


@pytest.mark.slow
def test_cli_bad_photo_exits_2_and_saves_nothing(tmp_path: Path, a5_sheet) -> None:
    write_sheet(a5_sheet, tmp_path / "sheet")
    blurred = cv2.GaussianBlur(sheet_photo(a5_sheet.layout, 0.38, 0.9, 2), (0, 0), 6.0)
    cv2.imwrite(str(tmp_path / "b.jpg"), blurred[..., ::-1])
    pens = tmp_path / "pens"
    proc = subprocess.run(
        [sys.executable, "-c", "from plotterd.cli import main; main()", "pens", "fit",
         str(tmp_path / "b.jpg"), "--sheet", str(tmp_path / "sheet"), "--name", "x",
         "--pens-dir", str(pens)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "blurred" in proc.stderr and "Traceback" not in proc.stderr
    assert not pens.exists() or not any(pens.iterdir())
