"""The sparse pair lists: every pixel within the cutoff is listed, and listed once.

This is the property that makes the sparse rasteriser exact; it is checked here directly
against brute force (every segment x every pixel), independently of any tolerance.
"""

from __future__ import annotations

import torch

from plotterd.draw import raster as R

H, W = 24, 32


def _brute_d2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(M, 2) segments -> (M, H*W) squared distances in float64."""
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    p = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).double()[None]
    a, b = a.double()[:, None], b.double()[:, None]
    m = b - a
    mm = (m * m).sum(-1)
    t = (((p - a) * m).sum(-1) / mm.clamp_min(1e-300)).clamp(0, 1)
    t = torch.where(mm > 0, t, torch.zeros_like(t))
    return ((p - a - t[..., None] * m) ** 2).sum(-1)


def _random_segments(gen, m):
    a = torch.rand(m, 2, generator=gen) * torch.tensor([W + 30.0, H + 30.0]) - 15.0
    kind = torch.rand(m, generator=gen)
    d = (torch.rand(m, 2, generator=gen) - 0.5) * 40.0
    d[kind < 0.1] = 0.0  # points
    d[(kind >= 0.1) & (kind < 0.2), 0] = 0.0  # vertical
    d[(kind >= 0.2) & (kind < 0.3), 1] = 0.0  # horizontal
    diag = (kind >= 0.3) & (kind < 0.4)
    d[diag, 1] = d[diag, 0]  # exactly 45 degrees
    a[kind > 0.9] = a[kind > 0.9].round()  # on pixel centres
    r = torch.exp(torch.rand(m, generator=gen) * 5.0 - 3.0)  # 0.05 .. 7.4 px
    return a, a + d, r


def test_band_lists_every_pixel_within_r_exactly_once():
    gen = torch.Generator().manual_seed(11)
    a, b, r = _random_segments(gen, 3000)
    seg, pix, counts = R._segment_pixels(a, b, r, H, W)
    # pairs come in segment order, counted per segment
    assert (seg[1:] >= seg[:-1]).all()
    assert torch.equal(counts, torch.bincount(seg, minlength=len(a)))
    listed = seg * (H * W) + pix
    assert int(listed.unique().numel()) == int(listed.numel()), "a pair is listed twice"
    assert int(pix.min()) >= 0 and int(pix.max()) < H * W
    need = (_brute_d2(a, b) <= (r.double()[:, None] ** 2)).nonzero()
    need = need[:, 0] * (H * W) + need[:, 1]
    missing = need[~torch.isin(need, listed)]
    assert missing.numel() == 0, f"{missing.numel()} pixels within r not listed"
    # and the band is a band, not a bounding box: few extra pixels
    assert listed.numel() < 3.0 * need.numel() + 50 * len(a)


def test_multi_segment_strokes_keep_each_pixel_once_with_its_nearest_segment():
    gen = torch.Generator().manual_seed(12)
    n, s = 60, 8
    # random walks: sharp turns, self-overlaps and repeated vertices
    steps = (torch.rand(n, s, 2, generator=gen) - 0.5) * 16.0
    steps[:, 3] = 0.0
    verts = torch.cumsum(steps, 1) + torch.tensor([W / 2, H / 2])
    sigma2 = (0.3 + 2.0 * torch.rand(n, generator=gen)) ** 2
    prep = R._Prepared(verts, sigma2, None, None)
    table = R._segment_table(verts, sigma2, None)
    pairs = R._enumerate(prep, table, H, W)
    key = pairs.stroke * (H * W) + pairs.pix
    assert int(key.unique().numel()) == int(key.numel())
    # brute force: per stroke, the distance of every pixel to its nearest segment
    d2 = _brute_d2(verts[:, :-1].reshape(-1, 2), verts[:, 1:].reshape(-1, 2))
    d2 = d2.view(n, s - 1, H * W)
    dmin = d2.min(1).values
    within = dmin <= R.CUTOFF**2 * sigma2.double()[:, None]
    need = within.nonzero()
    need_key = need[:, 0] * (H * W) + need[:, 1]
    assert torch.isin(need_key, key).all()
    # within the cutoff the kept segment is a nearest one (up to float32 rounding of
    # near-ties); beyond it a pixel may be listed by a farther segment only, harmlessly
    seg_local = pairs.seg - pairs.stroke * (s - 1)
    d_kept = d2[pairs.stroke, seg_local, pairs.pix]
    d_best = dmin[pairs.stroke, pairs.pix]
    inside = within[pairs.stroke, pairs.pix]
    assert inside.sum() == len(need_key)
    assert torch.allclose(d_kept[inside], d_best[inside], rtol=1e-5, atol=1e-4)
