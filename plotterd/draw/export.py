"""A drawing job's outputs: strokes.json, drawing.svg, preview.png, loss.csv and loss.png."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

import cv2
import numpy as np

from plotterd import atomic
from plotterd.draw.primitives import CATMULL_ROM_EPS
from plotterd.draw.strokes import Canvas, StrokeGroup, Strokes
from plotterd.errors import InputError, PlotterdError

if TYPE_CHECKING:
    import torch

    from plotterd.draw.optimise import DrawResult

__all__ = ["OUTPUT_FILES", "catmull_rom_to_bezier", "strokes_to_svg", "write_outputs"]

# key in write_outputs' result -> file name in the output directory
OUTPUT_FILES = {
    "strokes": "strokes.json",
    "svg": "drawing.svg",
    "preview": "preview.png",
    "loss_csv": "loss.csv",
    "loss_png": "loss.png",
}


def catmull_rom_to_bezier(points: np.ndarray, eps: float = CATMULL_ROM_EPS) -> np.ndarray:
    """Exact cubic Bezier form of a centripetal Catmull-Rom curve, as sampled by
    plotterd.draw.primitives.sample_curve (same knots, same epsilon).

    (K, 2) control points -> (K - 3, 4, 2): one Bezier per span. A span P1 -> P2 of the
    Barry-Goldman pyramid is a cubic in t with end tangents
    m1 = (P1-P0)/(t1-t0) - (P2-P0)/(t2-t0) + (P2-P1)/(t2-t1) and the same one step on;
    over u = (t - t1)/(t2 - t1) its Bezier handles are P1 + m1 (t2-t1)/3 and
    P2 - m2 (t2-t1)/3 (Yuksel et al., "Parameterization and applications of Catmull-Rom
    curves", 2011).
    """
    p = np.asarray(points, dtype=np.float64)
    out = []
    for j in range(len(p) - 3):
        q = p[j : j + 4]
        dt = (np.sum(np.diff(q, axis=0) ** 2, axis=1) + eps) ** 0.25
        t0, t1, t2, t3 = 0.0, dt[0], dt[0] + dt[1], dt[0] + dt[1] + dt[2]
        m1 = (q[1] - q[0]) / (t1 - t0) - (q[2] - q[0]) / (t2 - t0) + (q[2] - q[1]) / (t2 - t1)
        m2 = (q[2] - q[1]) / (t2 - t1) - (q[3] - q[1]) / (t3 - t1) + (q[3] - q[2]) / (t3 - t2)
        h = (t2 - t1) / 3.0
        out.append([q[1], q[1] + m1 * h, q[2] - m2 * h, q[2]])
    return np.asarray(out).reshape(-1, 4, 2)


def _f(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".") or "0"


def _xy(p: np.ndarray) -> str:
    return f"{_f(p[0])},{_f(p[1])}"


def _path_d(kind: str, pts: np.ndarray) -> str:
    if kind in ("line", "polyline"):
        return "M" + " L".join(_xy(p) for p in pts)
    if kind == "quadratic":
        return f"M{_xy(pts[0])} Q{_xy(pts[1])} {_xy(pts[2])}"
    if kind == "cubic":
        return f"M{_xy(pts[0])} C{_xy(pts[1])} {_xy(pts[2])} {_xy(pts[3])}"
    if kind == "catmull_rom":
        spans = catmull_rom_to_bezier(pts)
        d = f"M{_xy(spans[0][0])}"
        for b in spans:
            d += f" C{_xy(b[1])} {_xy(b[2])} {_xy(b[3])}"
        return d
    raise InputError(f"cannot write stroke kind {kind!r} as SVG")


def _paint(group: StrokeGroup, i: int) -> tuple[str, float]:
    if group.color is not None:
        r, g, b = (int(round(float(np.clip(c, 0, 1)) * 255)) for c in group.color[i])
        colour = f"rgb({r},{g},{b})"
    else:
        colour = "black"
    return colour, float(group.intensity()[i])


def strokes_to_svg(strokes: Strokes) -> str:
    """SVG in pixel units of the working canvas (viewBox puts pixel centres on integers),
    one element per stroke: paths for lines and curves (Beziers as true Beziers,
    Catmull-Rom converted exactly), circles for points; width = stroke width in pixels,
    opacity = grey level. No background, so it is only the pen's marks."""
    c: Canvas = strokes.canvas
    paper = strokes.metadata.get("page_mm")
    # a drawing sized for paper is that size: 1 px = 1 nib, so its lines are the pen's width
    size = (f'width="{_f(paper["width_mm"])}mm" height="{_f(paper["height_mm"])}mm"' if paper
            else f'width="{c.width}" height="{c.height}"')
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" {size} '
        f'viewBox="-0.5 -0.5 {c.width} {c.height}">',
    ]
    for gi, group in enumerate(strokes.groups):
        pix = c.world_to_pixel(group.points)
        out.append(
            f'<g id="group{gi}" class={quoteattr(group.kind)} fill="none" '
            'stroke-linecap="round" stroke-linejoin="round">'
        )
        for i in range(len(group)):
            colour, opacity = _paint(group, i)
            op = "" if opacity >= 1.0 else f' opacity="{_f(opacity)}"'
            w = float(group.width_px[i])
            if group.kind == "point":
                x, y = pix[i, 0]
                out.append(
                    f'<circle cx="{_f(x)}" cy="{_f(y)}" r="{_f(w / 2)}" fill="{colour}"{op}/>'
                )
            else:
                out.append(
                    f'<path d="{_path_d(group.kind, pix[i])}" stroke="{colour}" '
                    f'stroke-width="{_f(w)}"{op}/>'
                )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _to_u8(img: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) in [0, 1] -> (H, W, 3) uint8 BGR for OpenCV."""
    a = img.detach().cpu().float().clamp(0, 1)[0].numpy().transpose(1, 2, 0)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    else:
        a = a[:, :, ::-1]
    return np.ascontiguousarray((a * 255.0 + 0.5).astype(np.uint8))


def preview_image(target: torch.Tensor, rendering: torch.Tensor) -> np.ndarray:
    """Target and final rendering side by side (BGR uint8), enlarged by an integer factor
    to at least 256 px high so small working canvases stay visible."""
    t, r = _to_u8(target), _to_u8(rendering)
    gap = np.full((t.shape[0], max(2, t.shape[1] // 50), 3), 128, np.uint8)
    img = np.concatenate([t, gap, r], axis=1)
    k = max(1, -(-256 // img.shape[0]))
    if k > 1:
        img = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
    return img


PAPER_PREVIEW_PX_PER_MM = 10.0  # 254 dpi: printed at that resolution, the preview is life size


def paper_preview(strokes: Strokes, target: torch.Tensor) -> np.ndarray:
    """The photo and the drawing as the pen lays it on paper (the pen model's renderer at
    10 px/mm, the nib's true width, saturating ink), side by side, BGR uint8."""
    from plotterd.pen import DrawingBox, pen_from_dict

    pen = pen_from_dict(strokes.metadata["pen"])
    box = DrawingBox(**strokes.metadata["page_mm"])
    page = pen.render(strokes_polylines_mm(strokes), box, PAPER_PREVIEW_PX_PER_MM)
    photo = _to_u8(target)
    photo = cv2.resize(photo, (page.shape[1], page.shape[0]), interpolation=cv2.INTER_AREA)
    drawn = np.repeat((page * 255.0 + 0.5).astype(np.uint8)[:, :, None], 3, axis=2)
    gap = np.full((page.shape[0], 20, 3), 128, np.uint8)
    return np.concatenate([photo, gap, drawn], axis=1)


def strokes_polylines_mm(strokes: Strokes) -> list[np.ndarray]:
    """Every stroke's control polyline in mm within the drawing's box (polylines and lines:
    exactly their geometry), for strokes with a page."""
    nib = strokes.metadata["pen"]["nib_mm"]
    return [(strokes.canvas.world_to_pixel(line) + 0.5) * nib
            for g in strokes.groups for line in g.points]


def _write_png(path: Path, img: np.ndarray, dpi: float | None = None) -> None:
    if dpi is not None:  # PIL writes the pHYs chunk, so printing keeps the true scale
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img[:, :, ::-1]).save(buf, format="PNG", dpi=(dpi, dpi))
        atomic.write_bytes(path, buf.getvalue())
        return
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise InputError(f"{path}: PNG encoding failed")
    atomic.write_bytes(path, buf.tobytes())


