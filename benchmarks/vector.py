"""Benchmark the vector + G-code stage on a drawing-sized input.

10 000 random short polylines (like an optimised drawing: each starts anywhere on the canvas
and wanders within about +-0.1 world units), laid out on A4:

- wall time of the whole stage, strokes -> vectorise -> G-code Program (make_gcode), best of
  --repeat runs, with the default greedy ordering and with --two-opt;
- pen-up travel of our ordering against vpype's own ``linesort`` and ``linesort --two-opt``
  on the same lines in the same (shuffled) order. vpype_cli.execute is used here only: it is
  not thread-safe, which is why plotterd reimplements the ordering.

Run: .venv/bin/python benchmarks/vector.py [--strokes 10000] [--repeat 3]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import vpype as vp
import vpype_cli

from plotterd.draw.strokes import Canvas, StrokeGroup, Strokes
from plotterd.gcode import load_profile, make_gcode
from plotterd.vector import PX_PER_MM, PageSpec, VectorOptions, ordering


def make_strokes(n: int, seed: int = 0) -> Strokes:
    rng = np.random.default_rng(seed)
    canvas = Canvas(266, 200)
    xe = canvas.x_extent
    start = rng.uniform(-1, 1, (n, 1, 2)) * [xe, 1.0]
    steps = rng.uniform(-0.1, 0.1, (n, 3, 2)) / 2
    pts = np.concatenate([start, start + np.cumsum(steps, axis=1)], axis=1)
    pts = np.clip(pts, [-xe, -1], [xe, 1])
    return Strokes(canvas, [StrokeGroup("polyline", pts, 1.0, grey=rng.uniform(0.3, 1, n))])


def _only(doc: vp.Document) -> list[np.ndarray]:
    return [ln for lid in sorted(doc.layers) for ln in doc.layers[lid].lines]


def best_of(repeat: int, fn):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t
        if dt < best:  # keep the fastest run's result (its stats match its time)
            best, out = dt, result
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strokes", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", default="grbl-servo")
    args = ap.parse_args()

    strokes = make_strokes(args.strokes)
    profile = load_profile(args.profile)
    page = PageSpec(paper="a4")
    make_gcode(strokes, profile=profile, page=page)  # warm-up (imports, caches)

    t_greedy, res = best_of(
        args.repeat, lambda: make_gcode(strokes, profile=profile, page=page))
    t_two, res2 = best_of(
        args.repeat,
        lambda: make_gcode(strokes, profile=profile, page=page,
                           options=VectorOptions(two_opt=True)))
    print(f"make_gcode, {args.strokes} strokes: {t_greedy:.2f} s greedy, {t_two:.2f} s two-opt"
          f" (best of {args.repeat}); {res.stats['lines']} lines, "
          f"{res.stats['gcode_lines']} G-code lines, est. {res.stats['estimated_s'] / 60:.0f} min")

    # the same lines for everyone, in a shuffled order
    lines = [ln for lid in sorted(res.document.layers) for ln in res.document.layers[lid].lines]
    rng = np.random.default_rng(1)
    lines = [lines[i] for i in rng.permutation(len(lines))]

    def travel_m(ls) -> float:  # between consecutive lines, as vpype's pen_up_length
        return ordering.pen_up_length(list(ls)) / PX_PER_MM / 1000

    t_ours_g, ours_g = best_of(1, lambda: ordering.sort_lines(lines, 0j))
    t_ours_2, ours_2 = best_of(1, lambda: ordering.sort_lines(lines, 0j, use_two_opt=True))

    def vpype_sort(cmd: str) -> vp.Document:
        return vpype_cli.execute(cmd, vp.Document(vp.LineCollection(lines)))

    t_vp_g, vp_g = best_of(1, lambda: vpype_sort("linesort"))
    t_vp_2, vp_2 = best_of(1, lambda: vpype_sort("linesort --two-opt"))
    figures = {
        "strokes": args.strokes,
        "lines": len(lines),
        "make_gcode_s": round(t_greedy, 3),
        "make_gcode_two_opt_s": round(t_two, 3),
        "vectorise_s": round(res.stats["vectorise_s"], 3),
        "travel_m_input": round(travel_m(lines), 2),
        "travel_m_plotterd_greedy": round(travel_m(ours_g), 3),
        "travel_m_plotterd_two_opt": round(travel_m(ours_2), 3),
        "travel_m_vpype_linesort": round(travel_m(_only(vp_g)), 3),
        "travel_m_vpype_two_opt": round(travel_m(_only(vp_2)), 3),
        "sort_s_plotterd_greedy": round(t_ours_g, 3),
        "sort_s_plotterd_two_opt": round(t_ours_2, 3),
        "sort_s_vpype_linesort": round(t_vp_g, 3),
        "sort_s_vpype_two_opt": round(t_vp_2, 3),
        "two_opt_vs_vpype": round(travel_m(ours_2) / travel_m(_only(vp_2)), 4),
        "target_make_gcode_s": 3.0,
    }
    for k, v in figures.items():
        print(f"  {k:<28} {v}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
