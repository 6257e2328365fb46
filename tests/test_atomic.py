"""plotterd.atomic: the target is replaced whole or left alone."""

from __future__ import annotations

import pytest

from plotterd import atomic


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("old")
    atomic.write_text(p, "new")
    atomic.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert p.read_text() == "new"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["b.bin", "out.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    p = tmp_path / "out.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_path(p) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["out.txt"]


def test_temporary_is_hidden_keeps_the_suffix_and_is_unique(tmp_path):
    p = tmp_path / "frame.png"
    with atomic.atomic_path(p, suffix=".png") as a, atomic.atomic_path(p, suffix=".png") as b:
        assert a != b and a.name.startswith(".") and a.suffix == ".png"
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert p.read_bytes() == b"a"  # the outer writer finished last
