"""Every fault kind, at several points of a job, on both firmwares: the job either completes
with exactly the program's pen-down geometry (a stroke redrawn from its start only after a
resume), or stops with a clear error and the pen up. Never a hang, never out of bounds."""

from __future__ import annotations

import pytest

from plotterd.machine import MachineOptions, Timeouts, stream

from .helpers import check_drawn, expected_strokes, make_program

# (kind, what must happen) per firmware: "done" = completes with the exact drawing
# (resumed: at least one automatic resume); "failed" = stops with the named error, pen up;
# "interrupted" = the device never came back: stream reports where to resume.
# The boards home (GRBL $22=1; Marlin G28): an automatic resume needs the position back.
# test_reset_without_homing_interrupts covers the machines that do not home.
OUTCOMES = {
    "grbl": {
        "drop_ok": "done", "garble": "done", "slow": "done",
        "resend": "done", "resend_loop": "done",  # no line numbers in GRBL: not applicable
        "corrupt": ("failed", "error:"), "error": ("failed", "error:20"),
        "halt": ("failed", "ALARM:1"),
        "disconnect": "resumed", "reset": "resumed", "silence": "resumed",
        "unplug": "interrupted",
    },
    "marlin": {
        "drop_ok": "done", "garble": "done", "slow": "done", "corrupt": "done",
        "resend": "done", "resend_loop": ("failed", "more than 10 times"),
        "error": ("failed", "Error:"), "halt": ("failed", "halted"),
        "disconnect": "resumed", "reset": "resumed", "silence": "resumed",
        "unplug": "interrupted",
    },
}
HOMES = MachineOptions(homing=True)
CONNECT_LINES = {"grbl": 3, "marlin": 2}
POINTS = (0.05, 0.5, 0.95)  # where in the job (fraction of its lines) the fault strikes

CASES = [(fw, kind, frac) for fw in OUTCOMES for kind in OUTCOMES[fw]
         for frac in (POINTS if kind != "slow" else (None,))]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fw,kind,frac", CASES)
def test_fault(fw, kind, frac):
    program = make_program(fw, strokes=8, segs=5, seed=3)
    n = len(program.lines)
    # the fault counts the board's lines: connecting takes $I, $$, $H (GRBL), M110, G28
    spec = "slow:0.01" if frac is None else \
        f"{kind}@{CONNECT_LINES[fw] + max(1, int(n * frac))}"
    url = f"sim://{fw}?speed=instant&seed=7&homing=1&faults={spec}"
    result = stream(program, url, timeouts=Timeouts.fast(), options=HOMES)
    sim = result.simulator
    fired = [k for k, _ in sim.faults.fired] if frac is not None else ["slow"]
    if fw == "grbl" and kind in ("resend", "resend_loop"):
        assert fired == []  # GRBL has no line numbers: nothing to ask again
    else:
        assert fired == [kind]
    assert not sim.out_of_bounds
    expect = OUTCOMES[fw][kind]
    if expect in ("done", "resumed"):
        assert result.status == "done", result.error
        assert result.error is None
        assert result.lines_acked == result.lines_executed == n
        assert result.last_completed_stroke == 7
        restarts = check_drawn(sim.segments, expected_strokes(program), result.resumes)
        if expect == "resumed":
            assert result.resumes == 1
        else:
            assert result.resumes == 0 and restarts == 0
    elif expect == "interrupted":
        assert result.status == "interrupted"
        assert "reconnection attempts" in result.error
        assert result.resume_stroke is not None or result.last_completed_stroke == 7
        # what was drawn is a clean prefix of the job: the resume point is not beyond it
        done = result.last_completed_stroke
        exp = expected_strokes(program)
        drawn_strokes = sum(len(s) for s in exp[: (done + 1 if done is not None else 0)])
        assert len(sim.segments) >= drawn_strokes
    else:
        status, words = expect
        assert result.status == status
        assert words in result.error
        assert result.pen_up is True
    assert not sim.pen_down, "the pen must be up at the end"


SCALED = [(fw, f) for fw in ("grbl", "marlin")
          for f in ("reset@40", "disconnect@40", "silence@40", "drop_ok@40", "garble@25")]
SCALED += [("marlin", "corrupt@30"), ("marlin", "resend@30")]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fw,fault", SCALED)
def test_fault_in_scaled_time(fw, fault):
    """With moves that take time, a reset cuts a segment short; the stroke is then redrawn
    from its start."""
    program = make_program(fw, strokes=6, segs=5, seed=4)
    url = f"sim://{fw}?speed=scaled:50&seed=2&homing=1&faults={fault}"
    result = stream(program, url, timeouts=Timeouts.fast(), options=HOMES)
    sim = result.simulator
    assert result.status == "done", result.error
    check_drawn(sim.segments, expected_strokes(program), result.resumes)
    assert not sim.pen_down and not sim.out_of_bounds


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fw", ["grbl", "marlin"])
@pytest.mark.parametrize("fault", ["reset", "disconnect", "silence"])
def test_reset_without_homing_interrupts(fw, fault):
    """A board that does not home has lost its position after a reset: no automatic
    resume; the job ends interrupted, resumable, saying why; nothing out of bounds."""
    program = make_program(fw, strokes=8, segs=5, seed=3)
    at = len(program.lines) // 2
    url = f"sim://{fw}?speed=instant&seed=7&faults={fault}@{at}"
    result = stream(program, url, timeouts=Timeouts.fast())
    sim = result.simulator
    assert result.status == "interrupted"
    assert result.position_lost and result.reason == "position_lost" and result.resumable
    assert "position was lost" in result.error
    assert result.resume_stroke is not None
    assert result.resumes == 0  # the reset was seen, but nothing was resumed after it
    assert not sim.pen_down and not sim.out_of_bounds
