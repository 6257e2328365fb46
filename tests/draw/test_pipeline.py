"""Pipeline YAML: shipped pipelines load, validation names the key, overrides, search path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plotterd.errors import ConfigError
from plotterd.pipeline import (
    DEFAULT_PIPELINE,
    PIPELINES_DIR,
    load_pipeline,
    pipeline_from_dict,
    pipeline_names,
)

SHIPPED = sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml"))


def test_the_required_pipelines_ship():
    for name in ("paper", "lines-blurmse", "points-ssmse", "curves-mse", "tiny"):
        assert name in SHIPPED
    assert DEFAULT_PIPELINE == "paper"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_pipeline_loads_and_round_trips(name):
    p = load_pipeline(name)
    assert p.name == name
    assert p.source == str(PIPELINES_DIR / f"{name}.yaml")
    again = pipeline_from_dict(p.to_dict())
    assert again == p
    # and through YAML text, as a job would store it
    assert pipeline_from_dict(yaml.safe_load(yaml.safe_dump(p.to_dict()))) == p


def test_shipped_pipelines_say_what_the_issue_asks():
    lines = load_pipeline("lines-blurmse")
    assert (lines.strokes[0].kind, lines.strokes[0].count) == ("line", 1000)
    assert lines.loss["type"] == "blurmse"
    points = load_pipeline("points-ssmse")
    assert (points.strokes[0].kind, points.strokes[0].count) == ("point", 2000)
    assert points.loss["type"] == "ssmse"
    curves = load_pipeline("curves-mse")
    s = curves.strokes[0]
    assert (s.kind, s.count, s.learn_width) == ("catmull_rom", 500, True)
    assert curves.loss["type"] == "mse"
    tiny = load_pipeline("tiny")
    assert tiny.height <= 64 and tiny.iterations <= 50 and tiny.strokes[0].count <= 100


def _minimal(**over):
    d = {"strokes": [{"kind": "line", "count": 10}], "loss": {"type": "mse"}}
    d.update(over)
    return d


def test_defaults():
    p = pipeline_from_dict(_minimal())
    assert (p.lr, p.iterations, p.init, p.composition, p.channels) == (
        0.01, 500, "uniform", "softor", 1
    )
    assert p.height == 200 and p.width is None
    assert p.strokes[0].control_points == 2 and p.strokes[0].width_px == 1.0
    assert pipeline_from_dict(_minimal(loss="blurmse")).loss == {
        "type": "blurmse", "sigma": 1.0, "blur_target": True
    }
    cr = pipeline_from_dict(_minimal(strokes=[{"kind": "catmull_rom", "count": 3}]))
    assert cr.strokes[0].control_points == 4
    c2f = pipeline_from_dict(_minimal(coarse_to_fine=True))
    assert c2f.coarse_to_fine.scale == 0.5
    assert pipeline_from_dict(c2f.to_dict()) == c2f


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (_minimal(iterashuns=3), "iterashuns"),
        ({"loss": {"type": "mse"}}, "strokes"),
        (_minimal(strokes=[]), "strokes"),
        (_minimal(strokes=[{"kind": "line", "count": 0}]), "strokes[0].count"),
        (_minimal(strokes=[{"kind": "line", "count": "many"}]), "strokes[0].count"),
        (_minimal(strokes=[{"kind": "line"}]), "strokes[0].count"),
        (_minimal(strokes=[{"count": 3}]), "strokes[0].kind"),
        (
            _minimal(strokes=[{"kind": "line", "count": 1}, {"kind": "spline", "count": 1}]),
            "strokes[1].kind",
        ),
        (_minimal(strokes=[{"kind": "line", "count": 1, "colour": [0, 0, 0]}]),
         "strokes[0].colour"),
        (_minimal(strokes=[{"kind": "line", "count": 1, "control_points": 3}]),
         "strokes[0].control_points"),
        (_minimal(strokes=[{"kind": "catmull_rom", "count": 1, "control_points": 3}]),
         "strokes[0].control_points"),
        (_minimal(strokes=[{"kind": "line", "count": 1, "width_px": 0}]), "strokes[0].width_px"),
        (_minimal(strokes=[{"kind": "line", "count": 1, "grey": 1.5}]), "strokes[0].grey"),
        (_minimal(strokes=[{"kind": "line", "count": 1, "learn_width": "yes"}]),
         "strokes[0].learn_width"),
        (_minimal(strokes=[{"kind": "line", "count": 1, "color": [1, 0, 0]}]), "strokes[0].color"),
        (_minimal(channels=3, strokes=[{"kind": "line", "count": 1, "color": [1, 0, 2]}]),
         "strokes[0].color[2]"),
        (_minimal(strokes=[{"kind": "line", "count": 1, "learn_color": True}]),
         "strokes[0].learn_color"),
        (_minimal(strokes=[{"kind": "line", "count": 1, "parametrisation": "tanh"}]),
         "strokes[0].parametrisation"),
        (_minimal(loss={"type": "blurmse", "sigma": -1}), "loss.sigma"),
        (_minimal(loss={"type": "blurmse", "sigmaa": 1}), "loss.sigmaa"),
        (_minimal(loss={"type": "nope"}), "loss.type"),
        (_minimal(loss={"sigma": 1}), "loss.type"),
        (_minimal(loss={"type": ["mse"]}), "loss.type"),
        (_minimal(resolution={"height": 4}), "resolution.height"),
        (_minimal(resolution={"heigth": 100}), "resolution.heigth"),
        (_minimal(resolution={}), "resolution"),
        (_minimal(iterations=-1), "iterations"),
        (_minimal(iterations=2.5), "iterations"),
        (_minimal(lr=0), "lr"),
        (_minimal(lr="fast"), "lr"),
        (_minimal(init="random"), "init"),
        (_minimal(composition="multiply"), "composition"),
        (_minimal(channels=2), "channels"),
        (_minimal(channels=1.0), "channels"),
        (_minimal(seed=-3), "seed"),
        (_minimal(reinit="sometimes"), "reinit"),
        (_minimal(coarse_to_fine={"scale": 2}), "coarse_to_fine.scale"),
        (_minimal(coarse_to_fine={"steps": 2}), "coarse_to_fine.steps"),
        (_minimal(coarse_to_fine="yes"), "coarse_to_fine"),
        (_minimal(allow_random_weights="no"), "allow_random_weights"),
        (_minimal(tau=0), "tau"),
        (_minimal(lr=float("nan")), "lr"),
        (_minimal(max_input_megapixels=float("inf")), "max_input_megapixels"),
        (_minimal(strokes=[{"kind": "line", "count": 1, "max_width_px": float("inf")}]),
         "strokes[0].max_width_px"),
    ],
)
def test_validation_errors_name_the_key(raw, key):
    with pytest.raises(ConfigError) as e:
        pipeline_from_dict(raw, source="p.yaml")
    assert e.value.key == key
    assert str(e.value).startswith(f"p.yaml: {key}: ")


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("strokes:\n  - kind: line\n    count: 0\n")
    with pytest.raises(ConfigError) as e:
        load_pipeline(bad)
    assert str(bad) in str(e.value) and "strokes[0].count" in str(e.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("strokes: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(broken)
    listy = tmp_path / "listy.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_pipeline(listy)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ConfigError, match="cannot read"):
        load_pipeline(binary)


def test_override_merges_into_a_shorthand_loss(tmp_path):
    f = tmp_path / "short.yaml"
    f.write_text("strokes: [{kind: line, count: 2}]\nloss: blurmse\n")
    p = load_pipeline(f, overrides={"loss": {"sigma": 2.5}})
    assert p.loss == {"type": "blurmse", "sigma": 2.5, "blur_target": True}


def test_overrides_merge_and_are_validated():
    p = load_pipeline("tiny", overrides={"iterations": 5, "loss": {"sigma": 2.5}})
    assert p.iterations == 5
    assert p.loss == {"type": "blurmse", "sigma": 2.5, "blur_target": True}
    assert p.strokes == load_pipeline("tiny").strokes
    w = load_pipeline("tiny", overrides={"resolution": {"width": 100}})
    assert (w.height, w.width) == (None, 100)  # replaced whole: height follows the aspect
    # a new loss type starts from that loss's defaults, not the old loss's parameters
    q = load_pipeline("tiny", overrides={"loss": {"type": "ssmse", "octaves": 3}})
    assert q.loss == {"type": "ssmse", "octaves": 3, "intervals": 2, "sigma": 1.6,
                      "pyramid": False}
    assert load_pipeline("tiny", overrides={"loss": "mse"}).loss == {"type": "mse"}
    r = load_pipeline("tiny", overrides={"strokes": [{"kind": "point", "count": 7}]})
    assert [(s.kind, s.count) for s in r.strokes] == [("point", 7)]
    with pytest.raises(ConfigError) as e:
        load_pipeline("tiny", overrides={"strokes": [{"kind": "point", "count": -7}]})
    assert e.value.key == "strokes[0].count" and "overrides" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_pipeline("tiny", overrides={"speed": 3})
    assert e.value.key == "speed"


def test_search_dirs_env_and_paths(tmp_path, monkeypatch):
    d1, d2 = tmp_path / "one", tmp_path / "two"
    d1.mkdir()
    d2.mkdir()
    (d1 / "mine.yaml").write_text(yaml.safe_dump(_minimal(iterations=7)))
    (d2 / "theirs.yaml").write_text(yaml.safe_dump(_minimal(iterations=8)))
    (d2 / "tiny.yaml").write_text(yaml.safe_dump(_minimal(iterations=9)))  # shadows shipped
    assert load_pipeline("mine", search_dirs=[d1]).iterations == 7
    with pytest.raises(ConfigError, match="unknown pipeline 'mine'"):
        load_pipeline("mine")
    monkeypatch.setenv("PLOTTERD_PIPELINES", f"{d1}{__import__('os').pathsep}{d2}")
    assert load_pipeline("theirs").iterations == 8
    assert load_pipeline("tiny").iterations == 9
    assert {"mine", "theirs", "lines-blurmse"} <= set(pipeline_names())
    by_path = load_pipeline(d1 / "mine.yaml")
    assert by_path.name == "mine" and by_path.iterations == 7
    with pytest.raises(ConfigError, match="no such pipeline file"):
        load_pipeline(tmp_path / "absent.yaml")


def test_pipelines_dir_is_the_repos():
    assert PIPELINES_DIR == Path(__file__).resolve().parents[2] / "pipelines"


def test_the_documented_example_is_valid():
    text = (PIPELINES_DIR.parent / "docs" / "pipelines.md").read_text()
    example = text.split("## Example", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    p = pipeline_from_dict(yaml.safe_load(example))
    assert p.name == "colour-curves" and p.channels == 3 and len(p.strokes) == 2
    assert p.strokes[0].parametrisation == "sigmoid" and p.coarse_to_fine.fraction == 0.3
