"""Stroke primitives as polylines: the curve evaluators shared by the rasteriser and others.

Every primitive kind is reduced to a polyline of S vertices, and a stroke's distance field is
the minimum distance to that polyline (method.md, algorithm 1):

- ``point``: S = 1, the point itself (distance to a point).
- ``line``: S = 2, the two end points.
- ``polyline``: S = K, the control points as given.
- ``quadratic`` / ``cubic``: Bezier curves in Bernstein form, sampled at the
  ``segments + 1`` uniform parameters ``t = k / segments`` (k = 0..segments), S = segments + 1.
- ``catmull_rom``: centripetal Catmull-Rom (alpha = 0.5) through K >= 4 control points
  P0..P_{K-1}. The curve runs through P1..P_{K-2}: K - 3 spans, span j between P_{j+1} and
  P_{j+2} using P_j..P_{j+3}. Per span, knots are t0 = 0 and
  ``t_{m+1} = t_m + (|Q_{m+1} - Q_m|^2 + 1e-12) ** 0.25`` for the span's four points Q0..Q3
  (i.e. |dQ|^alpha with alpha = 0.5; the 1e-12, in squared coordinate units, keeps coincident
  points finite and their gradient defined). The span is evaluated with the Barry-Goldman
  pyramid at the ``segments + 1`` parameters ``t = t1 + (k / segments) (t2 - t1)``::

      A1 = ((t1-t) Q0 + (t-t0) Q1) / (t1-t0)
      A2 = ((t2-t) Q1 + (t-t1) Q2) / (t2-t1)
      A3 = ((t3-t) Q2 + (t-t2) Q3) / (t3-t2)
      B1 = ((t2-t) A1 + (t-t0) A2) / (t2-t0)
      B2 = ((t3-t) A2 + (t-t1) A3) / (t3-t1)
      C  = ((t2-t) B1 + (t-t1) B2) / (t2-t1)

  Consecutive spans share their joint sample (P_{j+2}); it appears once, so
  S = (K - 3) * segments + 1.

The definition is invariant to a uniform scaling of the control points up to the 1e-12
epsilon, so sampling in world units or in pixels gives the same curve.
"""

from __future__ import annotations

import torch

from plotterd.draw.strokes import KINDS
from plotterd.errors import InputError

__all__ = ["sample_curve", "num_samples", "CATMULL_ROM_EPS"]

CATMULL_ROM_EPS = 1e-12  # added to squared control-point distances before the ** 0.25


def num_samples(kind: str, k: int, segments: int) -> int:
    """Number of polyline vertices ``sample_curve`` returns for K control points."""
    if kind in ("point", "line", "polyline"):
        return k
    if kind in ("quadratic", "cubic"):
        return segments + 1
    if kind == "catmull_rom":
        return (k - 3) * segments + 1
    raise InputError(f"unknown stroke kind {kind!r} (known: {', '.join(KINDS)})")


def _check(kind: str, points: torch.Tensor, segments: int) -> None:
    if kind not in KINDS:
        raise InputError(f"unknown stroke kind {kind!r} (known: {', '.join(KINDS)})")
    if points.ndim != 3 or points.shape[2] != 2:
        raise InputError(f"{kind}: points must be N x K x 2, got {tuple(points.shape)}")
    k = KINDS[kind]
    if k is not None and points.shape[1] != k:
        raise InputError(f"{kind}: needs {k} control points, got {points.shape[1]}")
    if kind == "polyline" and points.shape[1] < 2:
        raise InputError("polyline: needs at least 2 points")
    if kind == "catmull_rom" and points.shape[1] < 4:
        raise InputError("catmull_rom: needs at least 4 control points")
    if int(segments) < 1:
        raise InputError(f"curve_segments must be >= 1, got {segments}")


def _bezier(points: torch.Tensor, segments: int) -> torch.Tensor:
    t = torch.linspace(0.0, 1.0, segments + 1, dtype=points.dtype, device=points.device)
    t = t[None, :, None]
    u = 1.0 - t
    p = points[:, :, None, :]  # (N, K, 1, 2)
    if points.shape[1] == 3:
        return u * u * p[:, 0] + 2.0 * u * t * p[:, 1] + t * t * p[:, 2]
    return (
        u * u * u * p[:, 0]
        + 3.0 * u * u * t * p[:, 1]
        + 3.0 * u * t * t * p[:, 2]
        + t * t * t * p[:, 3]
    )


def _catmull_rom(points: torch.Tensor, segments: int) -> torch.Tensor:
    n, k, _ = points.shape
    spans = k - 3
    # (N, spans, 4, 2): the four control points of every span
    q = points.unfold(1, 4, 1).permute(0, 1, 3, 2)
    d2 = ((q[:, :, 1:] - q[:, :, :-1]) ** 2).sum(-1)  # (N, spans, 3)
    dt = (d2 + CATMULL_ROM_EPS) ** 0.25
    t0 = torch.zeros_like(dt[..., 0])
    t1 = dt[..., 0]
    t2 = t1 + dt[..., 1]
    t3 = t2 + dt[..., 2]
    s = torch.linspace(0.0, 1.0, segments + 1, dtype=points.dtype, device=points.device)
    # parameters (N, spans, S, 1) so they broadcast against (N, spans, 1, 2) points
    t0, t1, t2, t3 = (x[..., None, None] for x in (t0, t1, t2, t3))
    t = t1 + s[None, None, :, None] * (t2 - t1)
    q0, q1, q2, q3 = (q[:, :, i, None, :] for i in range(4))
    a1 = ((t1 - t) * q0 + (t - t0) * q1) / (t1 - t0)
    a2 = ((t2 - t) * q1 + (t - t1) * q2) / (t2 - t1)
    a3 = ((t3 - t) * q2 + (t - t2) * q3) / (t3 - t2)
    b1 = ((t2 - t) * a1 + (t - t0) * a2) / (t2 - t0)
    b2 = ((t3 - t) * a2 + (t - t1) * a3) / (t3 - t1)
    c = ((t2 - t) * b1 + (t - t1) * b2) / (t2 - t1)  # (N, spans, segments + 1, 2)
    if spans == 1:
        return c[:, 0]
    # drop each later span's first sample: it is the previous span's last (the joint)
    rest = c[:, 1:, 1:].reshape(n, (spans - 1) * segments, 2)
    return torch.cat([c[:, 0], rest], dim=1)


def sample_curve(kind: str, points: torch.Tensor, segments: int = 10) -> torch.Tensor:
    """(N, K, 2) control points -> (N, S, 2) polyline vertices, differentiable.

    See the module docstring for the exact definition of every kind; ``segments`` is the
    number of uniform parameter steps per Bezier curve or per Catmull-Rom span.
    """
    _check(kind, points, segments)
    segments = int(segments)
    if kind in ("point", "line", "polyline"):
        return points
    if kind in ("quadratic", "cubic"):
        return _bezier(points, segments)
    return _catmull_rom(points, segments)
