"""Pen renderer benchmark: time and peak memory of ``plotterd.pen.render_paths`` on a dense
hatch page, and the ink it lays across line angles.

The page is a real drawing: the optimiser's hatch start (``plotterd.draw.hatching``) of
``camera.png`` on a 150 mm square with a 0.3 mm nib, about 40 m of line. It is rendered

- as the simulator and the paper benchmark do: 10 px/mm, supersampled 4x (6000 x 6000),
- as the optimiser's start scoring and paper forward pass do: its size buckets
  (``to_buckets``: short segments of about 1.5 nib), 1 px per nib, supersampled 8x
  (4000 x 4000),
- as the simulator renders a whole 300 mm bed: the same drawing at twice the size (80 m),
  10 px/mm, supersampled 4x (12000 x 12000).

Each case runs in its own subprocess, so peak RSS is the case's own; tracemalloc's peak
(numpy's arrays) is printed beside it. Times are the best of ``--repeat`` runs, wall clock
and the process's CPU time (steadier on a shared machine). The angle sweep draws a 30 mm
line through a point off the pixel grid at 0..90 degrees step 5 and compares the ink with
length x nib + caps.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pen_render.py [--repeat 3]
        [--against OLD_PEN_PY]

``--against`` times the ``render_paths`` of another copy of ``plotterd/pen.py`` beside this
one, e.g. ``git show <commit>:plotterd/pen.py > /tmp/old_pen.py``.

The last line printed is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = Path("/work/shared/data/images/camera.png")
NIB_MM = 0.3
SIDE_MM = 150.0

# name: (px_per_mm, supersample, scale of the drawing); 1 / NIB_MM px per mm is the
# optimiser's canvas
CASES = {
    "sim_page_10px_mm_x4": (10.0, 4, 1),
    "canvas_1px_nib_x8": (1.0 / NIB_MM, 8, 1),
    "bed_300mm_10px_mm_x4": (10.0, 4, 2),
}


def hatch_page():
    """The hatch start's polylines (mm) of the photo on a SIDE_MM square."""
    import cv2
    import numpy as np

    from plotterd.draw.hatching import hatch

    if PHOTO.is_file():
        grey = cv2.imread(str(PHOTO), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    else:  # a tone field with edges, so the benchmark runs without the shared photos
        yy, xx = np.mgrid[0:512, 0:512]
        grey = (0.5 + 0.45 * np.sin(xx / 23.0) * np.cos(yy / 31.0)).astype(np.float32)
    side = round(SIDE_MM / NIB_MM)
    grey = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA)
    return [(p + 0.5) * NIB_MM for p in hatch(1.0 - grey)]


def renderer(path: str | None):
    """``render_paths`` of plotterd, or of the pen module at ``path``."""
    if not path:
        from plotterd.pen import render_paths

        return render_paths
    import importlib.util

    spec = importlib.util.spec_from_file_location("pen_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module.render_paths


def case_lines(name: str):
    lines = hatch_page()
    if name.startswith("canvas"):  # what the optimiser's start scoring draws
        from plotterd.draw.structure_start import to_buckets

        buckets = to_buckets([p / NIB_MM - 0.5 for p in lines])
        lines = [(p + 0.5) * NIB_MM for b in buckets.values() for p in b]
    return lines


def run_case(name: str, repeat: int, against: str | None) -> dict:
    import tracemalloc

    from plotterd.pen import DrawingBox, total_length_mm

    render = renderer(against)
    px_per_mm, ss, size = CASES[name]
    lines = [p * size for p in case_lines(name)]
    box = DrawingBox(SIDE_MM * size, SIDE_MM * size)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        page = render(lines, box, px_per_mm, NIB_MM, 1.0, supersample=ss)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    render(lines, box, px_per_mm, NIB_MM, 1.0, supersample=ss)
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"case": name, "renderer": against or "plotterd",
            "line_m": round(total_length_mm(lines) / 1000, 2),
            "paths": len(lines), "points": sum(len(p) for p in lines), "shape": list(page.shape),
            "mean_grey": round(float(page.mean()), 5), "best_s": round(min(times), 3),
            "best_cpu_s": round(min(cpu), 3),
            "peak_rss_mb": round((rss1 - rss0) / 1024, 1) if rss1 > rss0 else 0.0,
            "traced_peak_mb": round(traced / 2**20, 1)}


def angle_sweep(against: str | None) -> dict:
    import numpy as np

    from plotterd.pen import DrawingBox

    render = renderer(against)
    out = {}
    box = DrawingBox(40.0, 40.0)
    for nib, px_per_mm in ((0.3, 10.0), (0.5, 10.0), (0.3, 1 / 0.3)):
        ss = 8 if px_per_mm < 5 else 4
        errors = []
        for degrees in range(0, 91, 5):
            t = math.radians(degrees)
            half = 15.0 * np.array([math.cos(t), math.sin(t)])
            centre = np.array([20.013, 19.971])  # off the pixel grid
            page = render([np.array([centre - half, centre + half])], box, px_per_mm, nib,
                          1.0, supersample=ss)
            ink = float((1.0 - page).sum()) / px_per_mm**2
            want = 30.0 * nib + math.pi * nib**2 / 4
            errors.append(round(100 * (ink / want - 1), 3))
        out[f"nib_{nib}_at_{px_per_mm:.3g}px_mm_x{ss}"] = {
            "error_pct_by_5deg": errors, "max_abs_error_pct": max(map(abs, errors))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--against", help="another plotterd/pen.py to time beside this one")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # one case, in a subprocess
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.repeat, args.against)))
        return
    results = {"cases": [], "angles": {}}
    for against in ([args.against] if args.against else []) + [None]:
        label = against or "plotterd"
        results["angles"][label] = angle_sweep(against)
        for name in CASES:
            cmd = [sys.executable, __file__, "--case", name, "--repeat", str(args.repeat)]
            proc = subprocess.run(cmd + (["--against", against] if against else []),
                                  capture_output=True, text=True, cwd=ROOT, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            results["cases"].append(row)
            print(f"{label:20.20s} {name:20s} {row['line_m']:5.1f} m {row['points']:7d} pts  "
                  f"{row['shape'][1]}x{row['shape'][0]} px  {row['best_s']:6.3f} s "
                  f"(cpu {row['best_cpu_s']:6.3f} s)  "
                  f"peak RSS +{row['peak_rss_mb']:.0f} MB  traced {row['traced_peak_mb']:.0f} "
                  f"MB  mean grey {row['mean_grey']:.4f}")
        for key, row in results["angles"][label].items():
            print(f"{label:20.20s} ink error {key}: max |{row['max_abs_error_pct']:.3f}| % "
                  f"(0..90 step 5: {row['error_pct_by_5deg']})")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
