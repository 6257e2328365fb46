"""Fitted pen profiles (plotterd.pen) and the light conversions (plotterd.light) under them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plotterd.errors import ConfigError
from plotterd.light import lightness, np_lightness, np_srgb_to_luminance, srgb_to_linear
from plotterd.pen import (
    FittedPen,
    RoundNib,
    list_pen_profiles,
    load_pen_profile,
    pen_from_dict,
    save_pen_profile,
)


def _pen(name="fine-03", nib=0.38, darkness=0.92):
    return FittedPen(name, nib, darkness, "#151518", 0.3, "2026-12-07T10:00:00", "fine-03.jpg",
                     0.008)


def test_a_profile_round_trips_through_its_file_and_strokes_metadata(tmp_path):
    pen = _pen()
    path = save_pen_profile(pen, tmp_path)
    assert path == tmp_path / "fine-03.yaml"
    assert load_pen_profile("fine-03", tmp_path) == pen
    assert pen_from_dict({"profile": "fine-03"}, pens_folder=tmp_path) == pen
    # strokes.json carries the whole pen: it rebuilds without the pens folder
    assert pen_from_dict(pen.to_dict()) == pen
    assert [p.name for p in list_pen_profiles(tmp_path)] == ["fine-03"]


def test_the_pens_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PLOTTERD_PENS_DIR", str(tmp_path))
    save_pen_profile(_pen("ball", 0.5, 0.6))
    assert pen_from_dict({"profile": "ball"}).darkness == 0.6


def test_a_fitted_pen_draws_like_a_round_nib_of_its_effective_width():
    from plotterd.pen import DrawingBox

    line = [np.array([[2.0, 5.0], [18.0, 5.0]])]
    box = DrawingBox(20, 10)
    fitted = _pen(nib=0.45, darkness=0.8).render(line, box, 10)
    round_ = RoundNib(0.45, 0.8).render(line, box, 10)
    np.testing.assert_array_equal(fitted, round_)
    assert _pen(nib=0.45, darkness=0.8).ink_per_mm() == pytest.approx(0.36)


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", ".hidden", "x" * 80])
def test_a_profile_is_named_never_a_path(tmp_path, name):
    with pytest.raises(ConfigError) as e:
        pen_from_dict({"profile": name}, key="plotter.pen", pens_folder=tmp_path)
    assert e.value.key == "plotter.pen.profile"


def test_a_missing_profile_names_the_key_and_the_known_ones(tmp_path):
    save_pen_profile(_pen("fine-03"), tmp_path)
    with pytest.raises(ConfigError) as e:
        pen_from_dict({"profile": "nope"}, key="plotter.pen", pens_folder=tmp_path)
    assert e.value.key == "plotter.pen.profile"
    assert "fine-03" in e.value.message and "plotterd pens fit" in e.value.message


def test_a_garbled_profile_file_is_a_config_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("nib_mm: [unclosed\n")
    with pytest.raises(ConfigError, match="unreadable pen profile"):
        load_pen_profile("bad", tmp_path)
    (tmp_path / "odd.yaml").write_text("nib_mm: 0.3\ndarkness: 2.5\n")
    with pytest.raises(ConfigError, match="darkness"):
        load_pen_profile("odd", tmp_path)
    assert list_pen_profiles(tmp_path) == []  # unreadable ones are left out of the list


def test_round_nib_keys_are_still_checked():
    with pytest.raises(ConfigError) as e:
        pen_from_dict({"nib_mm": 0.3, "colour": "red"})
    assert e.value.key == "pen.colour"
    with pytest.raises(ConfigError):
        pen_from_dict({"model": "felt"})


def test_light_matches_the_worked_numbers():
    # color.md's table: sRGB 0.5 is 21 % of the light and L* 53; 50 % coverage is L* 76
    assert np_srgb_to_luminance(np.full((2, 2), 0.5))[0, 0] == pytest.approx(0.214, abs=1e-3)
    assert np_lightness(np.array([[0.5, 0.214, 1.0]]))[0].tolist() == pytest.approx(
        [76.07, 53.4, 100.0], abs=0.1)
    rgb = np.zeros((1, 1, 3))
    rgb[..., 1] = 1.0  # pure green: 0.7152 of the light
    assert np_srgb_to_luminance(rgb)[0, 0] == pytest.approx(0.7152, abs=1e-3)


def test_lightness_has_finite_gradients_down_to_black():
    y = torch.tensor([0.0, 1e-7, 0.002, 0.5, 1.0]).reshape(1, 1, 1, 5).requires_grad_()
    lightness(y).sum().backward()
    assert torch.isfinite(y.grad).all()
    x = torch.linspace(0, 1, 11).reshape(1, 1, 1, 11)
    assert torch.all(torch.diff(srgb_to_linear(x).flatten()) > 0)


def test_a_pipeline_override_naming_a_profile_replaces_the_whole_pen(tmp_path, monkeypatch):
    from plotterd.pipeline import load_pipeline

    monkeypatch.setenv("PLOTTERD_PENS_DIR", str(tmp_path))
    save_pen_profile(_pen("wide", nib=0.6, darkness=0.7))
    pipeline = load_pipeline("paper", overrides={"pen": {"profile": "wide"}})
    assert pipeline.pen_model == _pen("wide", nib=0.6, darkness=0.7)
    with pytest.raises(ConfigError, match="no pen profile 'gone'"):
        load_pipeline("paper", overrides={"pen": {"profile": "gone"}})
    # a plain nib override still merges over the pipeline's pen
    assert load_pipeline("paper", overrides={"pen": {"nib_mm": 0.5}}).pen_model == RoundNib(0.5)
