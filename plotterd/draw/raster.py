"""Sparse, exact, differentiable rasteriser.

``render`` draws batches of primitives on white paper (1 = paper, 0 = full ink). Stroke i
puts ``a_i(n) = grey_i * exp(-d_i(n)^2 / sigma_i^2)`` on pixel n, with d_i the distance from
the pixel centre to the primitive's polyline (see :mod:`plotterd.draw.primitives`), and the
strokes are composed with soft-or, over or smoothmax (method.md, eq. 10 and D.3-D.7).

It is *sparse* and *exact*: a stroke is evaluated only on the pixels within
``r_i = CUTOFF * sigma_i`` of its polyline, beyond which ``exp(-d^2/sigma^2) < 1e-12``.
A factor (1 - a) with a < 1e-12 rounds to 1 in float32 (whose spacing just below 1 is 6e-8),
so the omitted contributions cannot change the image; their gradient terms
(2 d a / sigma^2 per pixel) are just as negligible. tests/draw show the sparse image and
gradients equal the dense formula's (every stroke at every pixel), to 1e-6 / 1e-4 relative
in float32 and 1e-10 / 1e-8 in float64. Cost grows with the inked area, not strokes x pixels.

How: every stroke's polyline is cut into segments; each segment enumerates the pixels of an
oriented band around it (per column -- or per row for steep segments -- the rows within r of
the segment, not its bounding box), giving flat (segment, pixel) pair lists built with
vectorised torch ops and no Python loop over strokes. A stroke with several segments keeps a
pixel only in the pair of its nearest segment (the first on ties), found by sorting the
(stroke, pixel) keys, so every (stroke, pixel) pair occurs once and carries the min over the
stroke's segments. Enumeration runs under ``no_grad``: it only picks pixels. The pair
intensities have a hand-written backward (one autograd node, few temporaries), and pair
values reach the image through 1-D ``index_add`` (differentiable). Works on any device the
inputs are on (pure torch ops); on CPU the output is deterministic.

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
# exp(-CUTOFF^2) = 1e-12 (CUTOFF = 5.26): beyond r = CUTOFF * sigma a stroke's intensity and
# its gradient are invisible in a float32 image (see the module docstring)
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
        out.append(_Prepared(verts, sigma2, grey, ink))
        total += n
    return out, total


# --------------------------------------------------------------------------------------
# pixel enumeration (no gradients: it only decides which pairs to evaluate)


def _segment_pixels(
    a: torch.Tensor, b: torch.Tensor, r: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pixels within r of segment a-b (and a few more): (segment index, pixel index) pairs,
    and the number of pairs of each segment.

    Walks along the major axis u (columns for flat segments, rows for steep ones); for each
    u the minor-axis range is the intersection of two supersets of the capsule: the band
    |v - line(u)| <= r sqrt(1 + slope^2) around the infinite line, and the range of the
    segment's points whose u is within r of this u, widened by r. Pairs come out grouped by
    segment, in segment order.
    """
    dev = a.device
    m = a.shape[0]
    d = b - a
    xmajor = d[:, 0].abs() >= d[:, 1].abs()
    au = torch.where(xmajor, a[:, 0], a[:, 1])
    av = torch.where(xmajor, a[:, 1], a[:, 0])
    bu = torch.where(xmajor, b[:, 0], b[:, 1])
    du = torch.where(xmajor, d[:, 0], d[:, 1])
    dv = torch.where(xmajor, d[:, 1], d[:, 0])
    usize = torch.where(xmajor, width, height).to(a.dtype)
    vmax = torch.where(xmajor, height - 1, width - 1).to(a.dtype)
    # |dv| <= |du|, so du == 0 means a point: any t gives the same v, and slope 0 is right
    inv_du = torch.where(du == 0, 0.0, 1.0 / torch.where(du == 0, 1.0, du))
    slope = dv * inv_du
    rr = r + _MARGIN
    half = rr * torch.sqrt(1.0 + slope * slope)
    # clamp in float before the integer conversion so far-away strokes cannot overflow
    u0 = torch.minimum(torch.ceil(torch.minimum(au, bu) - rr).clamp_min(0), usize)
    u1 = torch.minimum(torch.floor(torch.maximum(au, bu) + rr), usize - 1).clamp_min(-1)
    ncol = (u1 - u0 + 1).clamp_min(0).long()
    ncols = int(ncol.sum())
    seg_c = torch.repeat_interleave(torch.arange(m, device=dev), ncol, output_size=ncols)
    start = torch.cumsum(ncol, 0) - ncol
    k = torch.arange(ncols, device=dev) - start.index_select(0, seg_c)  # column in segment
    # every per-segment quantity the columns need, as 1-D gathers
    cols = (u0 - au, av, dv, inv_du, slope, half, rr, vmax, u0)
    x, av_c, dv_c, inv_c, slope_c, half_c, rr_c, vmax_c, u0_c = _gather(cols, seg_c, len(cols))
    x = x + k.to(a.dtype)  # u - au
    ta = ((x - rr_c) * inv_c).clamp(0, 1)
    tb = ((x + rr_c) * inv_c).clamp(0, 1)
    va = av_c + ta * dv_c
    vb = av_c + tb * dv_c
    vline = av_c + x * slope_c
    vlo = torch.maximum(torch.minimum(va, vb) - rr_c, vline - half_c)
    vhi = torch.minimum(torch.maximum(va, vb) + rr_c, vline + half_c)
    v0 = torch.minimum(torch.ceil(vlo).clamp_min(0), vmax_c + 1)
    v1 = torch.minimum(torch.floor(vhi), vmax_c).clamp_min(-1)
    nrow = (v1 - v0 + 1).clamp_min(0).long()
    npairs = int(nrow.sum())
    # pixel index = base + k * stride along the column (stride W when v is the row)
    u = u0_c.long() + k
    xm = xmajor.index_select(0, seg_c)
    v0 = v0.long()
    stride = torch.where(xm, width, 1)
    startp = torch.cumsum(nrow, 0) - nrow
    base = torch.where(xm, v0 * width + u, u * width + v0) - startp * stride
    col_p = torch.repeat_interleave(torch.arange(ncols, device=dev), nrow, output_size=npairs)
    # 1-D index_select: much faster than advanced indexing or 2-D gathers on CPU
    base, stride, seg_p = (x.index_select(0, col_p) for x in (base, stride, seg_c))
    counts = torch.zeros(m, dtype=nrow.dtype, device=dev).index_add_(0, seg_c, nrow)
    return seg_p, base + torch.arange(npairs, device=dev) * stride, counts


