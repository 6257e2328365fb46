"""The paper test's renderer and scoring (benchmarks/paper.py): ink is the pen's real width,
crossings saturate, the scores and the plot-time model say what they claim."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import plotterd.pen as pen_module
from plotterd.errors import InputError
from plotterd.pen import DrawingBox, RoundNib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from paper_peers import greedy, paper_test  # noqa: E402

PX_PER_MM = 10.0  # the paper test's resolution, 4x supersampled
BOX = DrawingBox(80.0, 40.0)


def ink_mm2(grey: np.ndarray, px_per_mm: float = PX_PER_MM, darkness: float = 1.0) -> float:
    return float((1.0 - grey).sum()) / px_per_mm**2 / darkness


def line_area(length: float, nib: float) -> float:
    return length * nib + math.pi * nib**2 / 4  # a stadium: round caps


@pytest.mark.parametrize("nib", [0.3, 1.0])
def test_a_straight_line_lays_length_times_nib_plus_its_round_caps(nib):
    page = RoundNib(nib).render([np.array([[10.0, 20.0], [60.0, 20.0]])], BOX, PX_PER_MM)
    assert ink_mm2(page) == pytest.approx(line_area(50.0, nib), rel=0.001)
    # and it is nib wide across, not cv2's ~1.8x (the column through the middle)
    assert (1.0 - page[:, 350]).sum() / PX_PER_MM == pytest.approx(nib, rel=0.001)


def test_a_45_degree_line_lays_the_same_ink_as_a_straight_one():
    a, b = np.array([10.0, 5.0]), np.array([40.0, 35.0])
    page = RoundNib(0.3).render([np.array([a, b])], BOX, PX_PER_MM)
    assert ink_mm2(page) == pytest.approx(line_area(float(np.linalg.norm(b - a)), 0.3),
                                          rel=0.001)


@pytest.mark.parametrize(("nib", "px_per_mm", "supersample"), [
    (0.3, PX_PER_MM, 4),  # the paper test and the simulator
    (0.5, PX_PER_MM, 4),
    (1.0, 4.0, 4),
    (2.0, PX_PER_MM, 4),  # a thick nib: larger tiles
    (0.3, 1 / 0.3, 8),  # the optimiser's canvas: 1 px = 1 nib
])
def test_a_line_at_any_angle_lays_length_times_nib_plus_its_caps(nib, px_per_mm, supersample):
    # the coverage is of each pixel's exact distance to the true segment, so no angle gains
    # ink (measuring to a rasterised centre line gave +2 to +5 % between 5 and 40 degrees)
    box = DrawingBox(40.0, 40.0)
    pen = RoundNib(nib)
    centre = np.array([20.013, 19.971])  # off the pixel grid
    for degrees in np.arange(0.0, 90.01, 2.5):
        t = math.radians(degrees)
        half = 15.0 * np.array([math.cos(t), math.sin(t)])
        page = pen.render([np.array([centre - half, centre + half])], box, px_per_mm,
                          supersample=supersample)
        ink = ink_mm2(page, px_per_mm)
        assert ink == pytest.approx(line_area(30.0, nib), rel=0.005), degrees


def test_a_pixel_aligned_bar_and_a_dot_are_exact():
    # a horizontal 0.5 mm line from x = 10 to 30 mm through the middle of row 200 at
    # 10 px/mm: its band's edges fall on pixel edges, so rows 198 to 202 are full ink,
    # the rest bare, and each column in the middle holds exactly the nib's 0.5 mm
    page = RoundNib(0.5).render([np.array([[10.0, 20.05], [30.0, 20.05]])], BOX, PX_PER_MM)
    ink = 1.0 - page
    assert np.abs(ink[198:203, 110:290] - 1.0).max() < 1e-6
    assert np.abs(ink[:197, :]).max() < 1e-6 and np.abs(ink[204:, :]).max() < 1e-6
    assert np.abs(ink[:, 110:290].sum(0) / PX_PER_MM - 0.5).max() < 1e-4
    assert ink_mm2(page) == pytest.approx(line_area(20.0, 0.5), rel=1e-3)
    # a dot is a disc of the nib, however the pixel grid cuts it
    for nib, centre in ((0.5, (30.0, 20.0)), (0.3, (30.037, 20.011)), (1.0, (12.5, 7.25))):
        dot = RoundNib(nib).render([np.array([centre])], BOX, PX_PER_MM)
        assert ink_mm2(dot) == pytest.approx(math.pi * nib**2 / 4, rel=0.005), nib


def test_a_dot_is_a_disc_of_the_nib():
    page = RoundNib(0.5).render([np.array([[30.0, 20.0], [30.0, 20.0]])], BOX, PX_PER_MM)
    assert ink_mm2(page) == pytest.approx(math.pi * 0.25**2, rel=0.005)


def test_crossing_lines_saturate_instead_of_doubling_the_ink():
    pen = RoundNib(0.3, darkness=0.5)
    h = np.array([[10.0, 20.0], [60.0, 20.0]])
    v = np.array([[35.0, 5.0], [35.0, 35.0]])
    page = pen.render([h, v], BOX, PX_PER_MM)
    expected = line_area(50.0, 0.3) + line_area(30.0, 0.3) - 0.3 * 0.3  # overlap counted once
    assert ink_mm2(page, darkness=0.5) == pytest.approx(expected, rel=0.001)
    assert page.min() >= 0.5 - 1e-6  # the crossing is as dark as one line, no darker
    # the same line drawn twice lays the ink of one
    twice = pen.render([h, h], BOX, PX_PER_MM)
    assert np.abs(twice - pen.render([h], BOX, PX_PER_MM)).max() < 1e-6


def test_the_simulated_plotter_renders_with_the_pen_model(tmp_path):
    from plotterd.machine.sim.render import render_segments

    segs = [(10.0, 20.0, 60.0, 20.0)]
    png, svg = render_segments(segs, (0.0, 0.0, 80.0, 40.0), tmp_path / "a.png",
                               px_per_mm=8.0, pen=RoundNib(0.5))
    img = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    assert ink_mm2(img, 8.0) == pytest.approx(line_area(50.0, 0.5), rel=0.02)
    assert 'stroke-width="0.5"' in svg.read_text()
    # the older keyword draws the same pen
    png2, _ = render_segments(segs, (0.0, 0.0, 80.0, 40.0), tmp_path / "b.png",
                              px_per_mm=8.0, pen_width_mm=0.5)
    assert np.array_equal(cv2.imread(str(png2)), cv2.imread(str(png)))
    # a zero-length move is a dot, not nothing
    png3, _ = render_segments([(30.0, 20.0, 30.0, 20.0)], (0.0, 0.0, 80.0, 40.0),
                              tmp_path / "c.png", px_per_mm=8.0, pen=RoundNib(1.0))
    dot = cv2.imread(str(png3), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    assert ink_mm2(dot, 8.0) == pytest.approx(math.pi / 4, rel=0.05)


def test_the_box_is_150_mm_on_the_long_side_and_a_whole_number_of_view_pixels():
    assert paper_test.box_for(512, 512) == DrawingBox(150.0, 150.0)
    wide = paper_test.box_for(448, 172)
    assert wide.width_mm == 150.0 and wide.height_mm == pytest.approx(57.6)
    tall = paper_test.box_for(328, 400)
    assert tall.height_mm == 150.0 and tall.width_mm == pytest.approx(123.2)
    w, h = paper_test.view_size(wide)
    assert (w, h) == (375, 144)


def _photo(tmp_path: Path, grey: np.ndarray) -> paper_test.Photo:
    path = tmp_path / "photo.png"
    Image.fromarray(np.round(grey * 255).astype(np.uint8)).save(path)
    return paper_test.load_photo(path, tmp_path / "work")


def _gradient(h: int = 120, w: int = 160) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    g = 0.5 + 0.4 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    g[40:80, 50:110] = 0.1  # a dark block with edges
    return g.astype(np.float32)


def test_scores_of_the_photo_against_itself_are_perfect_and_a_blank_page_is_not():
    photo = paper_test.box_for(160, 120)
    view = cv2.resize(_gradient(), paper_test.view_size(photo), interpolation=cv2.INTER_AREA)
    same = paper_test.scores(view, view)
    assert same["haarpsi"] == pytest.approx(1.0, abs=1e-4)
    assert same["msssim"] == pytest.approx(1.0, abs=1e-4)
    assert same["lightness_ssim"] == pytest.approx(1.0, abs=1e-4)
    assert same["delta_lightness"] == 0.0
    blank = paper_test.scores(np.ones_like(view), view)
    faint = paper_test.scores(0.5 + 0.5 * view, view)  # the photo at half its contrast
    for key in ("haarpsi", "msssim", "lightness_ssim"):
        assert same[key] > faint[key] > blank[key], key
    assert blank["haarpsi"] < 0.3
    # bare paper is L* 100 everywhere, at or above every point of the photo
    assert blank["lightness_page"] == pytest.approx(100.0, abs=1e-3)
    assert blank["delta_lightness"] == pytest.approx(100.0 - blank["lightness_photo"], abs=1e-3)
    assert same["delta_lightness"] < faint["delta_lightness"] < blank["delta_lightness"]


def test_msssim_fits_its_kernel_to_a_short_side():
    assert paper_test.msssim_kernel((1, 1, 375, 375)) == 11
    assert paper_test.msssim_kernel((1, 1, 144, 375)) == 9
    page = np.random.default_rng(0).uniform(0, 1, (144, 375)).astype(np.float32)
    assert 0 < paper_test.scores(page, page * 0.5 + 0.25)["msssim"] < 1


def test_plot_time_follows_the_motion_model():
    # 40 mm pen down from the corner: 40/40 + 40/500 s (trapezoid at 500 mm/s^2), one lift
    # (0.3 s) and 40 mm home at 80 mm/s: 40/80 + 80/500 s
    t = paper_test.plot_time_s([np.array([[0.0, 0.0], [40.0, 0.0]])])
    assert t == pytest.approx(1.08 + 0.3 + 0.66, rel=1e-6)
    # each further path costs a lift and a travel: two halves take longer than one line
    halves = [np.array([[0.0, 0.0], [20.0, 0.0]]), np.array([[20.0, 0.0], [40.0, 0.0]])]
    assert paper_test.plot_time_s(halves) > t + 0.3


def test_alpha_is_composited_on_white_and_a_downscaled_copy_is_the_same_picture(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[5:15, 10:20] = (0, 0, 0, 255)  # an opaque black square on transparent black
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    grey = paper_test.load_grey(path)
    # (through linear luminance and back: white comes back within a float32 step)
    assert grey[0, 0] == pytest.approx(1.0, abs=1e-6) and grey[10, 15] == 0.0
    g = _gradient()
    small = cv2.resize(g, (80, 60), interpolation=cv2.INTER_AREA)
    assert paper_test.same_picture(g, small)
    assert not paper_test.same_picture(g, g[::-1].copy())
    assert not paper_test.same_picture(g, g[:, :100].copy())


def test_greedy_lays_the_ink_the_tone_asks_for(tmp_path):
    photo = _photo(tmp_path, _gradient())
    drawing = greedy.draw(photo, 6)
    ink = sum(float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) for p in drawing.lines_mm)
    need = photo.ink_needed_mm()
    assert need * 0.95 <= ink <= need * 1.1
    # its budget lays coverage 1 - grey (the photo's sRGB values): the page's mean
    # reflectance at arm's length is the photo's mean grey
    page = paper_test.evaluate(drawing, photo)["page"]
    tone = float(paper_test.to_arms_length(page, photo.box).mean())
    assert tone == pytest.approx(float(photo.at(paper_test.VIEW_PX_PER_MM).mean()), abs=0.1)
    for p in drawing.lines_mm:
        assert (p >= 0).all() and (p[:, 0] <= photo.box.width_mm).all()
        assert (p[:, 1] <= photo.box.height_mm).all()


def test_hatched_runs_under_numpy_2_and_on_a_photo_darker_than_its_levels(tmp_path):
    pytest.importorskip("hatched", reason="hatched is in the bench extra: pip install '.[bench]'")
    from paper_peers import hatching

    dark = np.full((60, 80), 0.15, np.float32)  # no pixel lighter than level 64
    dark[20:40, 30:50] = 0.9
    drawing = hatching.draw(_photo(tmp_path, dark), 1.6)
    assert drawing.lines_mm
    fig = paper_test.evaluate(drawing, _photo(tmp_path, dark))["figures"]
    assert fig["lightness_page"] < 85.0  # hatched, not left blank (paper is L* 100)


def test_a_page_is_rendered_in_less_memory_than_one_float_array_of_it():
    """The simulator renders what it drew in the daemon process: the page is rendered tile
    by tile, so the supersampled page is never held (it was a float array and the
    centre-line bytes before, ~0.2 GB for a 300 mm bed)."""
    import tracemalloc

    box = DrawingBox(100.0, 100.0)
    rng = np.random.default_rng(0)
    lines = [rng.uniform(0, 100, (8, 2)) for _ in range(50)]  # ~17 m of line
    pen = RoundNib(0.3)
    tracemalloc.start()
    try:
        pen.render(lines, box, 4.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ss_pixels = (400 * 7) ** 2  # 4 px/mm, supersampled 7x for 8 px per 0.3 mm nib
    assert peak < 0.75 * ss_pixels * 4, f"{peak / 2**20:.0f} MB for a {ss_pixels:,}-pixel page"


def test_bands_and_chunks_do_not_change_the_page(monkeypatch):
    # the pairs are made a band of tile rows at a time and worked in chunks of whole tiles;
    # a tile's pieces must meet in one chunk, or a crossing would lose its saturation
    rng = np.random.default_rng(1)
    lines = [rng.uniform(0, 40, (6, 2)) for _ in range(12)] + [np.array([[20.0, 20.0]])]
    pen = RoundNib(0.5, darkness=0.7)
    page = pen.render(lines, BOX, PX_PER_MM)
    monkeypatch.setattr(pen_module, "_BAND_PAIRS", 300)
    monkeypatch.setattr(pen_module, "_CHUNK_ELEMENTS", 1)
    assert np.abs(pen.render(lines, BOX, PX_PER_MM) - page).max() < 1e-6
    assert page.min() >= 0.3 - 1e-6 and (page < 0.31).sum() > 1000  # saturated, not blank


def test_a_path_with_a_coordinate_that_is_not_a_number_is_refused():
    with pytest.raises(InputError, match="finite"):
        RoundNib(0.3).render([np.array([[1.0, 2.0], [np.nan, 3.0]])], BOX, PX_PER_MM)


def test_a_path_running_far_off_the_page_draws_its_part_on_the_page():
    # cut to the page (plus the nib's reach) before it is drawn: a kilometre-long line costs
    # what its part on the page costs, and looks the same
    pen = RoundNib(0.3)
    far = [np.array([[-1e6, 20.0], [40.0, 20.0]]), np.array([[-1e5, -1e5 + 3], [1e5, 1e5 + 3]]),
           np.array([[200.0, 5.0], [300.0, 5.0]])]
    near = [np.array([[-5.0, 20.0], [40.0, 20.0]]), np.array([[-10.0, -7.0], [90.0, 93.0]])]
    page = pen.render(far, BOX, PX_PER_MM)
    assert np.abs(page - pen.render(near, BOX, PX_PER_MM)).max() < 1e-6
    assert page.min() < 0.01
