"""Perceptual-loss benchmark: ms per optimisation iteration on a 266x200 drawing of 1000 lines.

One iteration = plotterd.draw.raster.render of 1000 one-pixel lines + loss + backward + Adam
step on the line end points + clamp to the canvas. Cases:

- ``lpips``: plotterd's LPIPS-VGG loss (target features computed once, at construction);
- ``lpips_package``: the same iteration calling ``lpips.LPIPS(net="vgg")(image, target)``,
  which recomputes the target's features every time (what the reference code does);
- ``sin_conv3``: plotterd's feature loss on relu1_2, relu2_2, relu3_3 (the SIN conv3 pipeline);
- ``*_loss_only``: the loss forward + backward alone, on a fixed image (no rasteriser).

Backbones are seeded RANDOM weights (allow_random_weights): the cost of a VGG16 pass does
not depend on the weights' values, and no weights file is needed to run this.

    .venv/bin/python benchmarks/perceptual.py [--threads 2] [--iters 5] [--warmup 2]

Cases run round robin (one iteration of each in turn), so their ratios hold on a shared
machine; absolute figures there are pessimistic (``cpu_ms`` / threads is the estimate for
cores of its own).

The last line printed is one JSON object with all figures (milliseconds per iteration).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH, LINES = 200, 266, 1000
SIGMA = 0.54925  # 1 px wide lines


def target_image() -> torch.Tensor:
    import cv2

    img = cv2.imread(str(ROOT / "samples" / "camera.png"), cv2.IMREAD_GRAYSCALE)
    img = cv2.resize(img, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img).float().div(255.0)[None, None]


def init_lines(gen: torch.Generator) -> torch.Tensor:
    """The papers' initialisation (start uniform, end within +-0.1 world units), in pixels."""
    scale = (HEIGHT - 1) / 2.0
    xext = (WIDTH - 1) / (HEIGHT - 1)
    lo, hi = torch.tensor([-xext, -1.0]), torch.tensor([xext, 1.0])
    start = lo + (hi - lo) * torch.rand(LINES, 1, 2, generator=gen)
    end = start + (torch.rand(LINES, 1, 2, generator=gen) * 0.2 - 0.1)
    world = torch.cat([start, end], 1)
    return world * scale + torch.tensor([(WIDTH - 1) / 2.0, (HEIGHT - 1) / 2.0])


def make_loss(case: str, target: torch.Tensor):
    """A callable image -> scalar for the case."""
    if case.startswith("lpips_package"):
        import lpips

        torch.manual_seed(0)  # its random trunk: same figures every run
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        rgb_target = target.repeat(1, 3, 1, 1)
        return lambda img: ref(img.repeat(1, 3, 1, 1), rgb_target, normalize=True).sum()
    from plotterd.draw.losses import build_loss

    if case.startswith("lpips"):
        cfg = {"type": "lpips", "allow_random_weights": True}
    else:
        cfg = {"type": "feature", "backbone": "sin", "layers": "relu1_2..relu3_3",
               "allow_random_weights": True}  # fmt: skip
    return build_loss(cfg, target)


def make_step(case: str):
    """(step, build seconds) for the case; step() runs one iteration, returns the loss."""
    from plotterd.draw.raster import StrokeBatch, render

    target = target_image()
    t0 = time.perf_counter()
    loss = make_loss(case, target)
    build_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    if case.endswith("_loss_only"):
        img = torch.rand(1, 1, HEIGHT, WIDTH, generator=gen).requires_grad_(True)

        def step() -> float:
            img.grad = None
            v = loss(img)
            v.backward()
            return float(v.detach())

        return step, build_s
    pts = init_lines(gen).requires_grad_(True)
    sigma = torch.full((LINES,), SIGMA)
    opt = torch.optim.Adam([pts], lr=0.01 * (HEIGHT - 1) / 2.0)  # lr 0.01 in world units
    hi = torch.tensor([WIDTH - 1.0, HEIGHT - 1.0])

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        img = render([StrokeBatch("line", pts, sigma)], HEIGHT, WIDTH)
        v = loss(img)
        v.backward()
        opt.step()
        with torch.no_grad():
            pts.copy_(torch.minimum(pts.clamp(min=0.0), hi))
        return float(v.detach())

    return step, build_s


def time_cases(cases: list[str], iters: int, warmup: int) -> dict[str, dict[str, float]]:
    """Round robin: iteration r of every case runs before iteration r + 1 of any, so on a
    machine shared with other work all cases see the same load and their ratios hold."""
    steps, build = {}, {}
    for case in cases:
        steps[case], build[case] = make_step(case)
        for _ in range(warmup):
            steps[case]()
    wall: dict[str, list[float]] = {c: [] for c in cases}
    cpu: dict[str, list[float]] = {c: [] for c in cases}
    losses: dict[str, list[float]] = {c: [] for c in cases}
    for _ in range(iters):
        for case in cases:
            t, c = time.perf_counter(), time.process_time()
            losses[case].append(steps[case]())
            wall[case].append(time.perf_counter() - t)
            cpu[case].append(time.process_time() - c)
    return {
        case: {
            "ms_median": round(1000 * statistics.median(wall[case]), 1),
            "ms_min": round(1000 * min(wall[case]), 1),
            # CPU time of all threads: on a shared machine, cpu_ms / threads estimates the
            # wall time the iteration would take with the cores to itself
            "cpu_ms_median": round(1000 * statistics.median(cpu[case]), 1),
            "build_s": round(build[case], 2),
            "loss_first": round(losses[case][0], 5),
            "loss_last": round(losses[case][-1], 5),
        }
        for case in cases
    }


CASES = [
    "lpips", "lpips_package", "sin_conv3",
    "lpips_loss_only", "lpips_package_loss_only", "sin_conv3_loss_only",
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = time_cases(args.cases.split(","), args.iters, args.warmup)
    for case, r in results.items():
        print(
            f"{case:24s} {r['ms_median']:7.1f} ms/it (min {r['ms_min']:.1f}, "
            f"cpu {r['cpu_ms_median']:.1f}), build {r['build_s']:.2f} s, "
            f"loss {r['loss_first']} -> {r['loss_last']}"
        )
    if "lpips" in results and "lpips_package" in results:
        speedup = results["lpips_package"]["ms_median"] / results["lpips"]["ms_median"]
        print(f"lpips vs lpips package: {speedup:.2f}x")
    print(json.dumps({
        "benchmark": "perceptual", "size": f"{WIDTH}x{HEIGHT}", "lines": LINES,
        "threads": args.threads, "iters": args.iters, "weights": "random (seeded)",
        "torch": torch.__version__, "machine": platform.machine(),
        "cpu_count": __import__("os").cpu_count(), "results": results,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
