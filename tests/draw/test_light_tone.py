"""Tone in light: the drawing is matched to the photo's linear luminance, mixed as light.

A hatch covering a fraction c of the paper reflects 1 - c of its light, so to look like an
sRGB 0.5 grey (21 % of the light) it must cover about 79 %, not 50 %."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plotterd.draw import load_pipeline, optimise
from plotterd.draw.export import strokes_polylines_mm
from plotterd.draw.inits import make_start
from plotterd.draw.losses import build_loss
from plotterd.draw.paper_loss import black_point, capped_target
from plotterd.light import lightness, np_lightness, srgb_to_linear
from plotterd.pen import DrawingBox, RoundNib
from plotterd.pipeline import Ink, pipeline_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")

MID_GREY_L = 53.39  # L* of sRGB 0.5


def paper_pipeline(**over):
    base = load_pipeline("paper").to_dict()
    base.update({"page": {"long_side_mm": 18}, "iterations": 3})
    base.update(over)
    return pipeline_from_dict(base)


def flat(value: float, h: int = 60, w: int = 60) -> torch.Tensor:
    return torch.full((1, 1, h, w), value)


def light_loss(target: torch.Tensor, tone: str = "light", darkness: float = 1.0,
               structure: str = "none"):
    return build_loss({"type": "paper", "tone": tone, "pen_darkness": darkness,
                       "structure": structure, "canvas_px_per_mm": 2.5}, target)


def hatch_image(coverage_rows: int, period: int = 10, h: int = 60, w: int = 60) -> torch.Tensor:
    """1 - coverage of horizontal lines: ``coverage_rows`` inked rows in every ``period``."""
    img = torch.ones(1, 1, h, w)
    for r in range(h):
        if r % period < coverage_rows:
            img[..., r, :] = 0.0
    return img


def test_paper_pipelines_default_to_light_and_pixel_is_kept_on_request():
    assert load_pipeline("paper").tone == "light"
    assert paper_pipeline(tone="pixel").tone == "pixel"
    no_page = load_pipeline("lines-blurmse")
    assert no_page.page is None and no_page.tone == "pixel"


def test_a_mid_grey_needs_79_percent_coverage_in_light_and_half_in_pixels():
    area_px = 60 * 60
    needed = {}
    for tone in ("light", "pixel"):
        r = optimise(flat(0.5), paper_pipeline(tone=tone), iterations=0)
        needed[tone] = r.strokes.metadata["ink_needed_mm"] / 0.3 / area_px  # per px
        assert r.strokes.metadata["tone"] == tone
    assert needed["light"] == pytest.approx(1 - 0.2140, abs=0.003)
    assert needed["pixel"] == pytest.approx(0.5, abs=0.003)


def test_the_photo_s_black_maps_to_a_grey_pen_s_black_point():
    loss = light_loss(flat(0.0), darkness=0.8)  # a black photo, a pen laying 80 %
    solid = flat(0.0)  # full coverage: the darkest this pen lays
    assert float(loss(solid)) == pytest.approx(0.0, abs=1e-9)
    assert float(loss(flat(0.1))) > 1e-4  # any less ink is lighter than its black
    bp = black_point(0.8)
    assert bp["reflectance"] == pytest.approx(0.2)
    assert bp["lightness"] == pytest.approx(float(lightness(torch.full((1, 1, 1, 1), 0.2))),
                                            abs=0.01)
    r = optimise(flat(0.0), paper_pipeline(pen={"nib_mm": 0.3, "darkness": 0.8}),
                 iterations=0)
    assert r.strokes.metadata["black_point"]["reflectance"] == pytest.approx(0.2)


@pytest.mark.parametrize("structure", ["none", "haarpsi"])
def test_the_light_loss_is_zero_for_identical_images(structure):
    rng = torch.Generator().manual_seed(0)
    target = torch.rand(1, 1, 120, 120, generator=rng)
    loss = light_loss(target, structure=structure)
    assert float(loss(target.clone())) == pytest.approx(0.0, abs=1e-5)


def test_the_tone_term_prefers_the_hatch_that_matches_in_light():
    target = flat(0.5)  # an sRGB mid-grey photo
    light_target = srgb_to_linear(target)  # what the optimiser hands the loss in light
    light, pixel = light_loss(light_target), light_loss(target, tone="pixel")
    half, dense = hatch_image(5), hatch_image(8)  # 50 % and 80 % coverage
    assert float(light(dense)) < float(light(half))
    assert float(pixel(half)) < float(pixel(dense))


def test_gradients_are_finite_at_black():
    target = srgb_to_linear(flat(0.5))
    image = torch.zeros(1, 1, 60, 60, requires_grad=True)  # solid black page
    light_loss(target, structure="haarpsi")(image).backward()
    assert torch.isfinite(image.grad).all()
    assert image.grad.abs().sum() > 0  # black still says which way to go


def test_pixel_tone_is_the_old_blurred_mse():
    from plotterd.draw.losses import gaussian_blur

    rng = torch.Generator().manual_seed(1)
    target, image = (torch.rand(1, 1, 40, 40, generator=rng) for _ in range(2))
    loss = build_loss({"type": "paper", "structure": "none", "tone_sigma_px": 2.0,
                       "tone_weight": 3.0}, target)  # tone defaults to pixel
    old = 3.0 * torch.nn.functional.mse_loss(gaussian_blur(image, 2.0),
                                              gaussian_blur(target, 2.0))
    assert float(loss(image)) == pytest.approx(float(old), rel=1e-6)


def test_pixel_tone_loads_the_photo_as_before(tmp_path):
    import cv2
    from PIL import Image

    from plotterd.draw.image import load_target

    rng = np.random.default_rng(0)
    rgb = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    path = tmp_path / "c.png"
    Image.fromarray(rgb).save(path)
    p = pipeline_from_dict({"strokes": [{"kind": "line", "count": 1}],
                            "resolution": {"height": 30}})
    grey = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2GRAY)
    assert p.tone == "pixel"
    assert np.allclose(load_target(path, p)[0, 0].numpy(), grey, atol=1e-6)
    lit = load_target(path, pipeline_from_dict({**p.to_dict(), "tone": "light"}))
    lum = (srgb_to_linear(torch.from_numpy(rgb / 255.0).permute(2, 0, 1)[None].float())
           * torch.tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)).sum(1)
    assert np.allclose(srgb_to_linear(lit)[0, 0].numpy(), lum[0].numpy(), atol=2e-3)


def test_an_ink_cap_compresses_the_tones_instead_of_clipping():
    ramp = torch.linspace(0.0, 1.0, 90).view(1, 1, 1, 90).expand(1, 1, 60, 90)
    linear = srgb_to_linear(ramp)
    darkness = 1.0 - linear[0, 0].numpy()
    free = make_start("hatch", darkness, {}, Ink(), 0.3, 0)
    capped = make_start("hatch", darkness, {}, Ink(max_length_m=0.3 * free.needed_px
                                                    * 0.5 / 1000), 0.3, 0)
    assert free.tone_scale == 1.0 and capped.tone_scale < 0.55
    curve = capped_target(linear, capped.tone_scale)[0, 0, 0]
    assert (curve.diff() >= 0).all() and (curve.diff() > 0).sum() > 80  # order kept
    assert float(curve[0]) == pytest.approx(1 - capped.tone_scale, abs=1e-6)  # black rises
    assert float(curve[-1]) == pytest.approx(1.0)  # white stays paper
    p = paper_pipeline(ink={"max_length_m": 0.5})
    meta = optimise(ramp, p, iterations=0).strokes.metadata
    assert meta["tone_scale"] < 1.0
    assert meta["black_point"]["reflectance"] == pytest.approx(1 - meta["tone_scale"], abs=1e-3)
    assert meta["black_point"]["lightness"] > 10
    assert meta["tone_cap_delta_lightness"] > 1.0
    assert meta["ink_mm"] <= 500 * 1.02


def test_the_start_lays_the_ink_the_tone_needs():
    rng = np.random.default_rng(0)
    photo = torch.from_numpy(rng.uniform(0.1, 0.9, (60, 60)).astype(np.float32))[None, None]
    import cv2

    photo = torch.from_numpy(cv2.GaussianBlur(photo[0, 0].numpy(), (0, 0), 6))[None, None]
    ratio = {}
    for cross in (False, True):
        options = {**paper_pipeline().init_options, "cross": cross}
        meta = optimise(photo, paper_pipeline(init_options=options),
                        iterations=0).strokes.metadata
        assert meta["tone_scale"] == 1.0
        ratio[cross] = meta["init_ink_ratio"]
    assert ratio[False] == pytest.approx(1.0, abs=0.1)
    # crossing layers overlap at every crossing: 75 % coverage is two layers of 50 %, 4/3
    # of the line one layer would need for it
    assert 1.1 < ratio[True] < 1.4


def test_a_flat_mid_grey_drawing_looks_mid_grey_on_paper():
    p = paper_pipeline(iterations=3)
    r = optimise(flat(0.5), p)
    box = DrawingBox(18.0, 18.0)
    page = RoundNib(0.3, 1.0).render(strokes_polylines_mm(r.strokes), box, 10.0,
                                     supersample=4)
    inner = page[20:-20, 20:-20]  # the light mixes over the page, away from its edges
    # 79 % coverage asked for; the hatch's dither lays the nearest eighth, 75 % (L* 57);
    # matched in pixel values it would lay 50 %, L* 76
    assert abs(float(np_lightness(np.array([[inner.mean()]]))[0, 0]) - MID_GREY_L) < 5.0

