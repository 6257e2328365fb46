"""The paper test: plotterd's drawing against real peers, drawn by one pen, seen at arm's length.

Every method's strokes are placed in the same box (150 mm on the long side, the photo's
aspect), drawn by plotterd's pen model (0.3 mm round nib at exactly that width, 10 px/mm,
4x supersampled, round caps, saturating ink) and compared with the photo at 2.5 px/mm:

- HaarPSI (piq, higher is better), MS-SSIM (piq), tone SSIM after a 1.5 mm Gaussian blur of
  both, mean tone error |mean grey page - mean grey photo|;
- ink length (mm; "need" is darkness x area / nib), pen lifts, plot time (plotterd's motion
  model: 40 mm/s drawing, 80 mm/s travel, 0.3 s per lift, grbl-servo's acceleration and
  junction deviation), optimisation time (wall seconds of the chosen setting).

Methods: ``plotterd`` (each ``--pipeline``, default plotterd's DEFAULT_PIPELINE), ``hatched``
(pip, 3 levels, best of pitch 1.2/1.6/2.2 nib), ``tsp`` (tspart stipples + OR-Tools tour, best
of density gamma 1/2), ``greedy`` (darkest-line squiggles, best of two segment lengths).
Each peer gets its best setting per photo by HaarPSI.

    .venv/bin/python -m pip install -e '.[bench]'     # hatched, tspart, ortools, piq
    .venv/bin/python benchmarks/paper.py --quick --images camera   # smoke run
    .venv/bin/python benchmarks/paper.py                           # everything
    .venv/bin/python benchmarks/paper.py --methods hatched,tsp,greedy --images camera,text
    .venv/bin/python benchmarks/paper.py --methods plotterd --pipeline lines-blurmse \\
        --under-load

Writes benchmarks/out/paper-sheet.png (photo + every method at arm's length, labelled with
HaarPSI), benchmarks/out/paper/<image>-<method>.png (the pages at 10 px/mm) and
benchmarks/out/paper-results.json. No network is needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from paper_peers import greedy, hatching, plotterd_method, tsp  # noqa: E402
from paper_peers.paper_test import Photo, evaluate, load_grey, load_photo, same_picture  # noqa: E402,I001

IMAGE_DIRS = (ROOT.parent / "shared" / "data" / "images", ROOT / "samples")
METHODS = ("plotterd", "hatched", "tsp", "greedy")
COLUMNS = [  # (key, header, format)
    ("haarpsi", "HaarPSI", "{:.3f}"), ("msssim", "MS-SSIM", "{:.3f}"),
    ("tone_ssim", "toneSSIM", "{:.3f}"), ("tone_error", "tone err", "{:.3f}"),
    ("mean_grey_page", "grey pg", "{:.3f}"), ("mean_grey_photo", "grey ph", "{:.3f}"),
    ("ink_mm", "ink mm", "{:.0f}"), ("ink_needed_mm", "need mm", "{:.0f}"),
    ("pen_lifts", "lifts", "{:d}"), ("plot_min", "plot min", "{:.1f}"),
    ("opt_s", "opt s", "{:.1f}"),
]


def find_images(wanted: list[str] | None) -> list[tuple[str, Path]]:
    """The shared photos, then samples/*.png that are not copies of one of them."""
    found: list[tuple[str, Path]] = []
    greys: list[np.ndarray] = []
    for d in IMAGE_DIRS:
        for p in sorted(d.glob("*.png")):
            g = load_grey(p)
            if any(same_picture(g, o) for o in greys):
                print(f"skip {p.relative_to(ROOT.parent)}: the same picture as one above",
                      file=sys.stderr)
                continue
            name = p.stem if all(n != p.stem for n, _ in found) else f"{d.name}-{p.stem}"
            found.append((name, p))
            greys.append(g)
    if not wanted:
        return found
    out = []
    for w in wanted:
        hit = [f for f in found if f[0] == w] or ([(Path(w).stem, Path(w))]
                                                  if Path(w).is_file() else [])
        if not hit:
            raise SystemExit(f"--images: no image {w!r} (known: {', '.join(n for n, _ in found)})")
        out.extend(hit)
    return out


def run_method(method: str, arg, photo: Photo, quick: bool, under_load: bool):
    """The best (by HaarPSI) of the method's settings: (label, result, tried)."""
    if method == "plotterd":
        drawing = plotterd_method.draw(photo, arg, quick=quick, under_load=under_load)
        return f"plotterd:{arg}", evaluate(drawing, photo), [drawing.setting]
    peer = {"hatched": hatching, "tsp": tsp, "greedy": greedy}[method]
    best, tried = None, []
    for setting in peer.settings(quick):
        try:
            if peer is tsp:
                drawing = tsp.draw(photo, setting, quick)
            else:
                drawing = peer.draw(photo, setting)
        except hatching.HatchedFailed as e:
            print(f"  {method} {setting}: failed ({str(e).splitlines()[0][:90]}); skipped",
                  file=sys.stderr)
            tried.append(f"{setting}: failed")
            continue
        result = evaluate(drawing, photo)
        f = result["figures"]
        tried.append(f"{drawing.setting}: {f['haarpsi']:.3f}")
        print(f"  {method} {drawing.setting}: HaarPSI {f['haarpsi']:.3f} "
              f"({drawing.opt_s:.1f} s)", file=sys.stderr)
        if best is None or f["haarpsi"] > best["figures"]["haarpsi"]:
            best = result
    return method, best, tried


def table(rows: list[tuple[str, str, dict]]) -> str:
    head = f"{'image':<10} {'method':<24} " + " ".join(f"{h:>8}" for _, h, _ in COLUMNS)
    lines = [head, "-" * len(head)]
    for image, method, f in rows:
        cells = []
        for key, _, fmt in COLUMNS:
            v = f.get(key)
            cells.append(f"{'-' if v is None else fmt.format(v):>8}")
        lines.append(f"{image:<10} {method:<24} " + " ".join(cells))
        if "opt_s_under_load" in f:
            lines.append(f"{'':<10} {'  under load (1 core)':<24} opt {f['opt_s']:.1f} s quiet,"
                         f" {f['opt_s_under_load']:.1f} s loaded "
                         f"(x{f['load_slowdown']:.2f})")
        lines.append(f"{'':<10} {'  setting':<24} {f['setting']}")
    return "\n".join(lines)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def sheet(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], path: Path) -> None:
    """One row per image: the photo, then each method, at arm's length (2.5 px/mm)."""
    tile, label, gap = 375, 22, 6
    cols = max(len(r[1]) for r in rows)
    heights = [max(v.shape[0] for _, v in r[1]) for r in rows]
    img = Image.new("L", (cols * (tile + gap) + gap,
                          sum(h + label + gap for h in heights) + gap), 200)
    pen = ImageDraw.Draw(img)
    font = _font(15)
    y = gap
    for (_, cells), h in zip(rows, heights, strict=True):
        for i, (text, view) in enumerate(cells):
            x = gap + i * (tile + gap)
            pen.rectangle([x, y, x + tile - 1, y + label - 2], fill=255)
            pen.text((x + 4, y + 3), text, fill=0, font=font)
            tile_img = Image.fromarray(np.round(np.clip(view, 0, 1) * 255).astype(np.uint8))
            img.paste(tile_img, (x + (tile - view.shape[1]) // 2, y + label))
        y += h + label + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", action="append", default=None,
                    help="image names (camera, text, ...) or paths; comma-separated or repeated")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--pipeline", action="append", default=None,
                    help="plotterd pipeline(s) to run (repeatable; default: DEFAULT_PIPELINE)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: one setting per peer, few stipples, <= 30 iterations")
    ap.add_argument("--under-load", action="store_true",
                    help="also time plotterd's optimisation with one core kept busy")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    args = ap.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        ap.error(f"--methods: unknown {', '.join(bad)} (known: {', '.join(METHODS)})")
    if args.images:
        args.images = [w.strip() for a in args.images for w in a.split(",") if w.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    pipelines = args.pipeline or [plotterd_method.default_pipeline()]
    jobs = []
    for m in args.methods:
        if m == "plotterd":
            jobs.extend(("plotterd", p) for p in pipelines)
            continue
        why = {"hatched": hatching, "tsp": tsp, "greedy": greedy}[m].available()
        if why:
            print(f"skip {m}: {why}", file=sys.stderr)
            continue
        jobs.append((m, None))
    images = find_images(args.images)
    renders = args.out / "paper"
    rows, sheet_rows, results = [], [], []
    t_start = time.perf_counter()
    for name, path in images:
        photo = load_photo(path, args.out / "photos", name)
        print(f"{name}: box {photo.box.width_mm:g} x {photo.box.height_mm:g} mm, "
              f"ink needed {photo.ink_needed_mm():.0f} mm", file=sys.stderr)
        cells = [(f"photo {name}", photo.at_arms_length())]
        image_rows = []
        for method, arg in jobs:
            label, best, tried = run_method(method, arg, photo, args.quick, args.under_load)
            if best is None:
                print(f"  {label}: every setting failed", file=sys.stderr)
                continue
            f = best["figures"]
            f["tried"] = tried
            image_rows.append((name, label, f))
            results.append({"image": name, "method": label, **f})
            cells.append((f"{label}  HaarPSI {f['haarpsi']:.3f}", best["view"]))
            renders.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(best["page"] * 255).astype(np.uint8)).save(
                renders / f"{name}-{label.replace(':', '-')}.png")
        print(table(image_rows), flush=True)
        rows.extend(image_rows)
        sheet_rows.append((name, cells))
    if not rows:
        print("nothing was run", file=sys.stderr)
        return 1
    print("\nall images\n" + table(rows))
    sheet(sheet_rows, args.out / "paper-sheet.png")
    (args.out / "paper-results.json").write_text(json.dumps(
        {"quick": args.quick, "results": results,
         "wall_s": time.perf_counter() - t_start}, indent=2, default=float) + "\n")
    print(f"\nsheet: {args.out / 'paper-sheet.png'}; results: {args.out / 'paper-results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