def _segment_table(verts: torch.Tensor, sigma2: torch.Tensor, grey: torch.Tensor | None):
    """Per segment (M = N * nseg columns): rows ax, ay, mx, my, m.m (1 if m = 0), sigma2, grey.

    Everything a pair needs that does not depend on its pixel, so a pair gathers one row.
    A point is a zero-length segment. (Divisions rather than multiplications by inverses
    keep the float32 rounding that of the plain formula.)
    """
    n, s, _ = verts.shape
    nseg = max(s - 1, 1)
    if s == 1:
        a = verts[:, 0]
        m = torch.zeros_like(a)
    else:
        a = verts[:, :-1].reshape(-1, 2)
        m = verts[:, 1:].reshape(-1, 2) - a
    mm = (m * m).sum(1)
    # m = 0 makes (p - a).m = 0, so any nonzero divisor gives t = 0: the point distance
    mm = torch.where(mm > 0, mm, 1.0)
    cols = [a[:, 0], a[:, 1], m[:, 0], m[:, 1], mm, sigma2.repeat_interleave(nseg)]
    if grey is not None:
        cols.append(grey.repeat_interleave(nseg))
    return torch.stack(cols, 0)  # (K, M): each quantity contiguous for 1-D gathers


def _gather(table, idx: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The first k table rows at idx, as 1-D tensors (1-D index_select is the fast path)."""
    return [table[i].index_select(0, idx) for i in range(k)]


def _pair_geometry(rows: list[torch.Tensor], px: torch.Tensor, py: torch.Tensor):
    """Squared distance from pixel (px, py) to its pair's segment (gathered table rows).

    t = clamp((p - a).m / m.m, 0, 1) (method.md eq. 4); a zero-length segment has m = 0 and
    m.m stored as 1, so t = 0 and the distance is the point distance, with no 0/0 anywhere.
    Returns d2, t, ex, ey with e = p - a - t m.
    """
    ax, ay, mx, my, mm = rows[:5]
    qx = px - ax
    qy = py - ay
    t = ((qx * mx + qy * my) / mm).clamp_(0.0, 1.0)
    ex = qx - t * mx
    ey = qy - t * my
    return ex * ex + ey * ey, t, ex, ey


@dataclass
class _Pairs:
    seg: torch.Tensor  # (P,) segment index (stroke * nseg + segment) within its batch
    stroke: torch.Tensor  # (P,) stroke index within its batch
    pix: torch.Tensor  # (P,) pixel index row * W + col
    px: torch.Tensor  # (P,) pixel centre x (column)
    py: torch.Tensor  # (P,) pixel centre y (row)
    counts: torch.Tensor | None  # (M,) pairs per segment when pairs are in segment order


def _pixel_xy(pix: torch.Tensor, width: int, dtype):
    row = torch.div(pix, width, rounding_mode="floor")
    return (pix - row * width).to(dtype), row.to(dtype)


def _enumerate(prep: _Prepared, table: torch.Tensor, height: int, width: int) -> _Pairs:
    with torch.no_grad():
        verts = prep.verts.detach()
        n, s, _ = verts.shape
        nseg = max(s - 1, 1)
        a = table[0:2].t()
        b = a + table[2:4].t()
        r = CUTOFF * prep.sigma2.detach().sqrt().repeat_interleave(nseg)
        seg, pix, counts = _segment_pixels(a, b, r, height, width)
        px, py = _pixel_xy(pix, width, verts.dtype)
        if nseg == 1:
            return _Pairs(seg, seg, pix, px, py, counts)
        stroke = torch.div(seg, nseg, rounding_mode="floor")
        if pix.numel():
            # A pixel near several segments of one stroke is listed once per segment: keep
            # only its nearest segment (the first on ties, as the dense reference does), so
            # every (stroke, pixel) pair occurs once and carries the min over segments.
            # The nearest segment lists the pixel whenever it is within the cutoff.
            d2 = _pair_geometry(_gather(table, seg, 5), px, py)[0]
            key = stroke * (height * width) + pix
            if n * height * width < 2**31:
                key = key.int()  # sorts faster
            key, order = torch.sort(key, stable=True)  # stable: segment order within a key
            d2 = d2.index_select(0, order)
            first = torch.ones_like(key, dtype=torch.bool)
            first[1:] = key[1:] != key[:-1]
            group = torch.cumsum(first, 0) - 1
            gmin = torch.full((int(group[-1]) + 1,), math.inf, dtype=d2.dtype, device=d2.device)
            gmin = gmin.scatter_reduce(0, group, d2, "amin")
            is_min = d2 == gmin.index_select(0, group)
            nmin = torch.cumsum(is_min, 0)
            before = (nmin - is_min.long())[first]  # is_min count before each group
            keep = is_min & (nmin - before.index_select(0, group) == 1)
            order = order[keep]
            seg, stroke, pix, px, py = (
                x.index_select(0, order) for x in (seg, stroke, pix, px, py)
            )
        return _Pairs(seg, stroke, pix, px, py, None)


# --------------------------------------------------------------------------------------
# per-pair intensities with a hand-written backward (far fewer temporaries than autograd)


class _PairIntensity(torch.autograd.Function):
    """a = grey * exp(-d2 / sigma2) for pairs (segment, pixel); d2 from _pair_geometry.

    Gradients (envelope theorem: t is optimal, so only the explicit dependence counts):
    d(d2)/da = -2 e (1 - t), d(d2)/db = -2 e t, da/d(d2) = -a / sigma2,
    da/d(sigma2) = a d2 / sigma2^2, da/d(grey) = exp(-d2 / sigma2).
    """

    @staticmethod
    def forward(ctx, verts, sigma2, grey, table, seg, px, py, counts):
        rows = _gather(table, seg, table.shape[0])
        d2, t, ex, ey = _pair_geometry(rows, px, py)
        s2 = rows[5]
        E = torch.exp(-d2 / s2)
        g = rows[6] if grey is not None else None
        a = E if g is None else E * g
        ctx.save_for_backward(seg, counts, s2, g, d2, t, ex, ey, E)
        ctx.shape = (verts.shape, table.shape[1])
        return a

    @staticmethod
    def backward(ctx, ga):
        seg, counts, s2, g, d2, t, ex, ey, E = ctx.saved_tensors
        vshape, nsegs = ctx.shape
        need_v, need_s, need_g = ctx.needs_input_grad[:3]
        n, s, _ = vshape
        nseg = max(s - 1, 1)

        def per_segment(x):  # sum pair values into their segments
            if counts is not None:  # pairs in segment order: a segmented sum is faster
                return torch.segment_reduce(x, "sum", lengths=counts)
            return torch.zeros(nsegs, dtype=x.dtype, device=x.device).index_add_(0, seg, x)

        def per_stroke(x):
            return per_segment(x).view(n, nseg).sum(1)

        gE = ga * E  # d L / d grey
        g_grey = per_stroke(gE) if need_g else None
        if g is not None:
            gE = gE * g
        gd2 = gE / s2  # minus d L / d d2
        g_sigma2 = per_stroke(gd2 * d2 / s2) if need_s else None
        g_verts = None
        if need_v:
            # 1-D index_add per coordinate: much faster on CPU than a 2-D one
            c = gd2 * 2.0
            wx = c * ex  # d L / d (segment start) if t were 0
            wy = c * ey
            g_verts = torch.zeros(vshape, dtype=ga.dtype, device=ga.device)
            if s == 1:
                g_verts[:, 0, 0] = per_segment(wx)
                g_verts[:, 0, 1] = per_segment(wy)
            else:
                for i, w in ((0, wx), (1, wy)):
                    wt = w * t
                    g_verts[:, :-1, i] += per_segment(w - wt).view(n, nseg)  # start: (1-t) w
                    g_verts[:, 1:, i] += per_segment(wt).view(n, nseg)  # end: t w
        return g_verts, g_sigma2, g_grey, None, None, None, None, None


def _pair_values(prep: _Prepared, table: torch.Tensor, pairs: _Pairs):
    """Per pair intensity a (P,) and ink darkness (P, C) or None, differentiable."""
    a = _PairIntensity.apply(
        prep.verts, prep.sigma2, prep.grey, table, pairs.seg, pairs.px, pairs.py, pairs.counts
    )
    ink = None if prep.ink is None else prep.ink.index_select(0, pairs.stroke)
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
    with torch.no_grad():
        tables = [_segment_table(p.verts.detach(), p.sigma2.detach(),
                                 None if p.grey is None else p.grey.detach()) for p in preps]
    pairs = [_enumerate(p, t, height, width) for p, t in zip(preps, tables, strict=True)]
    vals = [_pair_values(p, t, q) for p, t, q in zip(preps, tables, pairs, strict=True)]
    pix = _cat([q.pix for q in pairs], torch.zeros(0, dtype=torch.long, device=device))
    a = _cat([v[0] for v in vals], torch.zeros(0, dtype=dtype, device=device))
    if any(v[1] is not None for v in vals):
        ink = _cat(
            [v[1] if v[1] is not None else a.new_ones(v[0].shape[0], channels) for v in vals],
            None,
        )
    else:
        ink = None

    if composition == "softor":
        img = _softor(a, ink, pix, hw, channels)
    elif composition == "over":
        img = _over(a, ink, pix, hw, channels)
    else:
        img = _smoothmax(a, ink, pix, hw, channels, nstrokes, tau)
    return img.view(1, channels, height, width)  # planes are (C, H*W)


def _cat(xs, empty):
    if not xs:
        return empty
    return xs[0] if len(xs) == 1 else torch.cat(xs)


def _channel_ink(a, ink, channels):
    """Per channel (P,) ink intensities a * k_c; ink is (P, 1) or (P, 3) or None (black)."""
    if ink is None:
        return [a] * channels
    return [a * ink[:, min(c, ink.shape[1] - 1)] for c in range(channels)]


class _Log1m(torch.autograd.Function):
    """log(1 - min(x, A_MAX)) with log1p's accuracy, as one autograd node.

    torch's CPU log1p is not vectorised (several times slower than log); for float32 input,
    1 - x is exact in float64 (x > 1e-16), so log(1 - double(x)) is accurate and faster.
    """

    @staticmethod
    def forward(ctx, x):
        xc = x.clamp(max=A_MAX)
        if x.dtype == torch.float32:
            out = torch.log(1.0 - xc.double()).float()
        else:
            out = torch.log1p(-xc)
        ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        # d/dx log(1 - x) = -1 / (1 - x); zero where the clamp is active (as clamp's own).
        # A mask product rather than torch.where, which is slow on CPU.
        return g / (x.clamp(max=A_MAX) - 1.0) * (x <= A_MAX)


def _log1m(x):
    return _Log1m.apply(x)


def _scatter_sum(values, pix, hw):
    """1-D per-pixel sums (a 1-D index_add is much faster on CPU than a 2-D one)."""
    return values.new_zeros(hw).index_add(0, pix, values)


def _softor(a, ink, pix, hw, channels):
    planes = [
        torch.exp(_scatter_sum(_log1m(ak), pix, hw))
        for ak in _channel_ink(a, ink, channels)
    ]
    return torch.stack(planes, 0)


def _over(a, ink, pix, hw, channels):
    if ink is None:
        # black ink: sum_i 0 * ... + prod_j (1 - a_j), which is soft-or
        return _softor(a, None, pix, hw, channels)
    # the clamped a is used throughout so that sum_i a_i T_i + T_all stays exactly 1 - paper
    a = a.clamp(max=A_MAX)
    logs = _log1m(a)
    total = _scatter_sum(logs, pix, hw)
    # transmittance before each stroke: exclusive cumsum of log(1 - a) over the strokes
    # earlier at the same pixel; pairs are stroke-major, so a stable sort by pixel orders
    # each pixel's pairs by stroke. float64 keeps the running sum's cancellation exact.
    order = torch.sort(pix, stable=True).indices
    spix = pix.index_select(0, order)
    slog = logs.index_select(0, order).double()
    cs = torch.cumsum(slog, 0) - slog  # exclusive prefix over all pairs
    first = torch.ones_like(spix, dtype=torch.bool)
    first[1:] = spix[1:] != spix[:-1]
    group = torch.cumsum(first.long(), 0) - 1
    base = cs[first].index_select(0, group)
    excl = (cs - base).to(a.dtype)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    trans = torch.exp(excl).index_select(0, inv)
    at = a * trans
    t_all = torch.exp(total)
    planes = [
        _scatter_sum(at * (1.0 - ink[:, min(c, ink.shape[1] - 1)]), pix, hw) + t_all
        for c in range(channels)
    ]
    return torch.stack(planes, 0)


def _smoothmax(a, ink, pix, hw, channels, nstrokes, tau):
    # coverage = sum_i softmax(a/tau)_i a_i over ALL strokes; absent strokes have a = 0 and
    # weight exp(0) each, so a pixel's denominator adds (nstrokes - present) * exp(0).
    if nstrokes == 0:
        return a.new_ones(channels, hw)
    z = a / tau
    with torch.no_grad():
        # per-pixel shift for a stable log-sum-exp (>= 0, the absent strokes' logit)
        shift = z.new_zeros(hw).scatter_reduce(0, pix, z.detach(), "amax", include_self=True)
        present = z.new_zeros(hw).index_add(0, pix, torch.ones_like(z))
    e = torch.exp(z - shift.index_select(0, pix))
    denom = _scatter_sum(e, pix, hw) + (nstrokes - present) * torch.exp(-shift)
    planes = [1.0 - _scatter_sum(ea, pix, hw) / denom for ea in _channel_ink(e * a, ink, channels)]
    return torch.stack(planes, 0)
