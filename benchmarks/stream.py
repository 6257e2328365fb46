"""Streaming efficiency on the simulated GRBL plotter in scaled time.

A job of short strokes (default 500 strokes x 10 segments of 0.5 mm = 5 000 segments, servo pen
with 0.15 s dwells) is streamed to ``sim://grbl?speed=scaled:F`` twice: with character
counting and with send-and-wait-for-ok. The ideal time is what the simulator's own motion model
(acceleration, junction speeds, one-block lookahead, dwells, M3/M5 planner syncs) needs when
every line is already in the buffer: the job fed to a simulator with an unbounded buffer and no
serial delay. Ratios = ideal machine time / (wall time x F); 1.0 = the planner never starved.
Host and simulator share a Python process and the CPU: treat the figures as pessimistic.

    .venv/bin/python benchmarks/stream.py [--strokes 500] [--segs 10] [--factor 20]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time

from plotterd.gcode.program import GLine, Program
from plotterd.machine import Timeouts, stream
from plotterd.machine.sim import make_simulator, parse_url


def make_job(strokes: int, segs: int, seg_len: float, seed: int = 0) -> Program:
    rng = random.Random(seed)
    pen_up, pen_down = ["M5", "G4 P0.15"], ["M3 S30", "G4 P0.15"]
    header = {"version": 1, "firmware": "grbl", "pen_up": pen_up, "pen_down": pen_down,
              "travel_feed": 6000, "draw_feed": 3000, "bounds": [0, 0, 420, 300]}
    lines = [GLine("G21", "setup"), GLine("G90", "setup")] + [GLine(c, "setup") for c in pen_up]
    cols = max(1, int(math.sqrt(strokes)))
    for s in range(strokes):
        # strokes on a grid 8 mm apart: short travels, as in a dense drawing
        x, y = 20 + 8 * (s % cols), 20 + 8 * (s // cols)
        lines.append(GLine(f"G0 X{x:.3f} Y{y:.3f}", "travel", s))
        lines += [GLine(c, "pen_down", s) for c in pen_down]
        ang = rng.uniform(0, 2 * math.pi)
        for k in range(segs):
            ang += rng.uniform(-0.6, 0.6)
            x, y = x + seg_len * math.cos(ang), y + seg_len * math.sin(ang)
            lines.append(GLine(f"G1 X{x:.3f} Y{y:.3f}" + (" F3000" if k == 0 else ""),
                               "draw", s))
        lines += [GLine(c, "pen_up", s) for c in pen_up]
    lines.append(GLine("G0 X0 Y0", "end"))
    return Program(lines, header)


def ideal_time(program: Program) -> float:
    """Machine seconds the motion model needs with every line already buffered."""
    cfg = parse_url("sim://grbl?speed=scaled:1e6&latency=0&boot=0&rx=100000000")
    sim = make_simulator(cfg)
    sim.power_on(10**12)  # "baud rate" high enough that transmission takes no time
    text = "".join(ln.text + "\n" for ln in program.lines)
    sim.host_write(text.encode())
    while True:
        with sim.lock:
            sim._advance(sim.now())
            if sim.lines_received == len(program.lines) and sim.executor_idle() \
                    and sim.busy_until == float("inf") and sim.pending is None:
                break
        time.sleep(0.01)
    return sim.motion_end - sim.first_line_at


def run(program: Program, factor: float, flow: str) -> dict:
    url = f"sim://grbl?speed=scaled:{factor:g}&boot=0.01"
    timeouts = Timeouts(poll=0.05)
    t0 = time.monotonic()
    result = stream(program, url, timeouts=timeouts, flow=flow)
    wall = time.monotonic() - t0
    if result.status != "done":
        sys.exit(f"{flow}: stream ended {result.status}: {result.error}")
    sim = result.simulator
    return {"wall_s": wall, "machine_s": wall * factor, "segments": len(sim.segments),
            "dropped_bytes": sim.dropped_bytes,
            # first line received to last move ended: without connecting and final polling
            "span_s": sim.motion_end - sim.first_line_at}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strokes", type=int, default=500)
    ap.add_argument("--segs", type=int, default=10)
    ap.add_argument("--seg-len", type=float, default=0.5)
    ap.add_argument("--factor", type=float, default=20.0)
    args = ap.parse_args()
    program = make_job(args.strokes, args.segs, args.seg_len)
    ideal = ideal_time(program)
    print(f"job: {args.strokes} strokes x {args.segs} segments of {args.seg_len} mm, "
          f"{len(program.lines)} lines; ideal machine time {ideal:.1f} s "
          f"(scaled x{args.factor:g}: {ideal / args.factor:.1f} s wall)")
    out = {"segments": args.strokes * args.segs, "lines": len(program.lines),
           "factor": args.factor, "ideal_machine_s": round(ideal, 2)}
    for flow in ("count", "wait"):
        r = run(program, args.factor, flow)
        ratio = ideal / r["machine_s"]
        span_ratio = ideal / r["span_s"]
        name = {"count": "character counting", "wait": "send-and-wait"}[flow]
        print(f"{name:20s}: wall {r['wall_s']:.2f} s = {r['machine_s']:.1f} machine s, "
              f"ratio {ratio:.3f} (job span only: {span_ratio:.3f}), drew {r['segments']} "
              f"segments, {r['dropped_bytes']} bytes dropped")
        out[f"{flow}_wall_s"] = round(r["wall_s"], 3)
        out[f"{flow}_ratio"] = round(ratio, 4)
        out[f"{flow}_span_ratio"] = round(span_ratio, 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
