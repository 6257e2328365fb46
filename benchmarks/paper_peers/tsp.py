"""Peer: TSP art with ``tspart`` (Kaplan & Bosch 2005): weighted Voronoi stipples, one path.

Stipples come from ``tspart.voronoi.stipple_image`` (Secord's Lloyd iterations over a
density; it stretches the density to [0, 1]). The density is darkness^gamma; gamma 2 makes
the path's local line density (which grows as sqrt(density)) follow darkness.

Tone: Lloyd-relaxed stipples lie near a hexagonal lattice, so a path through N of them with
density pdf f is about ``TOUR_PER_STIPPLE * sqrt(N) * integral(sqrt(f))`` long; the stipple
count that lays the ink the photo needs (:meth:`Photo.ink_needed_mm`) follows from that
(tens of thousands at 0.3 mm over 150 mm), capped by MAX_STIPPLES.

The path: OR-Tools routing as ``tspart.tsp.heuristic_solve(symmetric=False)`` sets it up
(PATH_CHEAPEST_ARC, fixed start and end; coordinates in 0.01 mm integers, where tspart
rounds distances to whole pixels), one tile of ~150 stipples at a time, because OR-Tools
calls a Python distance callback O(n^2) times: 4000 stipples took 10-13 s for a first
solution here, and its guided local search made no progress on them in 10 s. OR-Tools
orders the tiles too; plotterd's 2-opt/Or-opt (``plotterd.vector.ordering.two_opt``) then
polishes the whole path (14 % shorter on 20 000 stipples, in seconds), removing the long
jumps a greedy first solution leaves.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .paper_test import Drawing, Photo, clip_to_box

# path length per stipple / sqrt(area per stipple), measured here on the polished paths (the
# path link is about the nearest-neighbour distance of relaxed stipples: a hexagonal lattice
# has 1.075, the uniform random tour 0.7124)
TOUR_PER_STIPPLE = 0.97
GAMMAS = (2.0,)
MAX_STIPPLES = 80000
MAX_STIPPLES_QUICK = 3000
LLOYD_ITERATIONS = 4
LLOYD_ITERATIONS_QUICK = 2
TILE_STIPPLES = 150
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
    return int((photo.ink_needed_mm() / (TOUR_PER_STIPPLE * sqrt_integral)) ** 2)


def _open_path(points: np.ndarray, start: int, end: int, time_limit_s: int = 120) -> list[int]:
    """OR-Tools' path through ``points`` (mm) from ``start`` to ``end``, as tspart's
    ``heuristic_solve(symmetric=False)`` builds it (PATH_CHEAPEST_ARC, fixed ends)."""
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    if len(points) <= 2:
        return [start] if start == end else [start, end]
    q = np.round(points * 100).astype(np.int64)  # 0.01 mm integers
    xs, ys = q[:, 0].tolist(), q[:, 1].tolist()
    manager = pywrapcp.RoutingIndexManager(len(points), 1, [start], [end])
    routing = pywrapcp.RoutingModel(manager)

    def distance(a: int, b: int) -> int:
        i, j = manager.IndexToNode(a), manager.IndexToNode(b)
        return int(math.hypot(xs[i] - xs[j], ys[i] - ys[j]))

    routing.SetArcCostEvaluatorOfAllVehicles(routing.RegisterTransitCallback(distance))
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    params.solution_limit = 1
    params.time_limit.seconds = time_limit_s
    solution = routing.SolveWithParameters(params)
    if solution is None:
        raise RuntimeError(f"OR-Tools found no path through {len(points)} stipples")
    index, order = routing.Start(0), []
    while not routing.IsEnd(index):
        order.append(manager.IndexToNode(index))
        index = solution.Value(routing.NextVar(index))
    order.append(manager.IndexToNode(index))
    return order


def _tiles(points: np.ndarray, box_wh: tuple[float, float]) -> list[np.ndarray]:
    """Indices of the stipples in each non-empty tile of ~TILE_STIPPLES."""
    w, h = box_wh
    tiles = max(1.0, len(points) / TILE_STIPPLES)
    nx = max(1, round(math.sqrt(tiles * w / h)))
    ny = max(1, math.ceil(tiles / nx))
    ix = np.minimum((points[:, 0] / w * nx).astype(int), nx - 1)
    iy = np.minimum((points[:, 1] / h * ny).astype(int), ny - 1)
    cell = iy * nx + ix
    return [m for m in (np.flatnonzero(cell == k) for k in range(nx * ny)) if len(m)]


def _link(a: np.ndarray, b: np.ndarray, avoid: int | None) -> tuple[int, int]:
    """The closest pair (i in a, j in b), i != avoid where a has another point."""
    from scipy.spatial import cKDTree

    d, j = cKDTree(b).query(a)
    if avoid is not None and len(a) > 1:
        d[avoid] = np.inf
    i = int(np.argmin(d))
    return i, int(j[i])


def tour(points: np.ndarray, box_wh: tuple[float, float]) -> np.ndarray:
    """One pen-down path through every stipple. OR-Tools calls a Python distance callback
    O(n^2) times, so a single tour through tens of thousands of stipples is out of reach
    here: the box is cut into tiles of ~TILE_STIPPLES, OR-Tools orders the tiles (a tour of
    their centroids), and each tile's path runs between the closest pairs of stipples that
    link it to the tiles before and after it."""
    groups = _tiles(points, box_wh)
    if len(groups) > 2:
        centroids = np.array([points[g].mean(axis=0) for g in groups])
        first = int(np.argmin(np.hypot(*centroids.T)))
        order = _open_path(centroids, first, first)[:-1]
        groups = [groups[k] for k in order]
    tiles = [points[g] for g in groups]
    starts = [int(np.argmin(np.hypot(*tiles[0].T)))]
    ends = []
    for k in range(len(tiles) - 1):
        i, j = _link(tiles[k], tiles[k + 1], starts[k])
        ends.append(i)
        starts.append(j)
    last = tiles[-1]
    far = np.argsort(np.hypot(*(last - last[starts[-1]]).T))
    ends.append(int(far[-1]) if len(last) > 1 else starts[-1])
    path = np.vstack([t[_open_path(t, s_, e_)] for t, s_, e_ in zip(tiles, starts, ends,
                                                                   strict=True)])
    return _polish(path)


def _polish(path: np.ndarray) -> np.ndarray:
    """2-opt and Or-opt moves over neighbour lists (plotterd.vector.ordering.two_opt, each
    stipple a dot): they remove the long jumps PATH_CHEAPEST_ARC leaves, which OR-Tools'
    own guided local search would need minutes for."""
    from plotterd.vector.ordering import two_opt

    dots = [np.array([complex(x, y)] * 2) for x, y in path]
    better = two_opt(dots, complex(*path[0]), neighbours=8, kicks=0)
    return np.array([[d[0].real, d[0].imag] for d in better])


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
    path = tour(pts_mm, (photo.box.width_mm, photo.box.height_mm))
    elapsed = time.perf_counter() - t0
    info = {"stipples": len(pts_mm), "stipples_for_tone": wanted,
            "stipple_s": round(t_stipple, 1), "tour_s": round(elapsed - t_stipple, 1)}
    return Drawing(clip_to_box([path], photo.box), f"gamma {gamma:g}, {len(pts_mm)} stipples",
                   elapsed, info)
