"""The dense formula: every stroke evaluated at every pixel (method.md), for tests and benchmarks.

Written straight from the definitions, independently of the sparse code paths in
plotterd.draw.raster (it shares only the curve sampler and the documented constants).
Memory is O(strokes x pixels): use small canvases.
"""

from __future__ import annotations

import torch

from plotterd.draw.primitives import sample_curve
from plotterd.draw.raster import A_MAX, LUMA, SIGMA2_MIN, StrokeBatch


def _seg_dist2(p, s, e):
    """Squared distance from points p (..., 2) to segments s-e (..., 2); eq. 4 of the paper.

    A zero-length segment is its point (t = 0), with no 0/0 in value or gradient.
    """
    mx, my = e[..., 0] - s[..., 0], e[..., 1] - s[..., 1]
    qx, qy = p[..., 0] - s[..., 0], p[..., 1] - s[..., 1]
    mm = mx * mx + my * my
    nz = mm > 0
    t = (qx * mx + qy * my) / torch.where(nz, mm, torch.ones_like(mm))
    t = torch.where(nz, t, torch.zeros_like(t)).clamp(0.0, 1.0)
    ex, ey = qx - t * mx, qy - t * my
    return ex * ex + ey * ey


def _dist2(verts: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(N, S, 2) polylines, (HW, 2) pixel centres -> (N, HW) squared distance to the polyline.

    The min over segments is not differentiable where two segments tie; the convention (as in
    plotterd's rasteriser) is that the FIRST nearest segment carries the gradient. Ties are
    real in degenerate strokes (coincident control points), where the choice changes which
    control point receives the gradient.
    """
    p = grid[None]  # (1, HW, 2)
    if verts.shape[1] == 1:
        return _seg_dist2(p, verts[:, :1], verts[:, :1])
    with torch.no_grad():
        best, best_j = None, None
        for j in range(verts.shape[1] - 1):
            d2 = _seg_dist2(p, verts[:, j, None], verts[:, j + 1, None])
            if best is None:
                best, best_j = d2, torch.zeros(d2.shape, dtype=torch.long, device=d2.device)
            else:
                closer = d2 < best
                best = torch.where(closer, d2, best)
                best_j = torch.where(closer, j, best_j)
    rows = torch.arange(verts.shape[0], device=verts.device)[:, None]
    return _seg_dist2(p, verts[rows, best_j], verts[rows, best_j + 1])


def render_dense(
    batches: list[StrokeBatch],
    height: int,
    width: int,
    *,
    composition: str = "softor",
    channels: int = 1,
    tau: float = 0.05,
    curve_segments: int = 10,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Same contract as plotterd.draw.raster.render, computed densely (optionally in dtype)."""
    dtype = dtype or batches[0].points.dtype
    device = batches[0].points.device
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)
    inten, inks = [], []
    for b in batches:
        verts = sample_curve(b.kind, b.points.to(dtype), curve_segments)
        sigma2 = (b.sigma.to(dtype) ** 2).clamp_min(SIGMA2_MIN)
        a = torch.exp(-_dist2(verts, grid) / sigma2[:, None])  # (N, HW)
        if b.grey is not None:
            a = a * b.grey.to(dtype)[:, None]
        if b.color is None:
            color = torch.zeros(len(a), channels, dtype=dtype, device=device)
        else:
            color = b.color.to(dtype)
            if channels == 1:
                color = (color * torch.tensor(LUMA, dtype=dtype, device=device)).sum(
                    -1, keepdim=True
                )
        inten.append(a)
        inks.append(color)
    a = torch.cat(inten)  # (N, HW), stroke order
    color = torch.cat(inks)  # (N, C)
    if composition == "softor":
        ak = a[:, None, :] * (1.0 - color)[:, :, None]  # (N, C, HW)
        img = torch.exp(torch.log1p(-ak.clamp(max=A_MAX)).sum(0))
    elif composition == "over":
        a = a.clamp(max=A_MAX)
        logs = torch.log1p(-a)
        trans = torch.exp(torch.cumsum(logs, 0) - logs)  # prod_{j<i} (1 - a_j)
        img = (color[:, :, None] * (a * trans)[:, None, :]).sum(0) + torch.exp(logs.sum(0))
    elif composition == "smoothmax":
        w = torch.softmax(a / tau, dim=0)
        img = 1.0 - ((w * a)[:, None, :] * (1.0 - color)[:, :, None]).sum(0)
    else:
        raise ValueError(composition)
    return img.reshape(1, channels, height, width)
