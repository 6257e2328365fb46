"""plotterd against GRBL 1.1h's own firmware code (grbl-sim on a pseudo-terminal): real jobs
from plotterd's G-code writer, every move reaching GRBL's planner in order; pause, resume and
cancel; an M0 pen change continued through continue_after_pen_change; a soft-limit alarm with
GRBL's meaning; a machine with $10=0. grbl-sim is CPU bound: jobs are tens of strokes."""

from __future__ import annotations

import threading
import time

import pytest

from plotterd.machine import MachineOptions, Plotter, StreamControl, Timeouts

from .grbl_firmware import (
    FAST_SETTINGS,
    GrblSimBoard,
    build,
    expected_moves,
    fast_profile,
    writer_job,
)

pytestmark = [pytest.mark.firmware, pytest.mark.timeout(90)]

# a pty has no DTR: the first connect waits for a banner briefly, then soft-resets
T = Timeouts(banner=1.0, ok=10.0, status=2.0, command=5.0, homing=10.0, idle=60.0, poll=0.1,
             reconnect_attempts=2, reconnect_backoff=0.2)


@pytest.fixture(scope="session")
def grbl_exe():
    return build()  # once per test run; cached by content outside the repository


@pytest.fixture(scope="module")
def board(grbl_exe, tmp_path_factory):
    """One board for the module (its own directory: a fresh EEPROM.DAT); the tests run in
    file order and each leaves the settings as it found them."""
    b = GrblSimBoard(grbl_exe, tmp_path_factory.mktemp("grbl"))
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def plotter(board):
    """One connection kept open across the jobs, as the daemon keeps it."""
    p = Plotter(board.path, fast_profile(), timeouts=T, options=MachineOptions(homing=False))
    p.connect()
    p.driver.write_settings(FAST_SETTINGS)  # one at a time, each acknowledged
    p.driver.read_settings()
    yield p
    p.close()


def _settings(p: Plotter, values: dict) -> None:
    p.driver.write_settings(values)
    p.driver.read_settings()


def _same(a, b, tol=1e-3) -> bool:
    return len(a) == len(b) and all(abs(p[0] - q[0]) <= tol and abs(p[1] - q[1]) <= tol
                                    for p, q in zip(a, b, strict=True))


def test_whole_job_every_move_planned_in_order(board, plotter):
    program = writer_job(strokes=4, seed=1)
    p = plotter
    assert p.driver.status_mask == 1 and not p.driver.reports_buffer  # stock $10=1: no Bf:
    before = len(board.planned_moves())
    result = p.stream(program)
    assert result.status == "done", (result.error, board.health())
    assert result.lines_executed == result.total_lines
    planned = [(x, y) for x, y, _ in board.planned_moves()[before:]]
    assert _same(planned, expected_moves(program))
    spindle = [ln for ln in board.plan() if ln.startswith("S ")]
    assert spindle[-1].startswith("S 0")  # pen up (M5) at the end


def test_pause_resume_and_cancel(board, plotter):
    program = writer_job(strokes=8, seed=2)
    p = plotter
    start = len(board.plan())
    control = StreamControl()
    out = {}
    th = threading.Thread(target=lambda: out.update(r=p.stream(program, control=control)))
    th.start()
    board.wait_plan(lambda lines: sum(ln.startswith("P ") for ln in lines[start:]) >= 6)
    control.pause()
    deadline = time.monotonic() + 20
    while control.state != "paused":
        assert time.monotonic() < deadline, control.state
        time.sleep(0.05)
    held = board.plan()
    assert [ln for ln in held if ln.startswith("S ")][-1].startswith("S 0")  # pen lifted
    time.sleep(0.5)
    assert board.plan() == held  # nothing planned while paused
    control.resume()
    board.wait_plan(lambda lines: len(lines) > len(held) + 3)
    control.cancel()
    th.join(60)
    result = out["r"]
    assert result.status == "cancelled" and result.pen_up is True, (result.error,
                                                                     board.health())
    # the cancel's Ctrl-X runs GRBL's mc_reset, which stops the spindle (the servo pen) by
    # itself; a cancel mid-stroke therefore ends on RESET, one between strokes on "S 0"
    spindle = [ln for ln in board.plan() if ln.startswith("S ") or ln == "RESET"]
    assert spindle[-1].startswith("S 0") or spindle[-1] == "RESET", spindle[-3:]
    st = p.driver.query_status()
    assert st.state == "Idle"
    moved = sum(ln.startswith("P ") for ln in board.plan()[start:])
    assert moved < len(expected_moves(program))  # it really stopped


def test_pen_change_m0_continued(board, plotter):
    program = writer_job(strokes=2, seed=3, layers=2)
    assert any(ln.text == "M0" for ln in program.lines)
    p = plotter
    control = StreamControl()
    out = {}
    th = threading.Thread(target=lambda: out.update(r=p.stream(program, control=control)))
    th.start()
    deadline = time.monotonic() + 30
    while not control.pen_change_pending:
        assert time.monotonic() < deadline and th.is_alive(), (out, board.health())
        time.sleep(0.05)
    assert control.pen == "red" and p.status.state == "pen change"
    assert p.driver.query_status().state == "Hold"  # GRBL holds, M0's ok withheld
    first_pen = len(board.planned_moves())
    time.sleep(0.5)
    assert len(board.planned_moves()) == first_pen  # nothing moves until continue
    p.continue_after_pen_change()
    th.join(60)
    result = out["r"]
    assert result.status == "done", (result.error, board.health())
    planned = [(x, y) for x, y, _ in board.planned_moves()]
    assert _same(planned[-len(expected_moves(program)):], expected_moves(program))


def test_status_mask_zero(board, plotter):
    """$10=0: WPos and no Bf: in status reports; streaming and completion still work."""
    program = writer_job(strokes=3, seed=5)
    p = plotter
    _settings(p, {10: 0})
    assert p.driver.status_mask == 0
    before = len(board.planned_moves())
    result = p.stream(program)
    assert result.status == "done", result.error
    st = p.driver.status
    assert st.wpos is not None and st.mpos is None and st.planner_free is None
    planned = [(x, y) for x, y, _ in board.planned_moves()[before:]]
    assert _same(planned, expected_moves(program))
    _settings(p, {10: 1})


def test_soft_limit_alarm_has_grbl_meaning(board, plotter):
    """Soft limits on ($20=1 needs $22=1): with homing's default directions GRBL's travel is
    -max..0, so the job's first positive move is beyond it. (Last: it leaves $22=1.)"""
    program = writer_job(strokes=2, seed=4)
    p = plotter
    _settings(p, {22: 1, 20: 1})
    result = p.stream(program)
    assert result.status == "failed"
    assert "ALARM:2 (Soft limit" in result.error
    assert result.pen_up is True
    assert p.driver.query_status().state == "Idle"  # reset, unlocked, pen up
    assert [ln for ln in board.plan() if ln.startswith("S ")][-1].startswith("S 0")
