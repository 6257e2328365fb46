"""The sparse rasteriser equals the dense formula, in value and in gradients.

Gradient agreement is measured per parameter tensor as the relative error
``||g_sparse - g_dense|| / max(||g_dense||, 1e-30)`` (Frobenius norms), against a random
loss-weight image so the gradients are generic. Both sides run in float32 (as used), to the
brief's tolerances, and again in float64 to far tighter ones.
"""

from __future__ import annotations

import zlib

import pytest
import torch
from dense_reference import render_dense

from plotterd.draw.primitives import num_samples, sample_curve
from plotterd.draw.raster import StrokeBatch, render
from plotterd.errors import ConfigError, InputError

torch.set_num_threads(1)

H, W = 24, 32
KINDS = {"point": 1, "line": 2, "polyline": 5, "quadratic": 3, "cubic": 4, "catmull_rom": 6}
COMPOSITIONS = ("softor", "over", "smoothmax")
IMG_TOL = 1e-6
GRAD_TOL = 1e-4
PARAMS = ("points", "sigma", "grey", "color")


def _rel(g: torch.Tensor | None, ref: torch.Tensor | None) -> float:
    assert g is not None and ref is not None
    return float((g - ref).norm() / max(float(ref.norm()), 1e-30))


def _leaf(x: torch.Tensor | None, dtype) -> torch.Tensor | None:
    return None if x is None else x.detach().to(dtype).clone().requires_grad_(True)


def _copy(batches, dtype):
    return [
        StrokeBatch(b.kind, _leaf(b.points, dtype), _leaf(b.sigma, dtype),
                    _leaf(b.grey, dtype), _leaf(b.color, dtype))
        for b in batches
    ]


def compare(batches, composition, channels, *, tau=0.05, segments=10, seed=0):
    """Render sparse and dense; assert values and gradients agree.

    In float32 (how it is used) to the brief's tolerances, and in float64 to far tighter
    ones, which shows the only difference is the cutoff (below 1e-12 per stroke).
    """
    weight = torch.rand(1, channels, H, W, generator=torch.Generator().manual_seed(seed))
    tolerances = {torch.float32: (IMG_TOL, GRAD_TOL), torch.float64: (1e-10, 1e-8)}
    for dtype, (img_tol, grad_tol) in tolerances.items():
        sparse = _copy(batches, dtype)
        dense = _copy(batches, dtype)
        img = render(sparse, H, W, composition=composition, channels=channels, tau=tau,
                     curve_segments=segments)
        ref = render_dense(dense, H, W, composition=composition, channels=channels, tau=tau,
                           curve_segments=segments)
        assert img.shape == (1, channels, H, W) and img.dtype == dtype
        v = img.detach()
        assert torch.isfinite(v).all()
        assert float(v.min()) >= -1e-6 and float(v.max()) <= 1 + 1e-6
        assert float((v - ref.detach()).abs().max()) <= img_tol, dtype
        (img * weight.to(dtype)).sum().backward()
        (ref * weight.to(dtype)).sum().backward()
        for bs, bd in zip(sparse, dense, strict=True):
            for name in PARAMS:
                gs, gd = getattr(bs, name), getattr(bd, name)
                if gd is None:
                    continue
                assert torch.isfinite(gs.grad).all(), (bs.kind, name)
                err = _rel(gs.grad, gd.grad)
                assert err <= grad_tol, (bs.kind, composition, name, dtype, err)


def _batch(kind, n, gen, *, spread=8.0, sigma=(0.3, 2.0), grey=True, color=True):
    k = KINDS[kind]
    pts = torch.rand(n, k, 2, generator=gen, dtype=torch.float64)
    pts = pts * torch.tensor([W + 2 * spread, H + 2 * spread]) - spread
    lo, hi = sigma
    sig = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    g = 0.2 + 0.8 * torch.rand(n, generator=gen, dtype=torch.float64) if grey else None
    c = torch.rand(n, 3, generator=gen, dtype=torch.float64) if color else None
    return StrokeBatch(kind, pts, sig, g, c)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("composition", COMPOSITIONS)
@pytest.mark.parametrize("channels", [1, 3])
def test_sparse_equals_dense(kind, composition, channels):
    gen = torch.Generator().manual_seed(zlib.crc32(f"{kind}/{composition}/{channels}".encode()))
    # strokes spread beyond the canvas: some partly, some wholly off it
    compare([_batch(kind, 7, gen)], composition, channels)


@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_mixed_batches_black_ink_and_stroke_order(composition):
    gen = torch.Generator().manual_seed(1)
    batches = [
        _batch("line", 6, gen, color=False),
        _batch("cubic", 3, gen, grey=False),
        _batch("point", 5, gen, grey=False, color=False),
        _batch("catmull_rom", 2, gen),
    ]
    compare(batches, composition, 3)
    compare(batches, composition, 1)


