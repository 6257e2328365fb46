"""A drawing of thousands of lines streamed to GRBL 1.1h's own firmware (grbl-sim), not
pinned to a CPU, while a stress process per core keeps every core busy: the job completes and
every move reaches GRBL's planner once, in the file's order."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from plotterd.machine import MachineOptions, Plotter, Timeouts

from .grbl_firmware import (
    FAST_SETTINGS,
    LONG_JOB_SETTINGS,
    GrblSimBoard,
    build,
    drawing_job,
    expected_moves,
    fast_profile,
)

# 60-72 s alone on 2 cores; a CI machine that is slower, or busier than the stress it is
# given, gets room before a stall is called one
pytestmark = [pytest.mark.firmware, pytest.mark.slow, pytest.mark.timeout(420)]

T = Timeouts(banner=1.0, ok=10.0, status=2.0, command=5.0, homing=10.0, idle=60.0, poll=0.1,
             reconnect_attempts=2, reconnect_backoff=0.2)


def _stress() -> list[subprocess.Popen]:
    """One busy loop per core this process may run on."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in os.sched_getaffinity(0)]


def test_long_drawing_unpinned_under_load(tmp_path, caplog):
    exe = build()
    profile = fast_profile(draw=40000, travel=60000, dwell=0.01)
    program = drawing_job(profile, pixels=112)
    assert len(program.lines) > 2500
    board = GrblSimBoard(exe, tmp_path, pinned=False)
    board.start()
    p = Plotter(board.path, profile, timeouts=T, options=MachineOptions(homing=False))
    hogs: list[subprocess.Popen] = []
    try:
        p.connect()
        p.driver.write_settings({**FAST_SETTINGS, **LONG_JOB_SETTINGS})
        p.driver.read_settings()
        hogs = _stress()
        t0 = time.monotonic()
        with caplog.at_level(logging.INFO, logger="plotterd.machine"):
            result = p.stream(program)
        took = time.monotonic() - t0
    finally:
        for h in hogs:  # the processes this test started, by their handles
            h.terminate()
            h.wait(5)
        p.close()
        board.stop()
    assert result.status == "done", (result.error, board.health())
    assert result.lines_executed == result.total_lines == len(program.lines)
    planned = [(x, y) for x, y, _ in board.planned_moves()]
    want = expected_moves(program)
    assert len(planned) == len(want)
    assert all(abs(a[0] - b[0]) <= 1e-3 and abs(a[1] - b[1]) <= 1e-3
               for a, b in zip(planned, want, strict=True))
    nudges = sum("cycle start sent" in r.getMessage() for r in caplog.records)
    print(f"{len(program.lines)} lines, {len(want)} moves in {took:.1f} s under "
          f"{len(hogs)} busy loops; {nudges} cycle start(s) after a lost auto-start")
