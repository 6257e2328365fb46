"""`plotterd draw` end to end, through the installed console script."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from plotterd.draw.strokes import Strokes

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
PLOTTERD = Path(sys.executable).parent / "plotterd"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = [str(PLOTTERD)] if PLOTTERD.exists() else [sys.executable, "-m", "plotterd.cli"]
    return subprocess.run(
        [*exe, "draw", *args], cwd=cwd, capture_output=True, text=True, timeout=240,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(cwd)},
    )


def test_draw_writes_outputs(tmp_path):
    out = tmp_path / "out"
    r = _run(str(DATA / "horse_small.png"), "-p", "tiny", "-o", str(out), "--iterations", "3",
             "--seed", "5", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("strokes.json", "drawing.svg", "preview.png", "loss.csv", "loss.png"):
        assert (out / name).is_file()
        assert str(out / name) in r.stdout
    s = Strokes.load(out / "strokes.json")
    assert len(s) == 60 and s.metadata["seed"] == 5 and s.metadata["iterations"] == 3
    with (out / "loss.csv").open() as f:
        assert len(list(csv.reader(f))) == 1 + 3
    assert "3/3" in r.stderr  # the progress bar reached the end


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """plotterd.cli.main in this process (the console script's exact code path)."""
    from plotterd.cli import main

    monkeypatch.setattr(sys, "argv", ["plotterd", "draw", *args])
    with pytest.raises(SystemExit) as e:
        main()
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_draw_default_outdir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = _main(
        monkeypatch, capsys, str(DATA / "camera_small.png"), "-p", "tiny", "--iterations", "1"
    )
    assert code == 0, err
    assert (tmp_path / "camera_small-drawing" / "strokes.json").is_file()


def test_missing_input_via_console_script(tmp_path):
    r = _run(str(tmp_path / "missing.png"), "-p", "tiny", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"plotterd: error: {tmp_path / 'missing.png'}: no such file"


def _zero(d: Path) -> Path:
    (d / "zero.jpg").write_bytes(b"")
    return d / "zero.jpg"


def _text(d: Path) -> Path:
    (d / "text.png").write_text("not a picture")
    return d / "text.png"


def _truncated(d: Path) -> Path:
    data = (DATA / "coffee_small.png").read_bytes()
    (d / "cut.png").write_bytes(data[: len(data) // 3])
    return d / "cut.png"


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: d, "directory"),
        (_zero, "empty"),
        (_text, "not an image"),
        (_truncated, "corrupt"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, make, words):
    path = make(tmp_path)
    code, out, err = _main(monkeypatch, capsys, str(path), "-p", "tiny", "-o", str(tmp_path / "o"))
    assert code == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and words in lines[0], err
    assert not (tmp_path / "o").exists()


def test_bad_pipeline_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    code, out, err = _main(monkeypatch, capsys, str(DATA / "camera_small.png"), "-p", "nosuch")
    assert code == 2
    assert "nosuch" in err and "tiny" in err and len(err.strip().splitlines()) == 1
