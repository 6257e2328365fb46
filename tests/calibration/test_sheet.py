"""The calibration sheet: its geometry, its SVG and G-code, and marks a camera can find."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import vpype as vp
from click.testing import CliRunner

from plotterd.calibration import make_sheet, render_sheet, write_sheet
from plotterd.calibration.fit import marker_detector
from plotterd.calibration.sheet import SPACINGS_NIB
from plotterd.cli import cli
from plotterd.errors import ConfigError
from plotterd.gcode import Program, load_profile
from plotterd.machine.sim.camera import CameraSettings, photograph
from plotterd.pen import FittedPen, RoundNib, save_pen_profile
from plotterd.vector import PX_PER_MM


def test_svg_reads_back_with_vpype(tmp_path: Path, a5_sheet) -> None:
    paths = write_sheet(a5_sheet, tmp_path)
    back = vp.read_multilayer_svg(str(paths["svg"]), 0.05)
    doc = a5_sheet.document
    assert sorted(back.layers) == sorted(doc.layers) == [1]
    assert len(back.layers[1]) == len(doc.layers[1]) > 40
    assert np.allclose(back.bounds(), doc.bounds(), atol=0.01)
    assert np.allclose(np.array(back.page_size) / PX_PER_MM, [148, 210], atol=0.01)
    assert back.layers[1].property(vp.METADATA_FIELD_NAME) == "pen1"


def test_hatch_lines_sit_exactly_at_their_spacing(a5_sheet) -> None:
    swatches = a5_sheet.layout["rows"][0]["swatches"]
    hatches = [s for s in swatches if s["kind"] == "hatch"]
    assert sorted({round(s["spacing_mm"] / 0.3, 3) for s in hatches}) == list(SPACINGS_NIB)
    assert {s["direction_deg"] for s in hatches} == {0.0, 90.0}
    for s in hatches:
        pts = np.asarray(s["paths"][0])
        axis = 1 if s["direction_deg"] == 0 else 0
        offsets = np.unique(np.round(pts[:, axis], 9))
        assert np.allclose(np.diff(offsets), s["spacing_mm"])
        w = s["window_mm"]
        across = w[3] - w[1] if axis == 1 else w[2] - w[0]
        periods = across / s["spacing_mm"]
        assert abs(periods - round(periods)) < 1e-9 and periods >= 1


@pytest.mark.parametrize("nib,darkness", [(0.38, 0.9), (0.24, 0.7)])
def test_a_pen_covers_each_window_as_murray_davies_says(a5_sheet, nib, darkness) -> None:
    """Rendered straight (no camera), every window reads 1 - D min(1, w / s)."""
    page = render_sheet(a5_sheet.layout, RoundNib(nib, darkness), 20.0, supersample=6)[..., 1]
    for s in a5_sheet.layout["rows"][0]["swatches"]:
        if s["kind"] == "dots":
            expected = 1 - darkness * (math.pi * nib ** 2 / 4 + nib * s["dot_length_mm"]) / 4.0
        else:
            expected = 1 - darkness * min(1.0, nib / s["spacing_mm"])
        x0, y0, x1, y1 = (round(v * 20) for v in s["window_mm"])
        assert page[y0:y1, x0:x1].mean() == pytest.approx(expected, abs=0.015), s["id"]


def test_marks_are_found_in_a_tilted_photo(a5_sheet) -> None:
    page = render_sheet(a5_sheet.layout, RoundNib(0.3), 10.0)
    # no lens distortion here: page_to_photo is then where the marks truly are
    settings = CameraSettings(size_px=(1600, 1200), max_tilt_deg=20.0, max_roll_deg=180.0,
                              radial_k1=0.0)
    detector = marker_detector()
    for seed in (1, 2, 4, 6):
        shot = photograph(page, 10.0, settings, seed=seed)
        grey = cv2.cvtColor(shot.image, cv2.COLOR_RGB2GRAY)
        corners, ids, _ = detector.detectMarkers(grey)
        assert ids is not None and set(ids.ravel()) == {0, 1, 2, 3}
        # and where the camera put them
        mark = a5_sheet.layout["markers"]["items"][0]
        truth = cv2.perspectiveTransform(np.asarray([mark["corners_mm"]], np.float64),
                                         shot.page_to_photo)[0]
        found = corners[list(ids.ravel()).index(0)].reshape(4, 2)
        assert np.abs(found - truth).max() < 3.0


def test_multi_pen_sheet_has_a_layer_per_pen_and_pen_changes(tmp_path: Path) -> None:
    pens_dir = tmp_path / "pens"
    pens_dir.mkdir()
    save_pen_profile(FittedPen("blue", 0.42, 0.8, colour="#2040a0", nominal_nib_mm=0.4),
                     pens_dir)
    out = tmp_path / "sheet"
    res = CliRunner().invoke(cli, ["pens", "sheet", "-o", str(out), "--paper", "a4",
                                   "--pen", "black", "--pen", "blue", "--pen", "red",
                                   "--pens-dir", str(pens_dir)])
    assert res.exit_code == 0, res.output
    doc = vp.read_multilayer_svg(str(out / "sheet.svg"), 0.05)
    names = [doc.layers[k].property(vp.METADATA_FIELD_NAME) for k in sorted(doc.layers)]
    assert names == ["black", "blue", "red"]
    widths = [doc.layers[k].property(vp.METADATA_FIELD_PEN_WIDTH) / PX_PER_MM
              for k in sorted(doc.layers)]
    assert widths == pytest.approx([0.3, 0.42, 0.3], abs=1e-3)
    profile = load_profile("grbl-servo")
    program = Program.load(out / "sheet.gcode", profile)  # re-checks every move's bounds
    assert sum(ln.text == "M0" for ln in program.lines) == 2
    xs = [float(t[1:]) for ln in program.lines for t in ln.text.split() if t[:1] == "X"]
    assert 0 <= min(xs) and max(xs) <= 300
    assert (out / "sheet.json").is_file() and (out / "sheet.png").is_file()


def test_sheet_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="122 x 56 mm.*use larger paper"):
        make_sheet([RoundNib(0.3)], (105.0, 148.0))  # A6
    with pytest.raises(ConfigError, match="fewer pens"):
        make_sheet([RoundNib(0.3)] * 6, (148.0, 210.0))
    with pytest.raises(ConfigError, match="nib"):
        make_sheet([RoundNib(2.0)], (210.0, 297.0))
    res = CliRunner().invoke(cli, ["pens", "sheet", "-o", str(tmp_path / "s"), "--paper",
                                   "a6"])
    assert isinstance(res.exception, ConfigError) and not (tmp_path / "s").exists()
