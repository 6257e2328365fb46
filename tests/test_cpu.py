"""Choosing the optimiser's threads from the cores that are idle now."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from plotterd.cpu import auto_threads, available_cores, free_cores


def test_busy_cores_are_not_counted_as_free():
    n = available_cores()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)
        assert free_cores(0.5) < 0.6 * n
        assert auto_threads(0.5) == 1
    finally:
        for p in busy:
            p.kill()
            p.wait()


def test_threads_stay_within_the_cores_we_may_use():
    assert 1 <= auto_threads(0.05) <= available_cores()


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_draw_refuses_a_bad_thread_count(bad, tmp_path):
    from click.testing import CliRunner

    from plotterd.cli import cli

    res = CliRunner().invoke(cli, ["draw", str(tmp_path / "x.png"), "--threads", bad])
    assert res.exit_code == 2 and "--threads" in res.output
