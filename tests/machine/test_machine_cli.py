"""`plotterd machine ...` against a simulated board on a pseudo-terminal (a serial device as
far as the CLI knows), and `plotterd plot --help`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from plotterd.cli import cli
from plotterd.machine.sim.pty_server import PtyServer


def _run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _main(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """Through plotterd.cli.main's error handling (a PlotterdError -> one line, status 2)."""
    from plotterd.cli import main

    monkeypatch.setattr("sys.argv", ["plotterd", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, capsys.readouterr().err


@pytest.mark.slow  # a pty has no DTR: each command waits 2.5 s for a banner, then Ctrl-X
@pytest.mark.timeout(60)
def test_machine_commands_on_a_pty_board():
    with PtyServer("sim://grbl?speed=instant&bounds=0,0,300,300") as server:
        sim = server.sim
        common = ["--port", server.path, "--profile", "grbl-servo"]
        res = _run("machine", "pen", "down", *common)
        assert res.exit_code == 0 and "pen down" in res.output and sim.pen_down
        res = _run("machine", "pen", "up", *common)
        assert res.exit_code == 0 and not sim.pen_down
        res = _run("machine", "jog", "20", "15", "--from-origin", *common)
        assert res.exit_code == 0, res.output
        assert "moved to X20 Y15" in res.output and sim.pos[:2] == [20.0, 15.0]
        res = _run("machine", "send", "$$", *common)
        assert "$22=0" in res.output and res.output.rstrip().endswith("ok")
        res = _run("machine", "origin", *common)
        assert res.exit_code == 0 and "position X0 Y0" in res.output
        res = _run("machine", "motors-off", *common)
        assert res.exit_code == 0 and sim.state_name() == "Sleep"


@pytest.mark.timeout(60)
def test_machine_refusals_are_one_line_errors(capsys, monkeypatch):
    with PtyServer("sim://grbl?speed=instant") as server:
        common = ["--port", server.path, "--profile", "grbl-servo"]
        for args, words in ((["jog", "5", "5"], "position is unknown"),
                            (["jog", "500", "5", "--from-origin"], "outside the machine's"),
                            (["send", "G92 X0 Y0"], "G92"), (["home"], "$22=0")):
            code, err = _main(["machine", *args, *common], capsys, monkeypatch)
            assert code == 2 and words in err and err.count("\n") == 1, err
        assert server.sim.pos[:2] == [0.0, 0.0] and not server.sim.out_of_bounds


def test_machine_ports_and_plot_help():
    res = _run("machine", "ports")
    assert res.exit_code == 0 and res.output.strip()
    res = _run("plot", "--help")
    assert "[grbl|marlin|klipper]" in res.output and "--origin-here" in res.output


def test_plot_streams_foreign_gcode_once_told_the_machine(capsys, monkeypatch):
    """A vpype-gcode file is refused without a profile (nothing to bounds-check it
    against) and streams stroke by stroke with one."""
    from pathlib import Path

    sample = Path(__file__).resolve().parents[1] / "gcode" / "data" / "vpype_gcode_servo_abs.gcode"
    port = "sim://grbl?speed=instant"
    code, err = _main(["plot", str(sample), "--port", port], capsys, monkeypatch)
    assert code == 2 and "--profile" in err
    res = _run("plot", str(sample), "--port", port, "--profile", "grbl-servo")
    assert res.exit_code == 0, res.output
    assert "done:" in res.output and "last completed stroke 2" in res.output
