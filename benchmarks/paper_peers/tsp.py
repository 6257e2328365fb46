"""Peer: TSP art with ``tspart`` (Kaplan & Bosch 2005): weighted Voronoi stipples, one tour.

Stipples come from ``tspart.voronoi.stipple_image`` (Secord's Lloyd iterations over a
density; it densifies the photo to ~500 px per stipple and stretches the density to [0, 1]).
Tone: a tour through N points of density f over area A is about
``0.7124 * sqrt(N) * integral(sqrt(f))`` long (Beardwood-Halton-Hammersley), so the stipple
count that lays the ink the photo needs (:meth:`Photo.ink_needed_mm`) follows; it is capped,
because the tour costs O(N^2). The density is darkness^gamma: gamma 2 makes the tour's local
line density (which grows as sqrt(f)) follow darkness; gamma 1 is tspart's own.

The tour: OR-Tools routing, as ``tspart.tsp.heuristic_solve``, but with Christofides for the
first solution and no guided local search: with Python distance callbacks, OR-Tools' guided
local search made no progress on 4000 stipples in 10 s here, and tspart's own
PATH_CHEAPEST_ARC start is 10 % longer than Christofides' at the same cost. Coordinates go
to OR-Tools in 0.01 mm integers (tspart rounds distances to whole units).
"""

from __future__ import annotations

import math
import time

import numpy as np

from .paper_test import Drawing, Photo, clip_to_box

BHH = 0.7124
GAMMAS = (1.0, 2.0)
MAX_STIPPLES = 4000
MAX_STIPPLES_QUICK = 800
LLOYD_ITERATIONS = 10
LLOYD_ITERATIONS_QUICK = 3
DENSITY_PX_PER_MM = 2.5  # the photo's resolution for the stipple count
PX_PER_STIPPLE = 500  # tspart's aim: ~500 density pixels per Voronoi region


def available() -> str | None:
    try:
        import tspart.voronoi  # noqa: F401
        from ortools.constraint_solver import pywrapcp  # noqa: F401
    except ImportError as e:
        return f"tspart/ortools are not installed ({e}); pip install -e '.[bench]'"
    return None


def settings(quick: bool) -> list[float]:
    return [2.0] if quick else list(GAMMAS)


def stipple_count(photo: Photo, gamma: float) -> int:
    """Stipples whose tour is as long as the ink the photo needs."""
    dark = 1.0 - photo.at(DENSITY_PX_PER_MM)
    f = dark.astype(np.float64) ** gamma
    f = (f - f.min()) / max(f.max() - f.min(), 1e-9)  # as tspart normalises it
    cell = (1.0 / DENSITY_PX_PER_MM) ** 2
    total = f.sum() * cell
    if total <= 0:
        return 0
    sqrt_integral = np.sqrt(f / total).sum() * cell  # integral of sqrt(pdf) over the box
    return int((photo.ink_needed_mm() / (BHH * sqrt_integral)) ** 2)


def tour(points: np.ndarray, time_limit_s: int = 120) -> list[int]:
    """A closed tour through ``points`` (mm) by OR-Tools (Christofides first solution)."""
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    q = np.round(points * 100).astype(np.int64)
    xs, ys = q[:, 0].tolist(), q[:, 1].tolist()
    manager = pywrapcp.RoutingIndexManager(len(points), 1, 0)
    routing = pywrapcp.RoutingModel(manager)

    def distance(a: int, b: int) -> int:
        i, j = manager.IndexToNode(a), manager.IndexToNode(b)
        return int(math.hypot(xs[i] - xs[j], ys[i] - ys[j]))

    routing.SetArcCostEvaluatorOfAllVehicles(routing.RegisterTransitCallback(distance))
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.CHRISTOFIDES
    params.solution_limit = 1
    params.time_limit.seconds = time_limit_s
    solution = routing.SolveWithParameters(params)
    if solution is None:
        raise RuntimeError(f"OR-Tools found no tour through {len(points)} stipples")
    index, order = routing.Start(0), []
    while not routing.IsEnd(index):
        order.append(manager.IndexToNode(index))
        index = solution.Value(routing.NextVar(index))
    return order


def draw(photo: Photo, gamma: float, quick: bool, seed: int = 0) -> Drawing:
    from tspart import voronoi

    wanted = stipple_count(photo, gamma)
    cap = MAX_STIPPLES_QUICK if quick else MAX_STIPPLES
    n = max(16, min(wanted, cap))
    # tspart zooms its input by points * 500 / (H * W) on EACH axis (so the area by its
    # square): handing it the photo at sqrt(500 points / area) px/mm makes that zoom 1 and
    # its density the ~500 px per stipple it means, not hundreds of megabytes
    px_per_mm = math.sqrt(PX_PER_STIPPLE * n / (photo.box.width_mm * photo.box.height_mm))
    grey = photo.at(px_per_mm).astype(np.float64)
    density_grey = 255.0 * (1.0 - (1.0 - grey) ** gamma)
    t0 = time.perf_counter()
    np.random.seed(seed)  # tspart samples its start with numpy's global generator
    pts = voronoi.stipple_image(density_grey, points=n,
                                iterations=LLOYD_ITERATIONS_QUICK if quick else LLOYD_ITERATIONS,
                                logging=False)
    t_stipple = time.perf_counter() - t0
    # stipple_image returns (x, y) in the input's pixels (pixel i spans [i, i + 1))
    pts_mm = pts * [photo.box.width_mm / grey.shape[1], photo.box.height_mm / grey.shape[0]]
    order = tour(pts_mm)
    path = pts_mm[order + order[:1]]
    elapsed = time.perf_counter() - t0
    info = {"stipples": len(pts_mm), "stipples_for_tone": wanted,
            "stipple_s": round(t_stipple, 1), "tour_s": round(elapsed - t_stipple, 1)}
    return Drawing(clip_to_box([path], photo.box), f"gamma {gamma:g}, {len(pts_mm)} stipples",
                   elapsed, info)