@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_degenerate_strokes(composition):
    p = torch.tensor
    batches = [
        # zero-length lines (one exactly on a pixel centre, full ink), a point on a centre
        StrokeBatch("line", p([[[5.0, 6.0], [5.0, 6.0]], [[10.3, 3.7], [10.3, 3.7]]]),
                    p([0.6, 1.1])),
        StrokeBatch("point", p([[[7.0, 7.0]], [[-30.0, 4.0]]]), p([0.55, 0.8])),
        # coincident control points in curves and polylines
        StrokeBatch("catmull_rom", p([[[4.0, 4.0]] * 4]), p([0.7]), grey=p([0.9])),
        StrokeBatch("catmull_rom", p([[[3.0, 3.0], [3.0, 3.0], [9.5, 12.0], [9.5, 12.0],
                                       [20.0, 5.0]]]), p([0.9]), grey=p([0.6])),
        StrokeBatch("cubic", p([[[12.0, 12.0]] * 4]), p([1.0])),
        StrokeBatch("quadratic", p([[[1.0, 20.0], [1.0, 20.0], [15.0, 21.0]]]), p([0.5])),
        StrokeBatch("polyline", p([[[2.0, 2.0], [2.0, 2.0], [8.0, 2.0], [8.0, 2.0]]]),
                    p([0.6])),
        # a tiny sigma and a huge one; a stroke entirely off the canvas
        StrokeBatch("line", p([[[3.0, 15.0], [25.0, 18.0]], [[0.0, 0.0], [31.0, 23.0]],
                               [[100.0, 100.0], [140.0, 90.0]]]), p([0.05, 9.0, 1.0]),
                    color=p([[0.2, 0.5, 0.9], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])),
    ]
    for b in batches:
        b.points = b.points.double()
        b.sigma = b.sigma.double()
    compare(batches, composition, 1)
    compare(batches, composition, 3)


def test_long_diagonal_and_steep_lines():
    # the band enumeration must not miss pixels for any orientation
    angles = torch.linspace(0, 3.1416, 13, dtype=torch.float64)
    c = torch.tensor([15.5, 11.5], dtype=torch.float64)
    d = torch.stack([torch.cos(angles), torch.sin(angles)], -1) * 30.0
    pts = torch.stack([c - d, c + d], 1)
    b = StrokeBatch("line", pts, torch.full((13,), 0.8, dtype=torch.float64))
    compare([b], "softor", 1)


def test_smoothmax_temperature():
    gen = torch.Generator().manual_seed(3)
    b = _batch("line", 8, gen)
    compare([b], "smoothmax", 1, tau=0.5)
    compare([b], "smoothmax", 3, tau=0.01)


def test_curve_segments_parameter():
    gen = torch.Generator().manual_seed(4)
    compare([_batch("cubic", 4, gen), _batch("catmull_rom", 3, gen)], "softor", 1, segments=3)


def test_deterministic_on_cpu():
    # big enough (~1e5 pairs) for torch's parallel kernels to split the work
    gen = torch.Generator().manual_seed(5)
    batches = [_batch("line", 300, gen, sigma=(0.5, 1.5)), _batch("catmull_rom", 20, gen)]
    for b in batches:
        b.points = b.points * 5.0
    batches = _copy(batches, torch.float32)
    outs, grads = [], []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 2):  # also across thread counts
            torch.set_num_threads(n)
            for b in batches:
                b.points.grad = None
            img = render(batches, 5 * H, 5 * W, composition="over", channels=3)
            img.square().sum().backward()
            outs.append(img.detach().clone())
            grads.append(batches[0].points.grad.clone())
    finally:
        torch.set_num_threads(threads)
    for o, g in zip(outs[1:], grads[1:], strict=True):
        assert torch.equal(outs[0], o)
        assert torch.equal(grads[0], g)


def test_empty_inputs_give_white_paper():
    assert torch.equal(render([], 5, 6), torch.ones(1, 1, 5, 6))
    empty = StrokeBatch("line", torch.zeros(0, 2, 2), torch.zeros(0))
    for comp in COMPOSITIONS:
        assert torch.equal(render([empty], 5, 6, composition=comp, channels=3),
                           torch.ones(1, 3, 5, 6))


def test_paper_values():
    # a black point on a pixel centre makes that pixel (almost) black, far pixels white
    b = StrokeBatch("point", torch.tensor([[[3.0, 2.0]]]), torch.tensor([0.55]))
    img = render([b], 5, 7)
    assert float(img[0, 0, 2, 3]) == pytest.approx(1e-6, abs=1e-6)
    assert float(img[0, 0, 0, 0]) == 1.0
    # a red stroke on RGB paper keeps the red channel white
    b.color = torch.tensor([[1.0, 0.0, 0.0]])
    img = render([b], 5, 7, channels=3, composition="over")
    assert float(img[0, 0, 2, 3]) == pytest.approx(1.0, abs=1e-5)
    assert float(img[0, 1, 2, 3]) < 1e-4


