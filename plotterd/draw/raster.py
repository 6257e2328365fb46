"""Sparse, exact, differentiable rasteriser.

``render`` draws batches of primitives on white paper (1 = paper, 0 = full ink). Stroke i
puts ``a_i(n) = grey_i * exp(-d_i(n)^2 / sigma_i^2)`` on pixel n, with d_i the distance from
the pixel centre to the primitive's polyline (see :mod:`plotterd.draw.primitives`), and the
strokes are composed with soft-or, over or smoothmax (method.md, eq. 10 and D.3-D.7).

It is *sparse*: a stroke is evaluated only on the pixels within ``r_i = CUTOFF * sigma_i`` of
its polyline, where ``exp(-d^2/sigma^2) >= 1e-12``. Farther contributions, and their
gradients, are far below float32 resolution of an image in [0, 1] (a < 1e-12 moves a pixel
by < 1e-12, and 1 - 1e-12 == 1 in float32 and float64 rounding to 1e-12), so the image and
gradients equal the dense formula's (every stroke at every pixel) -- tests/draw prove it.

How: every stroke's polyline is cut into segments; each segment enumerates the pixels of an
oriented band around it (per column -- or per row for steep segments -- the rows within r of
the segment), giving flat (segment, pixel) pair lists built with vectorised torch ops and no
Python loop over strokes. A stroke with several segments keeps a pixel only in the pair of its
nearest segment, so every (stroke, pixel) pair occurs exactly once and the pair's distance is
the min over the stroke's segments. Pair values are scattered into the image with
``index_add`` (differentiable). Enumeration runs under ``no_grad``; it only picks pixels.

Colour: ``color`` (N, 3) is the ink colour, ``1 - color`` its darkness per channel. With
``channels=1`` a coloured stroke uses its luminance (0.299 r + 0.587 g + 0.114 b) as a grey ink
colour, so a yellow stroke draws light grey; with ``color=None`` ink is black.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from plotterd.draw.primitives import sample_curve
from plotterd.draw.strokes import KINDS
from plotterd.errors import ConfigError, InputError

__all__ = [
    "StrokeBatch",
    "render",
    "COMPOSITIONS",
    "CUTOFF",
    "A_MAX",
    "SIGMA2_MIN",
    "LUMA",
]

COMPOSITIONS = ("softor", "over", "smoothmax")
# exp(-CUTOFF^2) = 1e-12: beyond r = CUTOFF * sigma a stroke's intensity, and its gradient
# (a * 2 d / sigma^2, bounded by ~1e-11 / sigma), is below what float32 can show in the image
CUTOFF = math.sqrt(12.0 * math.log(10.0))
# intensities are clamped below 1 before log(1 - a) so full ink on a pixel centre stays finite
A_MAX = 1.0 - 1e-6
# sigma^2 floor, so a stroke whose width is learned to 0 vanishes instead of giving NaN
SIGMA2_MIN = 1e-10
LUMA = (0.299, 0.587, 0.114)
# enumeration margin in pixels: guards floor/ceil of the band edges against rounding
_MARGIN = 1e-3


@dataclass
class StrokeBatch:
    """N primitives of one kind in PIXEL coordinates (x = column, y = row, centres on ints)."""

    kind: str
    points: torch.Tensor  # (N, K, 2)
    sigma: torch.Tensor  # (N,) Gaussian sigma in pixels (0.54925 * width)
    grey: torch.Tensor | None = None  # (N,) ink strength in [0, 1]; None = 1
    color: torch.Tensor | None = None  # (N, 3) ink colour in [0, 1]; None = black


# --------------------------------------------------------------------------------------
# validation and preparation


def _validate(batches: list[StrokeBatch], composition: str, channels: int, tau: float) -> None:
    if composition not in COMPOSITIONS:
        raise ConfigError(
            "composition", f"unknown composition {composition!r} (known: {', '.join(COMPOSITIONS)})"
        )
    if channels not in (1, 3):
        raise ConfigError("channels", f"must be 1 or 3, got {channels!r}")
    if composition == "smoothmax" and not tau > 0:
        raise ConfigError("tau", f"smoothmax temperature must be > 0, got {tau!r}")
    for b in batches:
        if b.kind not in KINDS:
            raise InputError(f"unknown stroke kind {b.kind!r} (known: {', '.join(KINDS)})")
        n = b.points.shape[0] if b.points.ndim == 3 else -1
        if b.sigma.shape != (n,):
            raise InputError(f"{b.kind}: sigma must have shape ({n},), got {tuple(b.sigma.shape)}")
        if b.grey is not None and b.grey.shape != (n,):
            raise InputError(f"{b.kind}: grey must have shape ({n},), got {tuple(b.grey.shape)}")
        if b.color is not None and b.color.shape != (n, 3):
            raise InputError(
                f"{b.kind}: color must have shape ({n}, 3), got {tuple(b.color.shape)}"
            )


@dataclass
class _Prepared:
    verts: torch.Tensor  # (N, S, 2) polyline vertices (differentiable)
    sigma2: torch.Tensor  # (N,)
    grey: torch.Tensor | None  # (N,)
    ink: torch.Tensor | None  # (N, C) darkness 1 - colour per channel; None = black
    offset: int  # global index of stroke 0


def _prepare(batches, channels, segments, dtype, device) -> tuple[list[_Prepared], int]:
    out = []
    total = 0
    for b in batches:
        verts = sample_curve(b.kind, b.points.to(device, dtype), segments)
        n = verts.shape[0]
        sigma = b.sigma.to(device, dtype)
        sigma2 = (sigma * sigma).clamp_min(SIGMA2_MIN)
        grey = None if b.grey is None else b.grey.to(device, dtype)
        ink = None
        if b.color is not None:
            color = b.color.to(device, dtype)
            if channels == 1:
                luma = torch.tensor(LUMA, dtype=dtype, device=device)
                color = (color * luma).sum(-1, keepdim=True)
            ink = 1.0 - color
        out.append(_Prepared(verts, sigma2, grey, ink, total))
        total += n
    return out, total


# --------------------------------------------------------------------------------------
# pixel enumeration (no gradients: it only decides which pairs to evaluate)


def _segment_pixels(
    a: torch.Tensor, b: torch.Tensor, r: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """All pixels within r of segment a-b (and a few more), as (segment index, pixel index).

    Walks along the major axis u (columns for flat segments, rows for steep ones); for each
    u the minor-axis range is the intersection of two supersets of the capsule: the band
    |v - line(u)| <= r sqrt(1 + slope^2) around the infinite line, and the range of the
    segment's points whose u is within r of this u, widened by r.
    """
    dev = a.device
    m = a.shape[0]
    dx = b[:, 0] - a[:, 0]
    dy = b[:, 1] - a[:, 1]
    xmajor = dx.abs() >= dy.abs()
    au = torch.where(xmajor, a[:, 0], a[:, 1])
    av = torch.where(xmajor, a[:, 1], a[:, 0])
    bu = torch.where(xmajor, b[:, 0], b[:, 1])
    bv = torch.where(xmajor, b[:, 1], b[:, 0])
    usize = torch.where(xmajor, width, height).to(a.dtype)
    vsize = torch.where(xmajor, height, width).to(a.dtype)
    du = bu - au
    dv = bv - av
    rr = r + _MARGIN
    # clamp in float before the integer conversion so far-away strokes cannot overflow
    u0 = torch.minimum(torch.ceil(torch.minimum(au, bu) - rr).clamp_min(0), usize)
    u1 = torch.minimum(torch.floor(torch.maximum(au, bu) + rr), usize - 1).clamp_min(-1)
    ncol = (u1 - u0 + 1).clamp_min(0).long()
    ncols = int(ncol.sum())
    seg_c = torch.repeat_interleave(torch.arange(m, device=dev), ncol, output_size=ncols)
    start = torch.cumsum(ncol, 0) - ncol
    u = u0[seg_c] + (torch.arange(ncols, device=dev) - start[seg_c]).to(a.dtype)
    au_c, av_c, du_c, dv_c, rr_c = au[seg_c], av[seg_c], du[seg_c], dv[seg_c], rr[seg_c]
    flat = du_c == 0  # then dv == 0 too: a point
    du_safe = torch.where(flat, torch.ones_like(du_c), du_c)
    slope = torch.where(flat, torch.zeros_like(du_c), dv_c / du_safe)
    vline = av_c + (u - au_c) * slope
    half = rr_c * torch.sqrt(1.0 + slope * slope)
    ta = torch.where(flat, torch.zeros_like(u), (u - rr_c - au_c) / du_safe)
    tb = torch.where(flat, torch.ones_like(u), (u + rr_c - au_c) / du_safe)
    va = av_c + torch.minimum(ta, tb).clamp(0, 1) * dv_c
    vb = av_c + torch.maximum(ta, tb).clamp(0, 1) * dv_c
    vlo = torch.maximum(torch.minimum(va, vb) - rr_c, vline - half)
    vhi = torch.minimum(torch.maximum(va, vb) + rr_c, vline + half)
    vs = vsize[seg_c]
    v0 = torch.minimum(torch.ceil(vlo).clamp_min(0), vs)
    v1 = torch.minimum(torch.floor(vhi), vs - 1).clamp_min(-1)
    nrow = (v1 - v0 + 1).clamp_min(0).long()
    npairs = int(nrow.sum())
    col_p = torch.repeat_interleave(torch.arange(ncols, device=dev), nrow, output_size=npairs)
    startp = torch.cumsum(nrow, 0) - nrow
    v = v0.long()[col_p] + (torch.arange(npairs, device=dev) - startp[col_p])
    uu = u.long()[col_p]
    seg_p = seg_c[col_p]
    xm = xmajor[seg_p]
    pix = torch.where(xm, v * width + uu, uu * width + v)
    return seg_p, pix


def _seg_d2(px, py, ax, ay, bx, by):
    """Squared distance from (px, py) to segments a-b; zero-length segments act as points."""
    mx = bx - ax
    my = by - ay
    qx = px - ax
    qy = py - ay
    mm = mx * mx + my * my
    nz = mm > 0
    t = torch.where(nz, (qx * mx + qy * my) / torch.where(nz, mm, torch.ones_like(mm)), 0.0)
    t = t.clamp(0.0, 1.0)
    ex = qx - t * mx
    ey = qy - t * my
    return ex * ex + ey * ey


@dataclass
class _Pairs:
    stroke: torch.Tensor  # (P,) global stroke index
    local: torch.Tensor  # (P,) stroke index within its batch
    seg: torch.Tensor  # (P,) segment index within the stroke
    pix: torch.Tensor  # (P,) pixel index row * W + col


def _enumerate(prep: _Prepared, height: int, width: int) -> _Pairs:
    with torch.no_grad():
        verts = prep.verts.detach()
        n, s, _ = verts.shape
        nseg = max(s - 1, 1)
        if s == 1:
            a = verts[:, 0]
            b = a
        else:
            a = verts[:, :-1].reshape(-1, 2)
            b = verts[:, 1:].reshape(-1, 2)
        r = (CUTOFF * prep.sigma2.detach().sqrt()).repeat_interleave(nseg)
        segm, pix = _segment_pixels(a, b, r, height, width)
        local = torch.div(segm, nseg, rounding_mode="floor")
        seg = segm - local * nseg
        if nseg > 1 and pix.numel():
            # keep a pixel only for the stroke's nearest segment (first on ties): each
            # (stroke, pixel) pair then occurs once and carries the min over segments
            px = (pix % width).to(verts.dtype)
            py = torch.div(pix, width, rounding_mode="floor").to(verts.dtype)
            vx = verts[:, :, 0][local]  # (P, S)
            vy = verts[:, :, 1][local]
            best = None
            best_j = None
            for j in range(nseg):
                d2 = _seg_d2(px, py, vx[:, j], vy[:, j], vx[:, j + 1], vy[:, j + 1])
                if best is None:
                    best = d2
                    best_j = torch.zeros_like(seg)
                else:
                    closer = d2 < best
                    best = torch.where(closer, d2, best)
                    best_j = torch.where(closer, j, best_j)
            keep = best_j == seg
            local, seg, pix = local[keep], seg[keep], pix[keep]
        return _Pairs(local + prep.offset, local, seg, pix)


# --------------------------------------------------------------------------------------
# rendering


def _pair_values(prep: _Prepared, pairs: _Pairs, width: int):
    """Per pair intensity a (P,) and ink darkness (P, C) or None, differentiable."""
    verts = prep.verts
    n, s, _ = verts.shape
    dtype = verts.dtype
    px = (pairs.pix % width).to(dtype)
    py = torch.div(pairs.pix, width, rounding_mode="floor").to(dtype)
    if s == 1:
        pa = verts[:, 0][pairs.local]
        pb = pa
    else:
        flat = pairs.local * s + pairs.seg
        v = verts.reshape(-1, 2)
        pa = v[flat]
        pb = v[flat + 1]
    d2 = _seg_d2(px, py, pa[:, 0], pa[:, 1], pb[:, 0], pb[:, 1])
    a = torch.exp(-d2 / prep.sigma2[pairs.local])
    if prep.grey is not None:
        a = a * prep.grey[pairs.local]
    ink = None if prep.ink is None else prep.ink[pairs.local]
    return a, ink


def render(
    batches: list[StrokeBatch],
    height: int,
    width: int,
    *,
    composition: str = "softor",
    channels: int = 1,
    tau: float = 0.05,
    curve_segments: int = 10,
) -> torch.Tensor:
    """(1, channels, H, W) image of the strokes on WHITE paper (paper = 1, full ink = 0).

    Differentiable w.r.t. points, sigma, grey and color. Stroke order (for ``over``) is the
    order of ``batches``, then the index within a batch. Compositions, with
    ``k_ic = 1 - color_ic`` (1 for black ink) and ``a_i`` clamped to ``A_MAX`` inside logs
    and throughout ``over``:

    - ``softor``: ``image_c = prod_i (1 - a_i k_ic)``, as ``exp(sum log1p(-a_i k_ic))``.
    - ``over``: ``image_c = sum_i color_ic a_i prod_{j<i} (1 - a_j) + prod_j (1 - a_j)``.
    - ``smoothmax``: ``w = softmax_i(a_i / tau)`` over all strokes,
      ``image_c = 1 - sum_i w_i a_i k_ic``.

    The dtype and device are those of the first batch's points (float32 unless given).
    """
    height = int(height)
    width = int(width)
    if height < 1 or width < 1:
        raise InputError(f"canvas must be at least 1x1 pixels, got {width}x{height}")
    _validate(batches, composition, channels, tau)
    if batches:
        dtype = batches[0].points.dtype
        if not dtype.is_floating_point:
            dtype = torch.float32
        device = batches[0].points.device
    else:
        dtype, device = torch.float32, torch.device("cpu")
    preps, nstrokes = _prepare(batches, channels, curve_segments, dtype, device)
    for p, b in zip(preps, batches, strict=True):
        if p.verts.numel() and not bool(torch.isfinite(p.verts.detach()).all()):
            raise InputError(f"{b.kind}: stroke points must be finite")
        if p.sigma2.numel() and not bool(torch.isfinite(p.sigma2.detach()).all()):
            raise InputError(f"{b.kind}: sigma must be finite")
    hw = height * width
    pairs = [_enumerate(p, height, width) for p in preps]
    vals = [_pair_values(p, q, width) for p, q in zip(preps, pairs, strict=True)]
    pix = torch.cat([q.pix for q in pairs]) if pairs else torch.zeros(0, dtype=torch.long)
    a = torch.cat([v[0] for v in vals]) if vals else torch.zeros(0, dtype=dtype)
    if any(v[1] is not None for v in vals):
        ink = torch.cat(
            [
                v[1] if v[1] is not None else a.new_ones(v[0].shape[0], channels)
                for v in vals
            ]
        )
    else:
        ink = None

    if composition == "softor":
        img = _softor(a, ink, pix, hw, channels)
    elif composition == "over":
        img = _over(a, ink, pix, hw, channels)
    else:
        img = _smoothmax(a, ink, pix, hw, channels, nstrokes, tau)
    return img.t().reshape(1, channels, height, width)


def _expand_ink(a, ink, channels):
    """(P, C) per-channel ink intensity a * k."""
    if ink is None:
        return a[:, None].expand(-1, channels)
    return a[:, None] * ink.expand(-1, channels)


def _softor(a, ink, pix, hw, channels):
    ak = _expand_ink(a, ink, channels)
    logs = torch.log1p(-ak.clamp(max=A_MAX))
    acc = logs.new_zeros(hw, channels).index_add(0, pix, logs)
    return torch.exp(acc)


def _over(a, ink, pix, hw, channels):
    if ink is None:
        # black ink: sum_i 0 * ... + prod_j (1 - a_j), which is soft-or
        return _softor(a, None, pix, hw, channels)
    # the clamped a is used throughout so that sum_i a_i T_i + T_all stays exactly 1 - paper
    a = a.clamp(max=A_MAX)
    logs = torch.log1p(-a)
    total = logs.new_zeros(hw).index_add(0, pix, logs)
    # transmittance before each stroke: exclusive cumsum of log(1 - a) over the strokes
    # earlier at the same pixel; pairs are stroke-major, so a stable sort by pixel orders
    # each pixel's pairs by stroke. float64 keeps the running sum's cancellation exact.
    order = torch.sort(pix, stable=True).indices
    spix = pix[order]
    slog = logs[order].double()
    cs = torch.cumsum(slog, 0) - slog  # exclusive prefix over all pairs
    first = torch.ones_like(spix, dtype=torch.bool)
    first[1:] = spix[1:] != spix[:-1]
    group = torch.cumsum(first.long(), 0) - 1
    base = cs[first][group]
    excl = (cs - base).to(a.dtype)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    trans = torch.exp(excl)[inv]
    color = 1.0 - ink.expand(-1, channels)
    contrib = (a * trans)[:, None] * color
    img = contrib.new_zeros(hw, channels).index_add(0, pix, contrib)
    return img + torch.exp(total)[:, None]


def _smoothmax(a, ink, pix, hw, channels, nstrokes, tau):
    # coverage = sum_i softmax(a/tau)_i a_i over ALL strokes; absent strokes have a = 0 and
    # weight exp(0) each, so a pixel's denominator adds (nstrokes - present) * exp(0).
    if nstrokes == 0:
        return a.new_ones(hw, channels)
    z = a / tau
    with torch.no_grad():
        # per-pixel shift for a stable log-sum-exp (>= 0, the absent strokes' logit)
        shift = z.new_zeros(hw).scatter_reduce(0, pix, z.detach(), "amax", include_self=True)
        present = z.new_zeros(hw).index_add(0, pix, torch.ones_like(z))
    e = torch.exp(z - shift[pix])
    denom = e.new_zeros(hw).index_add(0, pix, e) + (nstrokes - present) * torch.exp(-shift)
    num = e.new_zeros(hw, channels).index_add(0, pix, _expand_ink(e * a, ink, channels))
    return 1.0 - num / denom[:, None]
