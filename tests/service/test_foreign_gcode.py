"""G-code written by other tools, dropped into the daemon's inbox: parsed against the
daemon's profile, bounds-checked before a byte is sent, plotted stroke by stroke."""

from __future__ import annotations

from pathlib import Path

from .daemon_proc import drop

SAMPLES = Path(__file__).resolve().parents[1] / "gcode" / "data"




def test_foreign_gcode_in_the_inbox_is_checked_then_plotted(daemon, tmp_path):
    good = SAMPLES / "vpype_gcode_servo_abs.gcode"
    drop(good, daemon.inbox, "from-vpype.gcode")
    text = good.read_text().splitlines()
    moves = [i for i, line in enumerate(text) if line.startswith("G01 X")]
    text[moves[len(moves) // 2]] = "G01 X900.0000 Y50.0000"  # far outside the bed
    (tmp_path / "outside.gcode").write_text("\n".join(text) + "\n")
    drop(tmp_path / "outside.gcode", daemon.inbox)
    (tmp_path / "offsets.gcode").write_text("G21\nG90\nG92 X0 Y0\nG1 X10 Y10 F1000\n")
    drop(tmp_path / "offsets.gcode", daemon.inbox)

    jobs = {j["name"]: j for j in daemon.wait_states(3, timeout=120)}
    plotted = jobs["from-vpype.gcode"]
    assert plotted["state"] == "done", plotted["error"]
    detail = daemon.job(plotted["id"])
    assert detail["plot"]["last_completed_stroke"] == 2  # three pen-down runs
    assert "strokes" not in plotted["artefacts"] and "gcode" in plotted["artefacts"]
    assert jobs["outside.gcode"]["state"] == "failed"
    assert "beyond x_max" in jobs["outside.gcode"]["error"]
    assert jobs["offsets.gcode"]["state"] == "failed"
    assert "G92" in jobs["offsets.gcode"]["error"]
