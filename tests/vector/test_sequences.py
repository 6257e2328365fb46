"""Stroke sequences as input: QuickDraw simplified .ndjson and Sketch-RNN stroke-3 .npz
(real formats, tests/data/make_sequence_samples.py), through the vector stage, the G-code
CLI and the daemon."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from plotterd.errors import InputError
from plotterd.gcode import make_gcode
from plotterd.gcode.program import Program
from plotterd.vector import PageSpec
from plotterd.vector.sequences import (
    SequenceSource,
    read_quickdraw,
    read_sketchrnn,
    select,
    sequence_document,
    stroke3_to_lines,
)

DATA = Path(__file__).resolve().parents[1] / "data"
NDJSON = DATA / "quickdraw_cats.ndjson"
NPZ = DATA / "sketchrnn_cats.npz"


def test_quickdraw_lines_are_drawings_with_their_strokes():
    raw = [json.loads(line) for line in NDJSON.read_text().splitlines()]
    assert set(raw[0]) == {"word", "countrycode", "timestamp", "recognized", "key_id",
                           "drawing"}
    drawings = read_quickdraw(NDJSON)
    assert len(drawings) == 6 and all(len(d) == 7 for d in drawings)
    xs, ys = raw[2]["drawing"][1]
    assert drawings[2][1].tolist() == [[x, y] for x, y in zip(xs, ys, strict=True)]


def test_stroke3_is_the_same_drawing_as_quickdraw():
    # make_sequence_samples.py: test = drawings 4 and 5, train = 0..2
    assert len(read_sketchrnn(NPZ, "test")) == 2 and len(read_sketchrnn(NPZ, "train")) == 3
    for qd, rnn in zip(read_quickdraw(NDJSON)[4:], read_sketchrnn(NPZ, "test"), strict=True):
        assert [s.tolist() for s in qd] == [s.tolist() for s in rnn]
    # rows (dx, dy, pen_lifted): lifted ends a stroke after that point
    s3 = np.array([[5, 5, 0], [10, 0, 1], [0, 10, 0], [-10, 0, 1], [3, 3, 1]], np.int16)
    lines = stroke3_to_lines(s3)
    assert [ln.tolist() for ln in lines] == [[[5, 5], [15, 5]], [[15, 15], [5, 15]], [[8, 18]]]


def test_index_and_grid_select_and_lay_out():
    one = sequence_document(SequenceSource(NDJSON, index=3))
    assert len(one.layers[1]) == 7 and one.page_size is None
    grid = sequence_document(SequenceSource(NDJSON, index=1, grid=4))
    assert len(grid.layers[1]) == 4 * 7 and grid.page_size == (2.0, 2.0)
    # each drawing stays inside its own cell of the 2 x 2 grid
    lines = list(grid.layers[1])
    for k in range(4):
        pts = np.concatenate(lines[7 * k: 7 * k + 7])
        r, c = divmod(k, 2)
        assert (pts.real >= c).all() and (pts.real <= c + 1).all()
        assert (pts.imag >= r).all() and (pts.imag <= r + 1).all()
    assert len(select(SequenceSource(NDJSON, index=4, grid=10))) == 2  # up to the end
    with pytest.raises(InputError, match="no drawing 6 .*0..5"):
        select(SequenceSource(NDJSON, index=6))


def test_make_gcode_from_sequences_keeps_every_stroke():
    res = make_gcode(SequenceSource(NDJSON, index=0), profile="grbl-servo",
                     page=PageSpec(paper="a5"))
    assert res.stats["strokes_in"] == 7 and res.stats["dots"] == 1
    assert res.program.stroke_count == 7
    # a plain path takes the first drawing, like --index 0
    assert make_gcode(NPZ, profile="grbl-servo", page=PageSpec()).stats["strokes_in"] == 7


def _write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def test_bad_and_truncated_files_are_one_line_input_errors(tmp_path):
    text = NDJSON.read_text()
    cases = [
        (_write(tmp_path / "cut.ndjson", text[: len(text) - 40]), "line 6 is not JSON "
                                                                  r"\(truncated\?\)"),
        (_write(tmp_path / "nodraw.ndjson", '{"word": "cat"}\n'), "no 'drawing' key"),
        (_write(tmp_path / "ragged.ndjson", '{"drawing": [[[1, 2], [3]]]}\n'),
         "stroke 0 has 2 x and 1 y"),
        (_write(tmp_path / "empty.ndjson", "\n"), "no drawings"),
        (_write(tmp_path / "cut.npz", NPZ.read_bytes()[:900]), r"truncated\?"),
        (_write(tmp_path / "text.npz", "not a zip"), "not a readable .npz"),
    ]
    shape = tmp_path / "shape.npz"
    bad = np.empty(1, dtype=object)
    bad[0] = np.zeros((4, 2), np.int16)
    np.savez(shape, test=bad)
    cases.append((shape, r"test\[0\] is not an \(N, 3\) stroke-3 array"))
    for path, message in cases:
        with pytest.raises(InputError, match=message) as e:
            select(SequenceSource(path))
        assert "\n" not in str(e.value) and str(path) in str(e.value)
    with pytest.raises(InputError, match="no 'valid' array"):
        read_sketchrnn(_npz(tmp_path / "t.npz", test=np.zeros((3, 3), np.int16)), "valid")


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_a_pickle_that_is_not_an_array_is_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False,
                                                  "shape": (1,)})
    payload = b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + pickle.dumps([Evil()])
    evil = tmp_path / "evil.npz"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("test.npy", payload)
    with pytest.raises(InputError, match="not a numpy array part"):
        read_sketchrnn(evil)
    assert not marker.exists()


def test_gcode_cli_takes_sequences_per_pen_and_refuses_misplaced_options(tmp_path):
    from plotterd.cli import cli

    out = tmp_path / "cats.gcode"
    r = CliRunner().invoke(cli, ["gcode", str(NDJSON), "-o", str(out), "--grid", "6",
                                 "--pens", "black,red", "--per-pen"])
    assert r.exit_code == 0, r.output
    assert Program.load(out).stroke_count == 6 * 7
    pen1 = tmp_path / "cats-pen1-black.gcode"
    assert pen1.exists() and Program.load(pen1).stroke_count == 42  # all ink is black
    r = CliRunner().invoke(cli, ["gcode", str(NPZ), "-o", str(tmp_path / "r.gcode"),
                                 "--split", "train", "--index", "2"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["gcode", str(NPZ), "-o", str(tmp_path / "r.gcode"),
                                 "--index", "2"])  # test has only 2 drawings
    assert r.exit_code != 0 and "no drawing 2" in str(r.exception)
    r = CliRunner().invoke(cli, ["gcode", "x.svg", "-o", str(out), "--grid", "2"])
    assert r.exit_code == 2 and "for .ndjson and .npz input" in r.output


@pytest.mark.timeout(180)
def test_the_daemon_inbox_and_api_take_sequences(tmp_path):
    from tests.service.daemon_proc import DaemonProc, drop
    from tests.service.helpers import wait_for

    daemon = DaemonProc(tmp_path).start()
    try:
        drop(NDJSON, daemon.inbox, "cats.ndjson")
        cut = NDJSON.read_text()
        (tmp_path / "cut.ndjson").write_text(cut[: len(cut) - 30])
        drop(tmp_path / "cut.ndjson", daemon.inbox)
        with NPZ.open("rb") as f:
            up = daemon.http.post("/jobs", files={"file": ("cats.npz", f)})
        assert up.status_code in (200, 201, 202), up.text

        def settled():
            jobs = daemon.http.get("/jobs").json()
            jobs = jobs.get("jobs", jobs) if isinstance(jobs, dict) else jobs
            ready = [j for j in jobs if j["state"] not in ("claiming", "queued", "optimising")]
            return len(ready) == 3 and ready

        jobs = {j["name"]: j for j in wait_for(settled, 150, 0.2, "three jobs to settle")}
        for name in ("cats.ndjson", "cats.npz"):
            assert jobs[name]["kind"] == "svg" and jobs[name]["state"] != "failed", jobs[name]
            assert "gcode" in jobs[name]["artefacts"] and "strokes" not in jobs[name]["artefacts"]
        bad = jobs["cut.ndjson"]
        assert bad["state"] == "failed" and "truncated?" in bad["error"], bad
        assert "\n" not in bad["error"].strip()
    finally:
        daemon.stop()


def test_job_options_choose_the_drawing():
    from plotterd.errors import ConfigError
    from plotterd.vector.sequences import source_with_options

    src = source_with_options(NPZ, {"index": 1, "split": "train"})
    assert src == SequenceSource(NPZ, index=1, grid=None, split="train")
    assert source_with_options(NDJSON, None) == SequenceSource(NDJSON)
    assert source_with_options(NDJSON, {"grid": 4}).grid == 4
    for bad, key in (({"index": -1}, "index"), ({"grid": 0}, "grid"),
                     ({"split": "dev"}, "split"), ({"loss": {"sigma": 2}}, "loss")):
        with pytest.raises(ConfigError) as e:
            source_with_options(NDJSON, bad)
        assert e.value.key == key
