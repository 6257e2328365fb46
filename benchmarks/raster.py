"""Rasteriser benchmark: ms per optimisation iteration and peak RSS, dense formula vs plotterd.

One iteration = render + MSE loss against a target image + backward + Adam step on the points
(and sigma for curves) + clamp to the canvas, as in the papers' reference code. Strokes are
initialised like the papers: lines start uniform at random with the end within +-0.1 world
units, points and curve control points uniform; 1 px wide strokes (sigma = 0.54925).

Every (case, implementation) runs in its own subprocess so peak RSS is per case.

    .venv/bin/python benchmarks/raster.py [--threads 2] [--device cpu] [--quick]

The last line printed is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (kind, strokes, control points, height, width, run dense too)
CASES = {
    "lines_1000_200x266": ("line", 1000, 2, 200, 266, True),
    "points_2000_200x266": ("point", 2000, 1, 200, 266, True),
    "catmull_rom_500_200x266": ("catmull_rom", 500, 4, 200, 266, True),
    "lines_10000_1024x1024": ("line", 10000, 2, 1024, 1024, False),
}
SIGMA = 0.54925  # 1 px wide strokes


def _target(height: int, width: int):
    import cv2
    import torch

    img = cv2.imread(str(ROOT / "samples" / "camera.png"), cv2.IMREAD_GRAYSCALE)
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).float().div(255.0)[None, None]


def _init(kind: str, n: int, k: int, height: int, width: int, gen):
    """Papers' initialisation in world units, returned in pixels (x = column, y = row)."""
    import torch

    scale = (height - 1) / 2.0
    xext = (width - 1) / (height - 1)
    lo = torch.tensor([-xext, -1.0])
    hi = torch.tensor([xext, 1.0])
    start = lo + (hi - lo) * torch.rand(n, 1, 2, generator=gen)
    if kind == "line":
        end = start + (torch.rand(n, 1, 2, generator=gen) * 0.2 - 0.1)
        world = torch.cat([start, end], 1)
    elif k == 1:
        world = start
    else:
        rest = lo + (hi - lo) * torch.rand(n, k - 1, 2, generator=gen)
        world = torch.cat([start, rest], 1)
    offset = torch.tensor([(width - 1) / 2.0, (height - 1) / 2.0])
    return world * scale + offset


def child(case: str, impl: str, threads: int, device: str, iters: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT / "tests" / "draw"))
    from plotterd.draw.raster import StrokeBatch, render

    if impl == "dense":
        from dense_reference import render_dense as fn
    else:
        fn = render
    # RSS of the interpreter with torch and plotterd loaded, before any case data exists
    base_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    kind, n, k, height, width, _ = CASES[case]
    gen = torch.Generator().manual_seed(0)
    points = _init(kind, n, k, height, width, gen).to(device).requires_grad_(True)
    sigma = torch.full((n,), SIGMA, device=device, requires_grad=kind == "catmull_rom")
    target = _target(height, width).to(device)
    scale = (height - 1) / 2.0
    groups = [{"params": [points], "lr": 0.01 * scale}]  # the papers' lr 0.01, in pixels
    if sigma.requires_grad:
        groups.append({"params": [sigma], "lr": 1e-3})
    opt = torch.optim.Adam(groups)
    hi = torch.tensor([width - 1.0, height - 1.0], device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        img = fn([StrokeBatch(kind, points, sigma)], height, width)
        loss = torch.mean((img - target) ** 2)
        loss.backward()
        opt.step()
        with torch.no_grad():
            points.copy_(torch.minimum(points.clamp_min(0.0), hi))
        return float(loss)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    # the first step is a warm-up (allocator, first-call costs) except for the dense formula,
    # whose tens of seconds per step dwarf it; its loss is the initial strokes' loss
    times = []
    for i in range(iters + (impl != "dense")):
        t0 = time.perf_counter()
        loss = step()
        sync()
        if i == 0:
            loss0 = loss
        if i > 0 or impl == "dense":
            times.append(time.perf_counter() - t0)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {
        "case": case,
        "impl": impl,
        "ms_best": 1000 * min(times),
        "ms_median": 1000 * sorted(times)[len(times) // 2],
        "iters": iters,
        "peak_rss_mb": rss_mb,
        "import_rss_mb": base_rss_mb,
        "loss_initial": loss0,  # same strokes for dense and plotterd: must agree
        "loss": loss,
    }
    if device.startswith("cuda"):
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="fewer iterations, no dense runs")
    ap.add_argument("--skip-dense", action="store_true", help="plotterd only")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--child", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    ap.add_argument("--iters", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.threads, args.device, args.iters)))
        return

    results = []
    for case in args.cases:
        impls = ["plotterd"]
        if CASES[case][5] and not (args.quick or args.skip_dense):
            impls.insert(0, "dense")
        for impl in impls:
            iters = 2 if impl == "dense" else (5 if args.quick else 20)
            cmd = [sys.executable, __file__, "--child", case, impl, "--threads",
                   str(args.threads), "--device", args.device, "--iters", str(iters)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                res = {"case": case, "impl": impl, "error": proc.stderr.strip()[-500:]}
            else:
                res = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(res)
            if "error" in res:
                print(f"{case:26s} {impl:9s} FAILED: {res['error']}", flush=True)
            else:
                print(f"{case:26s} {impl:9s} {res['ms_best']:10.1f} ms/iter (best of "
                      f"{iters}, median {res['ms_median']:.1f})  peak RSS "
                      f"{res['peak_rss_mb']:6.0f} MB (after imports "
                      f"{res['import_rss_mb']:.0f} MB)  initial loss "
                      f"{res['loss_initial']:.7f}", flush=True)
    summary = {
        "benchmark": "raster",
        "threads": args.threads,
        "device": args.device,
        "results": {f"{r['case']}/{r['impl']}": {k: v for k, v in r.items()
                                                 if k not in ("case", "impl")}
                    for r in results},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
