"""Curve sampling: within the chordal tolerance of the true curve, and the same curves as the
rasteriser's own evaluators (plotterd.draw.primitives)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from plotterd.vector import curves


def _de_casteljau(ctrl: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Independent Bézier evaluation (repeated linear interpolation)."""
    pts = np.repeat(ctrl[None], len(t), axis=0)  # (T, K, 2)
    tt = t[:, None, None]
    while pts.shape[1] > 1:
        pts = (1 - tt) * pts[:, :-1] + tt * pts[:, 1:]
    return pts[:, 0]


def _max_distance(dense: np.ndarray, poly: np.ndarray) -> float:
    line = shapely.LineString(poly)
    return float(max(line.distance(shapely.Point(p)) for p in dense))


@pytest.mark.parametrize("kind,k", [("quadratic", 3), ("cubic", 4)])
def test_bezier_within_tolerance(kind: str, k: int) -> None:
    rng = np.random.default_rng(1)
    ctrl = rng.uniform(-1, 1, (20, k, 2))
    tol = 0.002
    polys = curves.sample_group(kind, ctrl, tol)
    t = np.linspace(0, 1, 400)
    for c, poly in zip(ctrl, polys, strict=True):
        dense = _de_casteljau(c, t)
        np.testing.assert_allclose(poly[0], c[0], atol=1e-12)
        np.testing.assert_allclose(poly[-1], c[-1], atol=1e-12)
        assert _max_distance(dense, poly) <= tol * 1.05
        # and not absurdly oversampled: fewer vertices than the dense reference
        assert len(poly) < 200


def test_tighter_tolerance_gives_more_points() -> None:
    ctrl = np.array([[[0, 0], [1, 2], [2, -2], [3, 0]]], dtype=float)
    coarse = curves.sample_group("cubic", ctrl, 0.05)[0]
    fine = curves.sample_group("cubic", ctrl, 0.0005)[0]
    assert len(fine) > 2 * len(coarse)


def test_catmull_rom_matches_rasteriser_definition() -> None:
    torch = pytest.importorskip("torch")
    from plotterd.draw.primitives import sample_curve

    rng = np.random.default_rng(2)
    pts = rng.uniform(-1, 1, (6, 7, 2))
    pts[0, 2] = pts[0, 3]  # coincident control points must stay finite
    ref = sample_curve("catmull_rom", torch.tensor(pts, dtype=torch.float64), 50).numpy()
    # our evaluator at the same uniform parameters of every span
    spans = pts.shape[1] - 3
    for i in range(len(pts)):
        ours = []
        for j in range(spans):
            w = pts[i, j : j + 4][None].repeat(51, axis=0)
            u = np.linspace(0, 1, 51)
            knots = curves.catmull_rom_knots(w)
            ev = curves.catmull_rom(w, knots, u)
            ours.append(ev if j == 0 else ev[1:])
        np.testing.assert_allclose(np.concatenate(ours), ref[i], atol=1e-9)
    # and the adaptive sampler stays within tolerance of that dense curve
    polys = curves.sample_group("catmull_rom", pts, 0.001)
    for poly, dense in zip(polys, ref, strict=True):
        assert np.isfinite(poly).all()
        assert _max_distance(dense, poly) <= 0.0011
        np.testing.assert_allclose(poly[0], dense[0], atol=1e-9)
        np.testing.assert_allclose(poly[-1], dense[-1], atol=1e-9)


def test_bezier_matches_rasteriser() -> None:
    torch = pytest.importorskip("torch")
    from plotterd.draw.primitives import sample_curve

    rng = np.random.default_rng(3)
    ctrl = rng.uniform(-1, 1, (5, 4, 2))
    ref = sample_curve("cubic", torch.tensor(ctrl), 20).numpy()
    t = np.linspace(0, 1, 21)
    for c, r in zip(ctrl, ref, strict=True):
        np.testing.assert_allclose(curves.bezier(np.repeat(c[None], 21, 0), t), r, atol=1e-12)


def test_points_lines_polylines_pass_through() -> None:
    dots = curves.sample_group("point", np.array([[[0.5, 0.25]]]), 0.01)
    assert dots[0].shape == (2, 2) and (dots[0][0] == dots[0][1]).all()
    poly = np.array([[[0, 0], [1, 0], [1, 1], [0, 1]]], dtype=float)
    assert np.array_equal(curves.sample_group("polyline", poly, 0.01)[0], poly[0])
    assert curves.sample_group("cubic", np.zeros((0, 4, 2)), 0.01) == []


def test_degenerate_curve_all_points_equal() -> None:
    ctrl = np.ones((3, 4, 2))
    for kind in ("cubic", "catmull_rom"):
        polys = curves.sample_group(kind, ctrl, 0.01)
        for p in polys:
            assert np.isfinite(p).all()
            np.testing.assert_allclose(p, 1.0, atol=1e-9)
