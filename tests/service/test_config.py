from __future__ import annotations

from pathlib import Path

import pytest

from plotterd.errors import ConfigError
from plotterd.service.config import load_config, parse_config


def test_defaults_without_a_file(monkeypatch, tmp_path):
    monkeypatch.delenv("PLOTTERD_TOKEN", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    cfg = load_config(None)
    assert cfg.dry_run and cfg.auto_resume
    assert cfg.inbox == cfg.state_dir / "inbox"
    assert "plotterd" in str(cfg.state_dir)
    assert cfg.api.bind == "127.0.0.1" and cfg.api.token is None
    assert cfg.pipeline == "paper"  # the default pipeline since dca66d3


def test_full_file_relative_paths(tmp_path):
    f = tmp_path / "conf" / "plotterd.yaml"
    f.parent.mkdir()
    f.write_text(
        "state_dir: state\ninbox: /srv/inbox\npipelines: {points: points-ssmse}\n"
        "plotter: {port: /dev/ttyUSB0, profile: grbl-z, baudrate: 250000}\n"
        "camera: {source: 0, crop: [0.1, 0.1, 0.8, 0.8], clahe: null, interval_s: 60}\n"
        "api: {bind: 0.0.0.0, port: 9000, token: secret-token}\n"
    )
    cfg = load_config(f)
    assert cfg.state_dir == f.parent / "state"
    assert cfg.inbox == Path("/srv/inbox")
    assert cfg.pipelines == {"points": "points-ssmse"}
    assert not cfg.dry_run and not cfg.auto_resume
    assert cfg.camera.clahe is None and cfg.camera.source == 0
    assert cfg.api.url == "http://127.0.0.1:9000"
    assert load_config(f, dry_run=True).dry_run
    assert parse_config({"state_dir": "s", "camera": {"source": "1"}}).camera.source == 1


@pytest.mark.parametrize("data, key", [
    ({"inbx": "/x"}, "inbx"),
    ({"plotter": {"speed": 3}}, "plotter.speed"),
    ({"api": {"port": "http"}}, "api.port"),
    ({"api": {"port": 70000}}, "api.port"),
    ({"log_level": "loud"}, "log_level"),
    ({"intake": {"observer": "magic"}}, "intake.observer"),
    ({"intake": {"stable_s": -1}}, "intake.stable_s"),
    ({"camera": {"crop": [0.5, 0.5, 0.8, 0.1]}}, "camera.crop"),
    ({"camera": {"clahe": {"clip": 2}}}, "camera.clahe.clip"),
    ({"camera": {"source": True}}, "camera.source"),
    ({"plotter": {"sim_speed": "fast"}}, "plotter.sim_speed"),
    ({"plotter": {"paper": "sheets"}}, "plotter.paper"),
    ({"plotter": {"paper": "layout"}}, "plotter.paper"),  # not implemented: said so
    ({"plotter": {"paper": True}}, "plotter.paper"),
    ({"plotter": {"reconnect_s": 0}}, "plotter.reconnect_s"),
    ({"plotter": {"paper_trigger_file": ""}}, "plotter.paper_trigger_file"),
    ({"plotter": {"papr": "auto"}}, "plotter.papr"),
    ({"plotter": {"timeouts": {"homing": 0}}}, "plotter.timeouts.homing"),
    ({"plotter": {"timeouts": {"reconnect_attempts": 1.5}}},
     "plotter.timeouts.reconnect_attempts"),
    ({"plotter": {"timeouts": {"hominng": 5}}}, "plotter.timeouts.hominng"),
    ({"plotter": {"timeouts": [1]}}, "plotter.timeouts"),
    ({"plotter": {"machine": {"unlock_alarm": "yes"}}}, "plotter.machine.unlock_alarm"),
    ({"plotter": {"machine": {"unlock": True}}}, "plotter.machine.unlock"),
    ({"pipelines": {"done": "tiny"}}, "pipelines.done"),
    ({"folders": {"failed": {"pipeline": "tiny"}}}, "folders.failed"),
    ({"vector": {"pens": [{"color": "red", "width_mm": 0}]}}, "vector.pens[0].width_mm"),
    ({"optimiser": {"threads": 0}}, "optimiser.threads"),
    ({"optimiser": {"device": "gpu1"}}, "optimiser.device"),
    ({"page": {"orientation": "diagonal"}}, "page.orientation"),
    ([1, 2], "config"),
])
def test_bad_values_name_their_key(tmp_path, data, key):
    if isinstance(data, dict):
        data = {"state_dir": str(tmp_path), **data}
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert e.value.key == key
    assert key in str(e.value)


def test_token_required_off_loopback(tmp_path, monkeypatch):
    monkeypatch.delenv("PLOTTERD_TOKEN", raising=False)
    with pytest.raises(ConfigError) as e:
        parse_config({"state_dir": str(tmp_path), "api": {"bind": "0.0.0.0"}})
    assert e.value.key == "api.token"
    parse_config({"state_dir": str(tmp_path), "api": {"bind": "::1"}})  # loopback: fine
    monkeypatch.setenv("PLOTTERD_TOKEN", "from-the-environment")
    cfg = parse_config({"state_dir": str(tmp_path), "api": {"bind": "0.0.0.0"}})
    assert cfg.api.token == "from-the-environment"


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("api: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: config: not valid YAML"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("state_dir: s\n")
    assert load_config(empty).state_dir == tmp_path / "s"


def test_plotterd_run_reports_the_bad_key(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("api: {port: http}\n")
    plotterd = Path(sys.executable).with_name("plotterd")
    r = subprocess.run([str(plotterd), "run", "--config", str(bad)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == f"plotterd: error: {bad}: api.port: must be an integer"


@pytest.mark.parametrize("text, key", [
    ("api: {max_upload_mb: .inf}", "api.max_upload_mb"),
    ("intake: {stable_s: .nan}", "intake.stable_s"),
    ("camera: {crop: [0, 0, .nan, 1]}", "camera.crop[2]"),
    ("optimiser: {timeout_s: -.inf}", "optimiser.timeout_s"),
    ("plotter: {timeouts: {silence: .inf}}", "plotter.timeouts.silence"),
])
def test_nan_and_infinity_are_refused_naming_the_key(tmp_path, text, key):
    path = tmp_path / "plotterd.yaml"
    path.write_text(f"state_dir: {tmp_path}\n{text}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.key == key and "finite" in str(e.value)


def test_token_from_the_environment_has_the_same_minimum(tmp_path, monkeypatch):
    monkeypatch.setenv("PLOTTERD_TOKEN", "short")
    with pytest.raises(ConfigError) as e:
        parse_config({"state_dir": str(tmp_path), "api": {"bind": "0.0.0.0"}})
    assert e.value.key == "PLOTTERD_TOKEN" and "8 characters" in str(e.value)
    monkeypatch.setenv("PLOTTERD_TOKEN", "        x")  # blanks do not count
    with pytest.raises(ConfigError):
        parse_config({"state_dir": str(tmp_path)})