def _loss_plot(path: Path, losses: list[float], title: str) -> None:
    # the object API with an Agg canvas: no pyplot global state, safe in worker threads
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if losses:
        ax.plot(np.arange(len(losses)), losses, lw=1.2)
        if min(losses) > 0:
            ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_outputs(result: DrawResult, outdir: str | Path) -> dict[str, Path]:
    """Write the job's outputs into ``outdir`` (created); returns {key: path} with the keys
    of OUTPUT_FILES: strokes, svg, preview, loss_csv, loss_png. Each file is written
    atomically (temporary name, then rename)."""
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{outdir}: cannot create output directory: {e}") from e
    paths = {k: outdir / v for k, v in OUTPUT_FILES.items()}
    try:
        _write_all(result, paths)
    except OSError as e:
        raise PlotterdError(f"{outdir}: cannot write the drawing's outputs: {e}") from e
    return paths


def _write_all(result: DrawResult, paths: dict[str, Path]) -> None:
    result.strokes.save(paths["strokes"])
    atomic.write_text(paths["svg"], strokes_to_svg(result.strokes))
    if "page_mm" in result.strokes.metadata and "pen" in result.strokes.metadata:
        _write_png(paths["preview"], paper_preview(result.strokes, result.target),
                   dpi=PAPER_PREVIEW_PX_PER_MM * 25.4)
    else:
        _write_png(paths["preview"], preview_image(result.target, result.rendering))
    times = list(result.times) + [float("nan")] * (len(result.losses) - len(result.times))
    with atomic.atomic_path(paths["loss_csv"]) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iteration", "loss", "elapsed_s"])
        for i, (loss, t) in enumerate(zip(result.losses, times, strict=True)):
            w.writerow([i, repr(float(loss)), f"{t:.4f}"])
    meta = result.strokes.metadata
    title = f"{meta.get('loss', 'loss')}, seed {meta.get('seed')}"
    _loss_plot(paths["loss_png"], result.losses, title)
