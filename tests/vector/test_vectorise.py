"""vectorise(): page layout, dropping, pens/layers, SVG and strokes.json input, ordering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import vpype as vp

from plotterd.draw.strokes import Canvas, StrokeGroup, Strokes
from plotterd.errors import ConfigError, InputError
from plotterd.vector import (
    PX_PER_MM,
    PageSpec,
    Pen,
    VectorOptions,
    grey_pens,
    ordering,
    vectorise,
)


def _mm_lines(doc: vp.Document) -> list[np.ndarray]:
    return [ln / PX_PER_MM for lid in sorted(doc.layers) for ln in doc.layers[lid].lines]


def _corners_strokes(w: int = 201, h: int = 101) -> Strokes:
    """A rectangle around the whole canvas: its world extent is the canvas."""
    xe = (w - 1) / (h - 1)
    rect = np.array([[[-xe, -1], [xe, -1], [xe, 1], [-xe, 1], [-xe, -1]]])
    return Strokes(Canvas(w, h), [StrokeGroup("polyline", rect, [1.0])])


def test_fit_and_centre_landscape_auto() -> None:
    res = vectorise(_corners_strokes(), PageSpec(paper="a4", margin_mm=10))
    doc = res.document
    # a 2:1 drawing picks landscape A4 (297 x 210) and fills the 277 mm wide drawable area
    assert doc.page_size == pytest.approx((297 * PX_PER_MM, 210 * PX_PER_MM))
    (line,) = _mm_lines(doc)
    xs, ys = line.real, line.imag
    assert xs.min() == pytest.approx(10) and xs.max() == pytest.approx(287)
    height = 277 / 2
    assert ys.min() == pytest.approx(105 - height / 2)
    assert ys.max() == pytest.approx(105 + height / 2)
    assert res.stats["page_mm"] == [297.0, 210.0]
    assert res.stats["draw_mm"] == pytest.approx(2 * (277 + height), rel=1e-6)


def test_portrait_no_center_margin() -> None:
    res = vectorise(_corners_strokes(), PageSpec(paper="a5", orientation="portrait",
                                                 margin_mm=20, center=False))
    (line,) = _mm_lines(res.document)
    assert res.stats["page_mm"] == [148.0, 210.0]
    assert line.real.min() == pytest.approx(20) and line.imag.min() == pytest.approx(20)
    assert line.real.max() == pytest.approx(148 - 20)


def test_no_fit_keeps_pixel_size_and_clips() -> None:
    # 1 canvas pixel = 1 CSS px: a 2001 x 1001 px canvas is 529 x 265 mm, more than A4
    strokes = _corners_strokes(2001, 1001)
    mid = np.array([[[-2.0, 0.0], [2.0, 0.0]]])  # a horizontal line through the centre
    strokes.groups.append(StrokeGroup("line", mid, [1.0]))
    res = vectorise(strokes, PageSpec(paper="a4", orientation="landscape", fit=False))
    lines = _mm_lines(res.document)
    # the frame lies wholly outside the drawable area; the middle line is cut to it
    assert len(lines) == 1
    (line,) = lines
    assert sorted(line.real) == pytest.approx([10, 287])
    assert line.imag == pytest.approx([105, 105])
    full = (2 * (2000 + 1000) + 4 * 500) / PX_PER_MM
    assert res.stats["clipped_mm"] == pytest.approx(full - 277)


def test_custom_paper_and_errors() -> None:
    res = vectorise(_corners_strokes(), PageSpec(paper="300x100mm", margin_mm=0))
    assert res.stats["page_mm"] == [300.0, 100.0]
    with pytest.raises(ConfigError) as e:
        vectorise(_corners_strokes(), PageSpec(paper="b99"))
    assert e.value.key == "page.paper"
    with pytest.raises(ConfigError) as e:
        vectorise(_corners_strokes(), PageSpec(margin_mm=200))
    assert e.value.key == "page.margin_mm"
    with pytest.raises(ConfigError) as e:
        vectorise(_corners_strokes(), PageSpec(orientation="sideways"))
    assert e.value.key == "page.orientation"
    with pytest.raises(ConfigError) as e:
        vectorise(_corners_strokes(), options=VectorOptions(tolerance_mm=0))
    assert e.value.key == "vector.tolerance_mm"
    with pytest.raises(ConfigError) as e:
        vectorise(_corners_strokes(), options=VectorOptions(pens=[Pen(color="notacolour")]))
    assert e.value.key == "vector.pens[0].color"


def test_drops_vanished_short_keeps_dots() -> None:
    lines = np.array([[[-0.5, 0.0], [0.5, 0.0]]] * 4)
    lines[3] = [[0.0, 0.5], [0.0005, 0.5]]  # ~0.05 mm long once on the page: too short
    g = StrokeGroup("line", lines, width_px=[1.0, 0.0, 1.0, 1.0], grey=[1.0, 1.0, 0.01, 1.0])
    dots = StrokeGroup("point", np.array([[[0.2, 0.2]], [[0.3, -0.3]]]), [1.0, 1.0])
    res = vectorise(Strokes(Canvas(101, 101), [g, dots]), PageSpec())
    s = res.stats
    assert s["strokes_in"] == 6
    assert s["dropped_vanished"] == 2  # width 0 and grey 0.01
    assert s["dropped_short"] == 1
    assert s["dots"] == 2
    assert s["lines"] == 3  # one line and two dots


def test_grey_levels_and_colours_go_to_pens() -> None:
    n = 6
    pts = np.stack([np.linspace(-0.9, 0.9, n), np.zeros(n)], 1)[:, None, :]
    pts = np.concatenate([pts, pts + [0, 0.5]], axis=1)
    grey = np.array([1.0, 0.95, 0.55, 0.5, 0.2, 0.25])
    g = StrokeGroup("line", pts, np.ones(n), grey=grey)
    res = vectorise(Strokes(Canvas(101, 101), [g]), options=VectorOptions(pens=grey_pens(3)))
    doc = res.document
    assert sorted(doc.layers) == [1, 2, 3]
    assert [len(doc.layers[i]) for i in (1, 2, 3)] == [2, 2, 2]
    assert doc.layers[1].property(vp.METADATA_FIELD_COLOR) == vp.Color("#000000")
    assert doc.layers[1].property(vp.METADATA_FIELD_PEN_WIDTH) == pytest.approx(0.3 * PX_PER_MM)
    # colours: a red stroke goes to the red pen
    col = StrokeGroup("line", pts[:2], [1.0, 1.0], color=[[0.9, 0.1, 0.1], [0.1, 0.1, 0.8]])
    res = vectorise(Strokes(Canvas(101, 101), [col]),
                    options=VectorOptions(pens=[Pen("red"), Pen("blue"), Pen("black")]))
    assert sorted(res.document.layers) == [1, 2]
    assert res.document.layers[1].property(vp.METADATA_FIELD_NAME) == "pen 1 red"


def test_strokes_json_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    s = Strokes(Canvas(64, 48), [StrokeGroup("cubic", rng.uniform(-1, 1, (5, 4, 2)), 1.0)])
    path = tmp_path / "strokes.json"
    s.save(path)
    a = vectorise(path, PageSpec())
    b = vectorise(s, PageSpec())
    assert a.stats["draw_mm"] == pytest.approx(b.stats["draw_mm"])
    with pytest.raises(InputError):
        vectorise(tmp_path / "missing.json", PageSpec())
    with pytest.raises(InputError):
        vectorise(tmp_path / "drawing.png", PageSpec())
    # a malformed file is one InputError naming the file, not a ZeroDivisionError
    flat = Strokes(Canvas(64, 1), s.groups)
    flat.save(path)
    with pytest.raises(InputError, match="too small") as e:
        vectorise(path, PageSpec())
    assert str(path) in str(e.value)
    d = s.to_json()
    d["groups"][0]["kind"] = "spline"
    path.write_text(json.dumps(d))
    with pytest.raises(InputError, match="spline") as e:
        vectorise(path, PageSpec())
    assert str(path) in str(e.value)


SVG = """<svg xmlns="http://www.w3.org/2000/svg"
 xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape"
 width="100mm" height="50mm" viewBox="0 0 100 50">
 <g inkscape:groupmode="layer" inkscape:label="red ink" id="layer1"
    style="stroke:#ff0000;fill:none">
  <path d="M 10 10 C 30 0, 50 40, 90 10" />
  <line x1="10" y1="40" x2="90" y2="40"/>
 </g>
 <g inkscape:groupmode="layer" inkscape:label="blue" id="layer2">
  <polyline points="20,20 40,30 60,20" stroke="blue" fill="none"/>
 </g>