def test_bad_input_raises_plotterd_errors():
    ok = StrokeBatch("line", torch.zeros(2, 2, 2), torch.ones(2))
    with pytest.raises(ConfigError, match="composition"):
        render([ok], 4, 4, composition="multiply")
    with pytest.raises(ConfigError, match="channels"):
        render([ok], 4, 4, channels=2)
    with pytest.raises(ConfigError, match="tau"):
        render([ok], 4, 4, composition="smoothmax", tau=0.0)
    with pytest.raises(InputError, match="kind"):
        render([StrokeBatch("spline", torch.zeros(2, 2, 2), torch.ones(2))], 4, 4)
    with pytest.raises(InputError, match="control points"):
        render([StrokeBatch("cubic", torch.zeros(2, 3, 2), torch.ones(2))], 4, 4)
    with pytest.raises(InputError, match="sigma"):
        render([StrokeBatch("line", torch.zeros(2, 2, 2), torch.ones(3))], 4, 4)
    with pytest.raises(InputError, match="finite"):
        render([StrokeBatch("line", torch.full((2, 2, 2), float("nan")), torch.ones(2))], 4, 4)
    with pytest.raises(InputError, match="catmull_rom"):
        render([StrokeBatch("catmull_rom", torch.zeros(1, 3, 2), torch.ones(1))], 4, 4)


# ----------------------------------------------------------------------------------------
# curve evaluators


def test_bezier_samples_match_closed_form():
    gen = torch.Generator().manual_seed(6)
    p = torch.rand(3, 4, 2, generator=gen, dtype=torch.float64)
    s = sample_curve("cubic", p, 4)
    assert s.shape == (3, 5, 2)
    t = 0.25
    expect = ((1 - t) ** 3 * p[:, 0] + 3 * (1 - t) ** 2 * t * p[:, 1]
              + 3 * (1 - t) * t * t * p[:, 2] + t**3 * p[:, 3])
    assert torch.allclose(s[:, 1], expect)
    q = sample_curve("quadratic", p[:, :3], 2)
    assert torch.allclose(q[:, 1], 0.25 * p[:, 0] + 0.5 * p[:, 1] + 0.25 * p[:, 2])
    assert torch.allclose(q[:, 0], p[:, 0]) and torch.allclose(q[:, -1], p[:, 2])


def _catmull_reference(q, t):
    """Centripetal Catmull-Rom point at parameter t (textbook recursion, one span, numpy-free)."""
    import math

    knots = [0.0]
    for i in range(3):
        dx, dy = q[i + 1][0] - q[i][0], q[i + 1][1] - q[i][1]
        knots.append(knots[-1] + math.sqrt(math.hypot(dx, dy)))
    t0, t1, t2, t3 = knots
    tt = t1 + t * (t2 - t1)

    def lerp(p0, p1, ta, tb):
        return [((tb - tt) * p0[k] + (tt - ta) * p1[k]) / (tb - ta) for k in range(2)]

    a1, a2, a3 = lerp(q[0], q[1], t0, t1), lerp(q[1], q[2], t1, t2), lerp(q[2], q[3], t2, t3)
    b1, b2 = lerp(a1, a2, t0, t2), lerp(a2, a3, t1, t3)
    return lerp(b1, b2, t1, t2)


def test_catmull_rom_definition():
    gen = torch.Generator().manual_seed(7)
    p = torch.rand(2, 6, 2, generator=gen, dtype=torch.float64) * 50
    s = sample_curve("catmull_rom", p, 5)
    assert s.shape == (2, num_samples("catmull_rom", 6, 5), 2) == (2, 16, 2)
    # passes through P1..P4 at span boundaries
    for j in range(4):
        assert torch.allclose(s[:, 5 * j], p[:, j + 1], atol=1e-9)
    # interior samples follow the textbook centripetal recursion
    for span in range(3):
        for k in (1, 3):
            q = p[1, span:span + 4].tolist()
            ref = torch.tensor(_catmull_reference(q, k / 5), dtype=torch.float64)
            assert torch.allclose(s[1, 5 * span + k], ref, atol=1e-5)


def test_catmull_rom_coincident_points_have_finite_gradients():
    p = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [4.0, 2.0]]], requires_grad=True)
    s = sample_curve("catmull_rom", p, 10)
    s.square().sum().backward()
    assert torch.isfinite(s).all() and torch.isfinite(p.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(8)
    batches = [_batch("line", 20, gen), _batch("catmull_rom", 5, gen)]
    for comp in COMPOSITIONS:
        cpu = render(_copy(batches, torch.float32), H, W, composition=comp, channels=3)
        cuda_b = [StrokeBatch(b.kind, b.points.float().cuda(), b.sigma.float().cuda(),
                              b.grey.float().cuda(), b.color.float().cuda()) for b in batches]
        gpu = render(cuda_b, H, W, composition=comp, channels=3)
        assert gpu.device.type == "cuda"
        assert float((gpu.cpu() - cpu).abs().max()) <= 1e-5
