"""Write the stroke-sequence samples in this folder, in the real formats exactly:

- ``quickdraw_cats.ndjson``: QuickDraw's *simplified* drawings, one JSON object per line with
  the keys word, countrycode, timestamp, recognized, key_id, drawing; ``drawing`` is a list
  of strokes ``[[x0, x1, ...], [y0, y1, ...]]`` of integers 0..255 (y down).
- ``sketchrnn_cats.npz``: a Sketch-RNN data set (``np.savez`` with the arrays train, valid
  and test), each an object array of int16 ``(N, 3)`` stroke-3 arrays ``(dx, dy,
  pen_lifted)``, made from the same drawings the way Sketch-RNN's data was made from
  QuickDraw (deltas between consecutive points, pen_lifted = 1 on each stroke's last point).

The drawings are synthetic (seeded) cat faces, not copies of the data sets:
    .venv/bin/python tests/data/make_sequence_samples.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def cat(rng: np.random.Generator) -> list[list[list[int]]]:
    """A face (a closed 9-gon), two ears, three whiskers and an eye dot; 0..255, y down."""
    cx = 128 + rng.integers(-20, 20)
    cy = 140 + rng.integers(-15, 15)
    r = 80 + rng.integers(-10, 10)
    face = [(cx + r * math.cos(a), cy + r * math.sin(a))
            for a in np.linspace(0, 2 * math.pi, 10)]
    ear_l = [(cx - r * 0.8, cy - r * 0.55), (cx - r * 0.6, cy - r * 1.35),
             (cx - r * 0.2, cy - r * 0.95)]
    ear_r = [(cx + r * 0.2, cy - r * 0.95), (cx + r * 0.6, cy - r * 1.35),
             (cx + r * 0.8, cy - r * 0.55)]
    whiskers = [[(cx - r * 0.15, cy + r * 0.2 + k * 8), (cx - r * 0.95, cy + r * 0.1 + k * 14)]
                for k in range(3)]
    eye = [(cx - r * 0.35, cy - r * 0.2)]
    out = []
    for stroke in [face, ear_l, ear_r, *whiskers, eye]:
        pts = np.clip(np.round(np.array(stroke) + rng.normal(0, 1.5, (len(stroke), 2))), 0, 255)
        out.append([pts[:, 0].astype(int).tolist(), pts[:, 1].astype(int).tolist()])
    return out


def to_stroke3(drawing: list[list[list[int]]]) -> np.ndarray:
    pts, lifted = [], []
    for xs, ys in drawing:
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            pts.append((x, y))
            lifted.append(1 if i == len(xs) - 1 else 0)
    p = np.array(pts)
    d = np.diff(np.vstack([[0, 0], p]), axis=0)
    return np.column_stack([d, lifted]).astype(np.int16)


def main() -> None:
    rng = np.random.default_rng(11)
    drawings = [cat(rng) for _ in range(6)]
    with (HERE / "quickdraw_cats.ndjson").open("w") as f:
        for k, d in enumerate(drawings):
            obj = {"word": "cat", "countrycode": ["US", "DE", "JP"][k % 3],
                   "timestamp": f"2017-03-{10 + k:02d} 0{k}:28:55.63775 UTC",
                   "recognized": k != 4, "key_id": str(5201136883597312 + 7919 * k),
                   "drawing": d}
            f.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def objects(ds):
        arr = np.empty(len(ds), dtype=object)
        for i, d in enumerate(ds):
            arr[i] = to_stroke3(d)
        return arr

    np.savez(HERE / "sketchrnn_cats.npz", train=objects(drawings[:3]),
             valid=objects(drawings[3:4]), test=objects(drawings[4:]))


if __name__ == "__main__":
    main()
