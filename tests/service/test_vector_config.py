"""Daemon page and pen settings (config ``vector:``), per inbox folder settings
(``folders:``) and stroke-sequence sidecar options in the daemon's vector stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plotterd.draw.strokes import Canvas, StrokeGroup, Strokes
from plotterd.errors import ConfigError
from plotterd.gcode.program import Program
from plotterd.service import stages
from plotterd.service.config import check_folder_pipelines, parse_config
from plotterd.service.intake import Inbox
from plotterd.service.store import JobStore
from plotterd.service.workers import OptimiserSlot

from .helpers import DATA

PAGE = {"paper": "a5", "orientation": "auto", "margin_mm": 10}
PENS = [{"color": "red", "width_mm": 0.5, "name": "Red fineliner"},
        {"color": "blue", "width_mm": 0.3}]


def _two_colour_strokes(path: Path) -> Path:
    # canvas coordinates: -1..1 across the shorter side
    pts = np.array([[[-0.8, -0.8], [0.8, -0.8]], [[-0.8, 0.0], [0.8, 0.8]],
                    [[-0.6, 0.6], [0.6, -0.6]]], float)
    col = StrokeGroup("line", pts, [1.0, 1.0, 1.0],
                      color=[[0.1, 0.1, 0.8], [0.9, 0.1, 0.1], [0.1, 0.1, 0.8]])
    Strokes(Canvas(101, 101), [col]).save(path)
    return path


def _spec(**extra):
    return {"profile": "grbl-servo", "page": PAGE, **extra}


def test_vector_section_is_parsed_over_the_defaults(tmp_path):
    cfg = parse_config({"state_dir": str(tmp_path), "vector": {
        "pens": PENS, "tolerance_mm": 0.1, "two_opt": True, "per_pen": True}})
    assert cfg.vector.pens == PENS and cfg.vector.tolerance_mm == 0.1
    assert cfg.vector.two_opt and cfg.vector.per_pen
    assert cfg.vector.min_length_mm == 0.2 and cfg.vector.merge_tolerance_mm == 0.05
    assert parse_config({"state_dir": str(tmp_path)}).vector.pens == [
        {"color": "black", "width_mm": 0.3}]


@pytest.mark.parametrize("vector, key", [
    ({"pens": [{"color": "red"}, {"color": "blue", "width_mm": 0}]}, "vector.pens[1].width_mm"),
    ({"pens": [{"color": "nocolour"}]}, "vector.pens[0].color"),
    ({"pens": [{"color": "red", "nib": 1}]}, "vector.pens[0].nib"),
    ({"pens": []}, "vector.pens"),
    ({"pens": ["red"]}, "vector.pens[0]"),
    ({"tolerance_mm": 0}, "vector.tolerance_mm"),
    ({"min_length_mm": -1}, "vector.min_length_mm"),
    ({"merge_tolerance_mm": "far"}, "vector.merge_tolerance_mm"),
    ({"two_opt": "yes"}, "vector.two_opt"),
    ({"per_pen": 1}, "vector.per_pen"),
    ({"perpen": True}, "vector.perpen"),
])
def test_bad_vector_settings_name_their_key(tmp_path, vector, key):
    with pytest.raises(ConfigError) as e:
        parse_config({"state_dir": str(tmp_path), "vector": vector})
    assert e.value.key == key


def test_make_gcode_uses_the_pens_and_writes_one_file_per_pen(tmp_path):
    src = _two_colour_strokes(tmp_path / "strokes.json")
    vector = parse_config({"state_dir": str(tmp_path), "vector": {
        "pens": PENS, "per_pen": True, "two_opt": True}}).vector.to_dict()
    job = tmp_path / "job"
    job.mkdir()
    paths, stats = stages.make_gcode(str(src), _spec(vector=vector), job)
    layers = {la["layer"]: la for la in stats["layers"]}
    assert layers[1]["color"] == "red" and layers[1]["lines"] == 1
    assert layers[2]["color"] == "blue" and layers[2]["lines"] == 2
    assert layers[1]["width_mm"] == pytest.approx(0.5)
    header = Program.load(paths["gcode"]).header  # the pen-change prompt's names
    assert [p["name"] for p in header["pens"]] == ["Red fineliner", "pen 2 blue"]
    assert paths["pen1"].name == "plot-pen1-red.gcode"
    assert paths["pen2"].name == "plot-pen2-blue.gcode"
    assert Program.load(paths["pen1"]).stroke_count == 1
    assert Program.load(paths["pen2"]).stroke_count == 2
    # without the section: one black pen, no per-pen files
    plain = tmp_path / "plain"
    plain.mkdir()
    paths, stats = stages.make_gcode(str(src), _spec(), plain)
    assert [la["color"] for la in stats["layers"]] == ["black"] and "pen1" not in paths


def test_tolerance_and_min_length_reach_the_vector_stage(tmp_path):
    src = _two_colour_strokes(tmp_path / "strokes.json")
    short = {"pens": [{"color": "black"}], "min_length_mm": 500.0}
    _, stats = stages.make_gcode(str(src), _spec(vector=short), tmp_path)
    assert stats["dropped_short"] == 3


def test_paper_strokes_keep_their_own_nib(tmp_path):
    src = _two_colour_strokes(tmp_path / "strokes.json")
    s = Strokes.load(src)
    s.metadata["pen"] = {"nib_mm": 0.7}
    s.save(src)
    _, stats = stages.make_gcode(str(src), _spec(vector={"pens": PENS}), tmp_path)
    assert [la["width_mm"] for la in stats["layers"]] == pytest.approx([0.7, 0.7])


# ---- sequences ----

def _gcode_of(tmp_path, name, options):
    job = tmp_path / name
    job.mkdir()
    paths, stats = stages.make_gcode(str(DATA / "quickdraw_cats.ndjson"),
                                     _spec(overrides=options), job)
    return paths["gcode"].read_text().split("\n", 30)[-1], stats


def test_sidecar_options_pick_the_drawing(tmp_path):
    first, _ = _gcode_of(tmp_path, "a", {})
    third, _ = _gcode_of(tmp_path, "b", {"index": 2})
    grid, stats = _gcode_of(tmp_path, "c", {"grid": 4})
    assert first != third
    one = _gcode_of(tmp_path, "d", {"index": 0})[1]
    assert stats["strokes"] > 3 * one["strokes"]


@pytest.mark.parametrize("options, key", [
    ({"index": "x"}, "index"), ({"grid": 0}, "grid"), ({"split": "dev"}, "split"),
    ({"iterations": 5}, "iterations"),
])
def test_a_bad_sequence_option_fails_with_its_key(tmp_path, options, key):
    with pytest.raises(ConfigError) as e:
        _gcode_of(tmp_path, "x", options)
    assert e.value.key == key and "job options" in str(e.value)


# ---- folders ----

def _folders_cfg(tmp_path, folders, **extra):
    return parse_config({"state_dir": str(tmp_path / "state"), "pipeline": "tiny",
                         "folders": folders, **extra})


def test_folders_parse_set_keys_and_vector(tmp_path):
    cfg = _folders_cfg(tmp_path, {
        "fine": {"pipeline": "tiny", "set": {"iterations": 5, "strokes[0].count": 10,
                                             "loss.sigma": 2}},
        "red": {"vector": {"pens": [{"color": "red"}], "per_pen": True}},
    }, vector={"tolerance_mm": 0.1})
    fine = cfg.folders["fine"]
    assert fine.overrides == {"iterations": 5, "loss": {"sigma": 2},
                              "strokes": [{"kind": "line", "count": 10, "width_px": 1.0}]}
    red = cfg.vector_for("red")
    assert red.pens == [{"color": "red"}] and red.per_pen and red.tolerance_mm == 0.1
    assert cfg.vector_for("fine") is cfg.vector and cfg.vector_for(None) is cfg.vector
    assert cfg.folder_of(str(cfg.inbox / "red" / "a.png")) == "red"
    assert cfg.folder_of(str(cfg.inbox / "a.png")) is None


@pytest.mark.parametrize("folders, key", [
    ({"done": {"pipeline": "tiny"}}, "folders.done"),
    ({"x": {"pipelin": "tiny"}}, "folders.x.pipelin"),
    ({"x": {"set": {"loss..sigma": 1}}}, "folders.x.set.loss..sigma"),
    ({"x": {"set": {"strokes[3].count": 1}}}, "folders.x.set.strokes[3].count"),
    ({"x": {"set": ["iterations=3"]}}, "folders.x.set"),
    ({"x": {"vector": {"pens": [{"color": "red", "width_mm": -1}]}}},
     "folders.x.vector.pens[0].width_mm"),
])
def test_bad_folder_settings_are_refused_at_parse(tmp_path, folders, key):
    with pytest.raises(ConfigError) as e:
        _folders_cfg(tmp_path, folders)
    assert e.value.key == key


def test_a_folder_and_the_old_mapping_cannot_both_name_a_pipeline(tmp_path):
    with pytest.raises(ConfigError) as e:
        _folders_cfg(tmp_path, {"x": {"pipeline": "tiny"}}, pipelines={"x": "paper"})
    assert e.value.key == "folders.x.pipeline"


@pytest.mark.parametrize("folders, key", [
    ({"x": {"set": {"loss.sigma": -1}}}, "folders.x.set.loss.sigma"),
    ({"x": {"set": {"iterations": "many"}}}, "folders.x.set.iterations"),
    ({"x": {"set": {"lossy": 1}}}, "folders.x.set.lossy"),
    ({"x": {"pipeline": "no-such-pipeline"}}, "folders.x.pipeline"),
])
def test_bad_folder_pipeline_keys_fail_the_start(tmp_path, folders, key):
    cfg = _folders_cfg(tmp_path, folders)
    with pytest.raises(ConfigError) as e:
        Inbox(cfg, JobStore(cfg.db_path))  # as the daemon does at start
    assert e.value.key == key


def test_folder_jobs_get_its_pipeline_keys_and_vector(tmp_path):
    cfg = _folders_cfg(tmp_path, {
        "fine": {"pipeline": "lines-blurmse", "set": {"iterations": 5, "seed": 3},
                 "vector": {"pens": [{"color": "blue"}], "per_pen": True}},
    }, pipelines={"old": "points-ssmse"}, intake={"stable_s": 0.0})
    store = JobStore(cfg.db_path)
    inbox = Inbox(cfg, store)
    for sub, name in (("fine", "a.png"), ("fine", "b.png"), ("old", "c.png"), (None, "d.png")):
        folder = cfg.inbox / sub if sub else cfg.inbox
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes((DATA / "camera_small.png").read_bytes())
    (cfg.inbox / "fine" / "b.yaml").write_text("seed: 7\n")
    inbox.scan()
    inbox.scan()  # stable: two checks see the same file
    jobs = {j["name"]: j for j in store.list()}
    assert set(jobs) == {"a.png", "b.png", "c.png", "d.png"}
    assert jobs["a.png"]["pipeline"] == "lines-blurmse"
    assert jobs["a.png"]["options"] == {"iterations": 5, "seed": 3}
    assert jobs["b.png"]["options"] == {"iterations": 5, "seed": 7}  # the sidecar wins
    assert jobs["c.png"]["pipeline"] == "points-ssmse" and jobs["c.png"]["options"] == {}
    assert jobs["d.png"]["pipeline"] == "tiny"

    class D:  # what OptimiserSlot.spec reads of the daemon
        pass

    d = D()
    d.cfg = cfg
    worker = OptimiserSlot.__new__(OptimiserSlot)
    worker.d = d
    assert worker.spec(jobs["a.png"])["vector"]["pens"] == [{"color": "blue"}]
    assert worker.spec(jobs["a.png"])["vector"]["per_pen"] is True
    assert worker.spec(jobs["d.png"])["vector"] == cfg.vector.to_dict()
    json.dumps(worker.spec(jobs["a.png"]))  # job.json


def test_the_sample_config_and_a_list_item_error_pass_the_start_check(tmp_path):
    from plotterd.service.config import load_config

    sample = load_config(Path(__file__).resolve().parents[2] / "samples" / "plotterd.yaml")
    assert sample.folders["fine"].vector.per_pen and sample.vector.pens[0]["name"]
    check_folder_pipelines(sample)
    # the paper pipeline makes its own strokes: the error names the key as written
    cfg = _folders_cfg(tmp_path, {"p": {"pipeline": "paper", "set": {"strokes[0].count": 9}}})
    with pytest.raises(ConfigError) as e:
        check_folder_pipelines(cfg)
    assert e.value.key == "folders.p.set.strokes[0].count"
