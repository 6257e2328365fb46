"""Pen fit accuracy and speed, from simulated phone photos of the calibration sheet.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pens.py [--quick] [--size 2000x1500]

Prints, for a grid of true pens (nib 0.2-0.6 mm, darkness 0.5-1.0) photographed by the
simulated camera at its defaults, and for one pen under each distortion pushed further
(tilt, uneven light, noise, blur, JPEG quality), the fitted nib's relative error, the
darkness error and the fit's RMS residual; then how long a fit of a 12 MP JPEG takes on
2 cores (target: under 5 s). The sheet is made for a nominal 0.3 mm pen throughout.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import torch

from plotterd.calibration import CalibrationError, fit_pen, make_sheet, render_sheet
from plotterd.machine.sim.camera import CameraSettings, photograph
from plotterd.pen import RoundNib

PX_PER_MM = 10.0
NIBS = (0.2, 0.3, 0.4, 0.5, 0.6)
DARKNESS = (0.5, 0.75, 1.0)
DISTORTIONS = {
    "flat, sharp, JPEG 95, plain sRGB": dict(max_tilt_deg=0.0, gradient=0.0, vignette=0.0,
                                             read_noise=0.001, shot_noise=0.002, blur_px=0.3,
                                             jpeg_quality=95, tone_gamma=1.0,
                                             radial_k1=0.0),
    "defaults": {},
    "tilt 30 deg": dict(max_tilt_deg=30.0),
    "light: gradient 0.5, vignette x2": dict(gradient=0.5, vignette=2.0),
    "noise x3": dict(read_noise=0.012, shot_noise=0.03),
    "blur 1.5 px": dict(blur_px=1.5),
    "JPEG 50": dict(jpeg_quality=50),
    "dim: exposure 0.3": dict(exposure=0.3),
    "phone tone curve gamma 1.3": dict(tone_gamma=1.3),
    "webcam lens, barrel k1 -0.15": dict(radial_k1=-0.15),
}


def _one(layout, nib: float, darkness: float, camera: CameraSettings, seed: int) -> str:
    page = render_sheet(layout, RoundNib(nib, darkness), PX_PER_MM)
    image = photograph(page, PX_PER_MM, camera, seed=seed).image
    try:
        fit = fit_pen(image, layout, "bench")
    except CalibrationError as e:
        return f"refused: {e}"
    nib_err = (fit.pen.nib_mm - nib) / nib
    return (f"nib {fit.pen.nib_mm:.3f} ({nib_err:+6.1%})  darkness {fit.pen.darkness:.3f} "
            f"({fit.pen.darkness - darkness:+.3f})  residual {fit.residual:.4f}  "
            f"tone {fit.tone_gamma:.2f}  blur {fit.blur_mm:.2f} mm")


def _timing(layout, runs: int) -> list[float]:
    page = render_sheet(layout, RoundNib(0.38, 0.9), PX_PER_MM)
    shot = photograph(page, PX_PER_MM, CameraSettings(size_px=(4000, 3000)), seed=99)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        path.write_bytes(shot.jpeg)
        for _ in range(runs):
            t0 = time.perf_counter()
            fit_pen(path, layout, "bench")
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer pens")
    ap.add_argument("--size", default="2000x1500", help="photo size for the accuracy grid")
    args = ap.parse_args()
    cv2.setNumThreads(2)
    torch.set_num_threads(2)
    w, h = (int(v) for v in args.size.split("x"))
    camera = CameraSettings(size_px=(w, h))
    layout = make_sheet([RoundNib(0.3)], (148.0, 210.0)).layout
    nibs = NIBS[::2] if args.quick else NIBS
    print(f"true pens, camera defaults ({w} x {h} px), sheet for a nominal 0.3 mm nib")
    for k, (nib, darkness) in enumerate((n, d) for n in nibs for d in DARKNESS):
        print(f"  nib {nib:.2f} darkness {darkness:.2f}: "
              f"{_one(layout, nib, darkness, camera, seed=k)}")
    print("one pen (nib 0.38, darkness 0.9), each distortion (3 seeds)")
    for name, change in DISTORTIONS.items():
        for seed in range(3):
            print(f"  {name:<34} seed {seed}: "
                  f"{_one(layout, 0.38, 0.9, replace(camera, **change), seed=100 + seed)}")
    times = _timing(layout, runs=3)
    print(f"12 MP JPEG fit (read, marks, rectify, flat-field, fit) on 2 threads: median "
          f"{statistics.median(times):.2f} s over {len(times)} runs "
          f"({', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
