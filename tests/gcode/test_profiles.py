"""Firmware profiles: bundled dialects, search path, and bad profiles refused by key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from plotterd.errors import ConfigError
from plotterd.gcode import list_profiles, load_profile, parse_profile
from plotterd.gcode.profile import bundled_dir


def test_bundled_profiles_and_dialects() -> None:
    names = {p.name for p in list_profiles()}
    assert {"grbl-servo", "grbl-z", "marlin-servo", "klipper"} <= names
    g = load_profile("grbl-servo")
    assert g.firmware == "grbl"
    assert g.pen_down_lines() == ["M3 S30", "G4 P0.15"]  # GRBL dwell in seconds
    assert g.pen_up_lines() == ["M5", "G4 P0.15"]
    assert g.max_line_length == 80
    z = load_profile("grbl-z")
    assert z.pen_down_lines() == ["G1 Z0 F1000", "G4 P0.05"]
    assert z.pen_up_lines() == ["G0 Z3"]  # no up dwell configured
    assert z.pen.down_move_s > 0  # the Z move takes time in the estimate
    m = load_profile("marlin-servo")
    assert m.pen_down_lines() == ["M400", "M280 P0 S30", "G4 P150"]  # Marlin dwell in ms
    assert m.pen_up_lines() == ["M400", "M280 P0 S90", "G4 P150"]
    k = load_profile("klipper")
    assert k.pen_down_lines() == ["SET_SERVO SERVO=pen ANGLE=30", "G4 P120"]
    assert k.setup_lines() == ["G90"]
    assert g.setup_lines() == ["G21", "G90"]


def _base() -> dict:
    return yaml.safe_load((bundled_dir() / "grbl-servo.yaml").read_text())


@pytest.mark.parametrize(
    "edit,key",
    [
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d["pen"].update(donw_dwell_s=0.1), "pen.donw_dwell_s"),
        (lambda d: d["feeds"].update(draw=0), "feeds.draw"),
        (lambda d: d["feeds"].update(travel=-100), "feeds.travel"),
        (lambda d: d["feeds"].pop("draw"), "feeds.draw"),
        (lambda d: d.update(firmware="smoothie"), "firmware"),
        (lambda d: d.pop("firmware"), "firmware"),
        (lambda d: d["pen"].update(dialect="m280"), "pen.dialect"),
        (lambda d: d["pen"].update(down_dwell_s=-1), "pen.down_dwell_s"),
        (lambda d: d["pen"].update(up="sideways"), "pen.up"),
        (lambda d: d["bounds"].update(x_max=-5), "bounds.x_max"),
        (lambda d: d["bounds"].update(y_min="zero"), "bounds.y_min"),
        (lambda d: d["paper"].update(origin="middle"), "paper.origin"),
        (lambda d: d["paper"].update(offset=[1, 2, 3]), "paper.offset"),
        (lambda d: d["gcode"].update(decimals=9), "gcode.decimals"),
        (lambda d: d["motion"].update(acceleration=0), "motion.acceleration"),
        (lambda d: d.update(units="inch"), "units"),
        (lambda d: d.update(absolute=False), "absolute"),
        (lambda d: d.update(end=["G0 X0 ; home"]), "end[0]"),
        (lambda d: d.update(start=["$H?"]), "start"),
        (lambda d: d.update(end=["G0 X0 Y0 " + "Z0 " * 30]), "end"),
        (lambda d: d.update(start=["G91"]), "start"),
        (lambda d: d.update(start=["G92 X0 Y0"]), "start"),
        (lambda d: d.update(end=["G53 G0 X0"]), "end"),
        (lambda d: d.update(start=["G29"]), "start"),  # not followed at plot time
        (lambda d: d.update(end=["G28 X0"]), "end"),
        (lambda d: d.update(end=["G21 G20"]), "end"),
        (lambda d: d.update(pen_change=["G91 G0 Z5"]), "pen_change"),
    ],
)
def test_bad_profile_names_the_key(edit, key: str) -> None:
    d = _base()
    edit(d)
    with pytest.raises(ConfigError) as e:
        parse_profile(d, "grbl-servo", "test.yaml")
    assert e.value.key == key, str(e.value)
    assert str(e.value).startswith("test.yaml: ")


def test_commands_dialect_refuses_xy_moves_and_identical_commands() -> None:
    d = _base()
    d["pen"] = {"dialect": "commands", "up": ["G0 X10 Z5"], "down": ["M3 S10"]}
    with pytest.raises(ConfigError) as e:
        parse_profile(d, "x")
    assert e.value.key == "pen.up"
    d["pen"] = {"dialect": "commands", "up": ["M5"], "down": ["G1X10"]}
    with pytest.raises(ConfigError) as e:
        parse_profile(d, "x")
    assert e.value.key == "pen.down"
    d["pen"] = {"dialect": "commands", "up": ["PEN_G20 X=1"], "down": ["PEN_G0 X=1"]}
    assert parse_profile(d, "x").pen_up_lines()[0] == "PEN_G20 X=1"  # macro names, not words
    d["pen"] = {"dialect": "commands", "up": ["PEN"], "down": ["PEN"]}
    with pytest.raises(ConfigError) as e:
        parse_profile(d, "x")
    assert e.value.key == "pen.up"


def test_klipper_macros_profile() -> None:
    d = yaml.safe_load((bundled_dir() / "klipper.yaml").read_text())
    d["pen"] = {"dialect": "commands", "up": ["PEN_UP"], "down": ["PEN_DOWN"],
                "up_dwell_s": 0, "down_dwell_s": 0.2}
    p = parse_profile(d, "klipper-macros")
    assert p.pen_up_lines() == ["PEN_UP"]
    assert p.pen_down_lines() == ["PEN_DOWN", "G4 P200"]


def test_user_directory_env_var_and_precedence(tmp_path: Path, monkeypatch) -> None:
    user = tmp_path / "profiles"
    user.mkdir()
    d = _base()
    d["feeds"]["draw"] = 1234
    (user / "grbl-servo.yaml").write_text(yaml.safe_dump(d))  # shadows the bundled one
    d["feeds"]["draw"] = 999
    (user / "my-plotter.yaml").write_text(yaml.safe_dump(d))
    assert load_profile("grbl-servo", [user]).draw_feed == 1234
    assert load_profile("grbl-servo").draw_feed == 3000
    monkeypatch.setenv("PLOTTERD_PROFILES", str(user))
    assert load_profile("my-plotter").draw_feed == 999
    assert load_profile(user / "my-plotter.yaml").draw_feed == 999
    (user / "broken.yaml").write_text("firmware: grbl\nfeeds: [1, 2\n")
    errors: list[ConfigError] = []
    names = [p.name for p in list_profiles(errors=errors)]
    assert "my-plotter" in names and "broken" not in names
    assert len(errors) == 1 and "broken.yaml" in str(errors[0])
    with pytest.raises(ConfigError):
        list_profiles()
    with pytest.raises(ConfigError) as e:
        load_profile("nope")
    assert e.value.key == "profile" and "my-plotter" in str(e.value)


def test_name_must_match_file(tmp_path: Path) -> None:
    d = _base()
    d["name"] = "other"
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError) as e:
        load_profile(f)
    assert e.value.key == "name"


def test_vpype_gcode_toml_export_places_points_like_the_writer() -> None:
    import numpy as np

    from plotterd.gcode.profile import to_vpype_gcode_toml
    from plotterd.gcode.writer import to_machine

    for name in ("grbl-servo", "grbl-z", "marlin-servo"):
        p = load_profile(name)
        tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
        sec = tomllib.loads(to_vpype_gcode_toml(p, (210.0, 297.0)))["gwrite"][name]
        assert sec["document_start"].splitlines()[-len(p.pen_up_lines()):] == p.pen_up_lines()
        assert sec["line_end"].splitlines() == p.pen_up_lines()
        first = sec["segment_first"].format(x=1.5, y=2.25).splitlines()
        assert first[0].startswith("G0 X1.500 Y2.250") and first[1:] == p.pen_down_lines()
        # gwrite's transform: scale about the origin, then translate (mm)
        uv = np.array([[10.0, 20.0], [200.0, 5.0]])
        got = uv * [sec["scale_x"], sec["scale_y"]] + [sec["offset_x"], sec["offset_y"]]
        np.testing.assert_allclose(got, to_machine(uv, (210.0, 297.0), p))
