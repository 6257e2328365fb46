"""Property tests over random drawings, layouts and profiles: the pen is up at the start, at
every travel and at the end; no move leaves the machine's bounds; every input stroke is drawn
once, within the tolerance (Hausdorff distance and total length against an independent
rendering of the input)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import shapely
import vpype as vp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plotterd.draw.strokes import Canvas, StrokeGroup, Strokes
from plotterd.errors import OutOfBoundsError
from plotterd.gcode import load_profile, make_gcode, write_program
from plotterd.gcode.writer import to_machine
from plotterd.vector import PX_PER_MM, PageSpec, VectorOptions, vectorise

from .interp import run

torch = pytest.importorskip("torch")
from plotterd.draw.primitives import sample_curve  # noqa: E402  (needs torch)

PROFILES = {name: load_profile(name) for name in ("grbl-servo", "grbl-z", "marlin-servo",
                                                  "klipper")}
KINDS = ["point", "line", "polyline", "quadratic", "cubic", "catmull_rom"]
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _bezier_dense(ctrl: np.ndarray, n: int = 400) -> np.ndarray:
    """de Casteljau at n parameters: independent of the sampler under test."""
    t = np.linspace(0, 1, n)[:, None, None]
    pts = np.repeat(ctrl[None], n, axis=0)
    while pts.shape[1] > 1:
        pts = (1 - t) * pts[:, :-1] + t * pts[:, 1:]
    return pts[:, 0]


def _random_strokes(seed: int, kinds: list[str], w: int, h: int) -> Strokes:
    rng = np.random.default_rng(seed)
    xe = (w - 1) / (h - 1)
    groups = []
    for kind in kinds:
        n = int(rng.integers(1, 4))
        k = {"point": 1, "line": 2, "quadratic": 3, "cubic": 4}.get(kind) or int(
            rng.integers(4, 7))
        pts = rng.uniform(-0.9, 0.9, (n, k, 2)) * [xe, 1.0]
        groups.append(StrokeGroup(kind, pts, 1.0, grey=rng.uniform(0.3, 1.0, n)))
    return Strokes(Canvas(w, h), groups)


def _expected_page_geometry(strokes: Strokes, page: PageSpec):
    """The input strokes on the page (mm), densely sampled, clipped to the drawable area."""
    xe = strokes.canvas.x_extent
    pw, ph = (v / PX_PER_MM for v in vp.convert_page_size(page.paper))
    lo, hi = min(pw, ph), max(pw, ph)
    if page.orientation == "portrait" or (page.orientation == "auto" and xe <= 1):
        pw, ph = lo, hi
    else:
        pw, ph = hi, lo
    m = page.margin_mm
    aw, ah = pw - 2 * m, ph - 2 * m
    if page.fit:
        s = min(aw / (2 * xe), ah / 2)
    else:
        s = strokes.canvas.scale * page.scale / PX_PER_MM
    if page.center:
        ox, oy = m + (aw - 2 * xe * s) / 2, m + (ah - 2 * s) / 2
    else:
        ox, oy = m, m
    geoms = []
    for g in strokes.groups:
        for ctrl in g.points:
            if g.kind == "point":
                dense = ctrl
            elif g.kind in ("line", "polyline"):
                dense = ctrl
            elif g.kind in ("quadratic", "cubic"):
                dense = _bezier_dense(ctrl)
            else:
                dense = sample_curve("catmull_rom", torch.tensor(ctrl[None]), 200)[0].numpy()
            page_pts = (dense + [xe, 1.0]) * s + [ox, oy]
            geoms.append(shapely.Point(page_pts[0]) if g.kind == "point"
                         else shapely.LineString(page_pts))
    area = shapely.box(m, m, pw - m, ph - m)
    clipped = [shapely.intersection(gm, area) for gm in geoms]
    return [c for c in clipped if not c.is_empty], (pw, ph)


layouts = st.fixed_dictionaries({
    "paper": st.sampled_from(["a4", "a5", "a6", "letter", "200x150mm"]),
    "orientation": st.sampled_from(["auto", "portrait", "landscape"]),
    "margin_mm": st.floats(0, 25),
    "fit": st.booleans(),
    "center": st.booleans(),
    "scale": st.floats(0.3, 1.5),
})


@SETTINGS
@given(
    seed=st.integers(0, 2**31),
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=5),
    size=st.tuples(st.integers(30, 220), st.integers(30, 220)),
    layout=layouts,
    profile_name=st.sampled_from(sorted(PROFILES)),
    tolerance=st.floats(0.02, 0.2),
    two_opt=st.booleans(),
)
def test_drawn_geometry_matches_input(seed, kinds, size, layout, profile_name, tolerance,
                                      two_opt) -> None:
    strokes = _random_strokes(seed, kinds, *size)
    page = PageSpec(**layout)
    profile = PROFILES[profile_name]
    merge = 0.05
    opts = VectorOptions(tolerance_mm=tolerance, min_length_mm=0.0, min_intensity=0.0,
                         merge_tolerance_mm=merge, two_opt=two_opt)
    res = make_gcode(strokes, profile=profile, page=page, options=opts)
    r = run(res.program.text())  # raises on any pen-state violation
    # bounds: every position the machine is sent to
    xs = np.array([mv[0] for mv in r.moves])
    ys = np.array([mv[1] for mv in r.moves])
    assert xs.min() >= profile.x_min and xs.max() <= profile.x_max
    assert ys.min() >= profile.y_min and ys.max() <= profile.y_max
    assert all(len(ln.text) <= profile.max_line_length for ln in res.program.lines)

    expected, paper = _expected_page_geometry(strokes, page)
    if not expected:
        assert not r.segments and not r.dots
        return

    def to_m(g):
        return shapely.transform(g, lambda c: to_machine(c, paper, profile))

    want = shapely.GeometryCollection([to_m(g) for g in expected])
    drawn_parts = [shapely.LineString(s) for s in r.segments] + [
        shapely.Point(d) for d in r.dots]
    assert drawn_parts, "nothing drawn"
    drawn = shapely.GeometryCollection(drawn_parts)
    # the sampler and simplifier share the tolerance; merging bridges gaps up to `merge`;
    # coordinates are rounded to the profile's decimals
    slack = tolerance + merge + 10 ** -profile.decimals
    d = shapely.hausdorff_distance(drawn, want, densify=0.05)
    assert d <= slack, f"Hausdorff {d:.4f} mm > {slack:.4f}"
    # drawn once: total pen-down length matches (chords shorten curves a little, more so
    # with a coarse tolerance on a tiny drawing; merge bridges lengthen by <= `merge` each)
    want_len = sum(g.length for g in expected)
    got_len = sum(p.length for p in drawn_parts)
    n_lines = res.stats["lines"]
    assert got_len <= want_len + n_lines * merge + 1e-6
    assert got_len >= want_len * 0.97 - 2 * tolerance * len(expected) - 1e-6


@SETTINGS
@given(
    seed=st.integers(0, 2**31),
    bounds=st.tuples(st.floats(-50, 150), st.floats(-50, 150), st.floats(60, 400),
                     st.floats(60, 400)),
    paper=st.sampled_from(["a4", "a5", "a3"]),
)
def test_refused_exactly_when_it_does_not_fit(seed, bounds, paper) -> None:
    strokes = _random_strokes(seed, ["line", "cubic"], 80, 60)
    doc = vectorise(strokes, PageSpec(paper=paper)).document
    base = PROFILES["grbl-servo"]
    wide = replace(base, x_min=-1e4, y_min=-1e4, x_max=1e4, y_max=1e4)
    moves = np.array(run(write_program(doc, wide).text()).moves)
    x0, y0, w, h = bounds
    tight = replace(base, x_min=x0, y_min=y0, x_max=x0 + w, y_max=y0 + h)
    e = 1e-9  # the writer's float tolerance on the bounds
    inside = ((moves[:, 0] >= tight.x_min - e) & (moves[:, 0] <= tight.x_max + e)
              & (moves[:, 1] >= tight.y_min - e) & (moves[:, 1] <= tight.y_max + e))
    # the end block's G0 X0 Y0 must be inside too
    home_ok = (tight.x_min - e <= 0 <= tight.x_max + e
               and tight.y_min - e <= 0 <= tight.y_max + e)
    try:
        prog = write_program(doc, tight)
    except OutOfBoundsError as err:
        assert not (inside.all() and home_ok), str(err)
        assert "does not fit" in str(err)
    else:
        assert inside.all() and home_ok
        run(prog.text())
