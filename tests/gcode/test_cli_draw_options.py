"""`plotterd draw --set key=value` (pipeline overrides, validated like the YAML) and
`--device cuda:N`. Here with the G-code CLI tests: the draw CLI options are this file's."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from plotterd.cli import cli
from plotterd.cli.draw_cmd import check_device, parse_sets
from plotterd.draw.strokes import Strokes
from plotterd.errors import ConfigError
from plotterd.pipeline import load_pipeline

DATA = Path(__file__).resolve().parents[1] / "data"


def test_sets_become_nested_overrides_parsed_as_yaml():
    over = parse_sets(["iterations=5", "loss.sigma=2.5", "strokes[0].count=10",
                       "init=dark", "lr=0.01"], "tiny")
    p = load_pipeline("tiny", overrides=over).to_dict()
    assert p["iterations"] == 5 and p["loss"]["sigma"] == 2.5 and p["lr"] == 0.01
    assert p["strokes"][0]["count"] == 10 and p["strokes"][0]["kind"] == "line"


@pytest.mark.parametrize("item,key", [
    ("loss.sigma=-1", "loss.sigma"), ("lossy=1", "lossy"), ("iterations=many", "iterations"),
    ("strokes[0].kind=spline", "strokes[0].kind"),
])
def test_a_bad_value_is_refused_naming_the_key(item, key):
    with pytest.raises(ConfigError) as e:
        load_pipeline("tiny", overrides=parse_sets([item], "tiny"))
    assert key in str(e.value)


@pytest.mark.parametrize("item", ["iterations", "=3", "loss..sigma=1", "strokes[4].count=1",
                                  "iterations=3 x: [", "loss=1"])
def test_malformed_sets_are_bad_parameters(item):
    items = ["loss=1", "loss.sigma=2"] if item == "loss=1" else [item]
    with pytest.raises(click.BadParameter):
        parse_sets(items, "tiny")


def test_draw_with_sets_and_errors(tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["draw", str(DATA / "horse_small.png"), "-p", "tiny", "-o",
                                 str(out), "--device", "cpu", "--set", "iterations=2",
                                 "--set", "strokes[0].count=12", "--set", "seed=3"])
    assert r.exit_code == 0, r.output
    s = Strokes.load(out / "strokes.json")
    assert len(s) == 12 and s.metadata["iterations"] == 2 and s.metadata["seed"] == 3
    bad = CliRunner().invoke(cli, ["draw", str(DATA / "horse_small.png"), "-p", "tiny",
                                   "-o", str(out), "--set", "loss.sigma=-1"])
    assert bad.exit_code != 0 and "loss.sigma: must be >= 0" in str(bad.exception)


def test_device_accepts_cuda_ordinals():
    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:3"):
        assert check_device(None, None, ok) == ok
    for bad in ("gpu", "cuda:", "cuda:x", "mps"):
        with pytest.raises(click.BadParameter):
            check_device(None, None, bad)
    r = CliRunner().invoke(cli, ["draw", "x.png", "--device", "tpu"])
    assert r.exit_code == 2 and "cuda:N" in r.output


def test_cuda_ordinal_reaches_the_optimiser(tmp_path):
    torch = pytest.importorskip("torch")
    r = CliRunner().invoke(cli, ["draw", str(DATA / "horse_small.png"), "-p", "tiny", "-o",
                                 str(tmp_path), "--device", "cuda:7", "--set", "iterations=1"])
    if torch.cuda.device_count() > 7:
        assert r.exit_code == 0, r.output
    else:  # refused where it is resolved, with the device key
        assert isinstance(r.exception, ConfigError) and r.exception.key == "device"
        assert ("not available" in str(r.exception)) or ("no CUDA device 7" in str(r.exception))