</svg>
"""


def test_svg_input_keeps_layers_and_scales(tmp_path: Path) -> None:
    path = tmp_path / "in.svg"
    path.write_text(SVG)
    res = vectorise(path, PageSpec(paper="a4", margin_mm=10), VectorOptions(tolerance_mm=0.02))
    doc = res.document
    assert sorted(doc.layers) == [1, 2]
    assert doc.layers[1].property(vp.METADATA_FIELD_COLOR) == vp.Color("#ff0000")
    assert doc.layers[2].property(vp.METADATA_FIELD_NAME) == "blue"
    # the 100 x 50 mm page fills the 277 mm drawable width of landscape A4: scale 2.77
    scale = 277 / 100
    straight = [ln for ln in doc.layers[1].lines if len(ln) == 2]
    assert len(straight) == 1
    assert abs(straight[0][1] - straight[0][0]) / PX_PER_MM == pytest.approx(80 * scale)
    # the polyline's length is known exactly
    (poly,) = doc.layers[2].lines
    assert np.abs(np.diff(poly)).sum() / PX_PER_MM == pytest.approx(
        2 * np.hypot(20, 10) * scale, rel=1e-6)
    bad = tmp_path / "bad.svg"
    bad.write_text("<svg><g>")
    with pytest.raises(InputError):
        vectorise(bad, PageSpec())


def test_svg_written_by_vpype_roundtrip(tmp_path: Path) -> None:
    doc = vp.Document(page_size=vp.convert_page_size("a5"))
    doc.add(vp.LineCollection([vp.circle(200, 300, 100, 0.1)]), 1)
    path = tmp_path / "circle.svg"
    with path.open("w") as f:
        vp.write_svg(f, doc)
    res = vectorise(path, PageSpec(paper="a5", orientation="portrait", margin_mm=0))
    # same page size, no margin: scale 1, the circle keeps its size (within tolerance)
    assert res.stats["scale_mm_per_unit"] * PX_PER_MM == pytest.approx(1.0)
    assert res.stats["draw_mm"] == pytest.approx(2 * np.pi * 100 / PX_PER_MM, rel=2e-3)


def _random_lines(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    starts = rng.uniform(0, 1000, n) + 1j * rng.uniform(0, 700, n)
    return [s + np.cumsum(rng.normal(0, 3, 3) + 1j * rng.normal(0, 3, 3)) for s in starts]


def _key(ln: np.ndarray) -> tuple:
    a, b = tuple(np.round(ln, 9)), tuple(np.round(ln[::-1], 9))
    return min(a, b)


@pytest.mark.parametrize("use_two_opt", [False, True])
def test_ordering_is_a_permutation_and_cuts_travel(use_two_opt: bool) -> None:
    lines = _random_lines(600, 1)
    out = ordering.sort_lines(lines, 0j, flip=True, use_two_opt=use_two_opt)
    assert sorted(map(_key, out)) == sorted(map(_key, lines))
    before = ordering.pen_up_length(lines, 0j)
    greedy = ordering.pen_up_length(ordering.greedy(lines, 0j), 0j)
    after = ordering.pen_up_length(out, 0j)
    assert after < before / 5
    if use_two_opt:
        assert after < greedy * 0.97


def test_ordering_without_flip_keeps_directions() -> None:
    lines = _random_lines(200, 2)
    out = ordering.sort_lines(lines, 0j, flip=False)
    assert sorted(tuple(np.round(ln, 9)) for ln in out) == sorted(
        tuple(np.round(ln, 9)) for ln in lines)


def test_merge_joins_touching_lines() -> None:
    # three segments end to end (one reversed) and one far away
    a = np.array([0, 10 + 0j])
    b = np.array([20 + 0j, 10.01 + 0j])
    c = np.array([20.02 + 0j, 30 + 0j])
    d = np.array([100 + 100j, 110 + 100j])
    from plotterd.vector.vectorise import _merge

    out = _merge([a, b, c, d], 0.05 * PX_PER_MM, True)
    assert len(out) == 2
    merged = max(out, key=len)
    assert {merged[0], merged[-1]} == {0j, 30 + 0j}


def test_strokes_outside_the_picture_are_clipped_to_it():
    """The optimiser lets strokes leave the canvas by a few pixels; the page must only show
    what lies on the picture, even where the drawable area is larger than the picture."""
    import numpy as np

    from plotterd.draw.strokes import Canvas, StrokeGroup, Strokes
    from plotterd.vector import PageSpec, vectorise

    canvas = Canvas(101, 101)  # square picture on an A4 portrait page: room above and below
    pts = np.array([
        [[-0.5, -1.04], [0.5, -1.04]],   # wholly above the picture (off canvas)
        [[0.0, -1.5], [0.0, 0.5]],       # crosses the top edge
        [[-0.5, 0.0], [0.5, 0.0]],       # inside
    ])
    strokes = Strokes(canvas, [StrokeGroup("line", pts, np.ones(3))])
    res = vectorise(strokes, PageSpec(paper="a4", orientation="portrait", margin_mm=10))
    lines = [ln for _, lc in res.document.layers.items() for ln in lc.lines]
    ys = np.concatenate([ln.imag for ln in lines])
    xs = np.concatenate([ln.real for ln in lines])
    # the picture is fitted to the 190 mm wide drawable area and centred vertically
    px_per_mm = 96 / 25.4
    top = (297 - 190) / 2 * px_per_mm
    assert len(lines) == 2
    assert ys.min() >= top - 1e-6
    assert xs.min() >= 10 * px_per_mm - 1e-6
