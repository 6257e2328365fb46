"""The optimiser (small canvases, few iterations, seeded) and its outputs."""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from plotterd.draw import load_pipeline, optimise, write_outputs
from plotterd.draw.export import catmull_rom_to_bezier, strokes_to_svg
from plotterd.draw.losses import Loss, register_loss
from plotterd.draw.optimise import (
    _Group,
    _Init,
    _make_groups,
    _reinit_vanished,
    resolve_device,
)
from plotterd.draw.primitives import sample_curve
from plotterd.draw.strokes import Canvas, Strokes
from plotterd.errors import ConfigError, InputError, PlotterdError
from plotterd.pipeline import pipeline_from_dict
from plotterd.progress import Cancelled, Progress

DATA = Path(__file__).resolve().parents[1] / "data"
CAMERA = DATA / "camera_small.png"


pytestmark = pytest.mark.usefixtures("one_thread")


def _pipe(**over):
    d = {
        "strokes": [{"kind": "line", "count": 30}],
        "loss": {"type": "blurmse", "sigma": 1.0},
        "resolution": {"height": 32},
        "iterations": 12,
        "lr": 0.02,
        "seed": 1,
    }
    d.update(over)
    return pipeline_from_dict(d)


def _all_points(result):
    return [g.points for g in result.strokes.groups]


def test_loss_decreases_on_a_real_image():
    p = load_pipeline("tiny", overrides={"resolution": {"height": 40}, "iterations": 25})
    r = optimise(CAMERA, p, device="cpu")
    assert len(r.losses) == 25 and len(r.times) == 25
    assert np.mean(r.losses[-5:]) < 0.7 * np.mean(r.losses[:3])
    assert r.strokes.metadata["final_loss"] < r.losses[0]
    assert r.rendering.shape == r.target.shape == (1, 1, 40, r.target.shape[-1])
    assert r.strokes.metadata["source_image"] == str(CAMERA)


def test_fixed_seed_is_bit_identical_and_seeds_differ():
    p = _pipe()
    a = optimise(CAMERA, p, device="cpu")
    b = optimise(CAMERA, p, device="cpu")
    assert a.losses == b.losses
    for x, y in zip(_all_points(a), _all_points(b), strict=True):
        assert np.array_equal(x, y)
    assert torch.equal(a.rendering, b.rendering)
    c = optimise(CAMERA, p, device="cpu", seed=2)
    assert not np.array_equal(_all_points(a)[0], _all_points(c)[0])
    assert c.strokes.metadata["seed"] == 2
    # the global RNG is neither used nor disturbed
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    optimise(CAMERA, p, device="cpu", iterations=1)
    assert torch.equal(torch.rand(3), before)


RESUME_PIPELINES = {
    "lines": {},
    "mixed": {
        "strokes": [
            {"kind": "catmull_rom", "count": 8, "learn_width": True, "learn_grey": True},
            {"kind": "point", "count": 10, "width_px": 2.0, "learn_grey": True,
             "parametrisation": "sigmoid"},
            # starts (and restarts) below the vanishing threshold and learns too slowly to
            # leave it: re-initialised at every check, so resuming must restore the
            # generator's state too
            {"kind": "line", "count": 4, "learn_grey": True, "grey": 0.01},
        ],
        "ink_lr": 1e-5,
        "reinit": True,
        "reinit_every": 2,
        "coarse_to_fine": {"scale": 0.5, "fraction": 0.4},
        "init": "dark",
    },
}


@pytest.mark.parametrize("kind", sorted(RESUME_PIPELINES))
def test_checkpoint_resume_equals_uninterrupted_run(tmp_path, kind):
    p = _pipe(**RESUME_PIPELINES[kind])
    whole = optimise(CAMERA, p, device="cpu")
    ckpt = tmp_path / "opt.ckpt"

    def stop_at_3(pr: Progress) -> None:
        if pr.done == 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        optimise(CAMERA, p, device="cpu", checkpoint=ckpt, checkpoint_every=5, progress=stop_at_3)
    assert ckpt.exists()
    seen = []
    resumed = optimise(
        CAMERA, p, device="cpu", checkpoint=ckpt, checkpoint_every=5,
        progress=lambda pr: seen.append(pr.done),
    )
    assert seen == list(range(4, 13))  # picked up after iteration 3
    assert resumed.losses == whole.losses
    for x, y in zip(_all_points(resumed), _all_points(whole), strict=True):
        assert np.array_equal(x, y)
    for gx, gy in zip(resumed.strokes.groups, whole.strokes.groups, strict=True):
        assert np.array_equal(gx.width_px, gy.width_px)
        assert (gx.grey is None) == (gy.grey is None)
        if gx.grey is not None:
            assert np.array_equal(gx.grey, gy.grey)
    assert torch.equal(resumed.rendering, whole.rendering)
    assert resumed.strokes.metadata["resumed_from_iteration"] == 3
    if kind == "mixed":
        assert resumed.strokes.metadata["reinitialised_strokes"] > 4


def test_checkpoint_from_another_job_is_refused(tmp_path):
    ckpt = tmp_path / "c.ckpt"
    optimise(CAMERA, _pipe(iterations=3), device="cpu", checkpoint=ckpt)
    with pytest.raises(InputError, match="different"):
        optimise(CAMERA, _pipe(iterations=3), device="cpu", checkpoint=ckpt, seed=9)
    ckpt.write_bytes(b"garbage")
    with pytest.raises(InputError, match=str(ckpt)):
        optimise(CAMERA, _pipe(iterations=3), device="cpu", checkpoint=ckpt)
    # a finished checkpoint resumes straight to the end: nothing more to do
    fresh = tmp_path / "d.ckpt"
    a = optimise(CAMERA, _pipe(iterations=3), device="cpu", checkpoint=fresh)
    b = optimise(CAMERA, _pipe(iterations=3), device="cpu", checkpoint=fresh)
    assert a.losses == b.losses and np.array_equal(_all_points(a)[0], _all_points(b)[0])


def test_progress_reports_every_iteration():
    got: list[Progress] = []
    optimise(CAMERA, _pipe(iterations=4), device="cpu", progress=got.append)
    assert [g.done for g in got] == [1, 2, 3, 4]
    assert all(g.stage == "optimise" and g.total == 4 for g in got)
    assert all(isinstance(g.info["loss"], float) and g.eta_s >= 0 for g in got)
    assert got[-1].eta_s == 0 and got[-1].elapsed_s >= got[0].elapsed_s


def test_cancel_stops_at_once():
    calls = []

    def cancel(pr):
        calls.append(pr.done)
        raise Cancelled()

    with pytest.raises(Cancelled):
        optimise(CAMERA, _pipe(iterations=50), device="cpu", progress=cancel)
    assert calls == [1]


def test_dark_initialisation_on_a_canvas_beyond_multinomials_limit():
    # 4100 x 4100 > 2**24 pixels, which torch.multinomial refuses; dark only at the right edge
    h = w = 4100
    t = torch.ones(1, 1, h, w)
    t[..., w - 3:] = 0.0
    canvas = Canvas(w, h)
    init = _Init(_pipe(init="dark"), canvas, t, torch.Generator().manual_seed(0))
    cols = canvas.world_to_pixel(init.anchors(200).numpy())[:, 0]
    assert cols.min() >= w - 3.5 and cols.max() <= w - 0.5


def test_initialisation_lines_short_and_dark_placement():
    # a target black on the left third, white elsewhere
    t = torch.ones(1, 1, 30, 60)
    t[..., :20] = 0.0
    canvas = Canvas(60, 30)
    p = _pipe(iterations=0, init="dark", strokes=[{"kind": "line", "count": 400}])
    r = optimise(t, p, device="cpu")
    pts = r.strokes.groups[0].points
    start = canvas.world_to_pixel(pts[:, 0])
    assert start[:, 0].max() <= 19.5 + 1e-9  # every anchor in the dark third
    assert np.abs(pts[:, 1] - pts[:, 0]).max() <= 0.1 + 1e-6  # ends within +-0.1 world
    u = optimise(t, _pipe(iterations=0, strokes=[{"kind": "line", "count": 400}]), device="cpu")
    ustart = canvas.world_to_pixel(u.strokes.groups[0].points[:, 0])
    assert ustart[:, 0].max() > 40  # uniform: anywhere
    assert abs(u.strokes.groups[0].points[:, 0, 0].mean()) < 0.2
    # curves: control points near each other; points: a single control point
    c = optimise(t, _pipe(iterations=0, strokes=[{"kind": "cubic", "count": 50},
                                                  {"kind": "point", "count": 5}]), device="cpu")
    cp = c.strokes.groups[0].points
    assert np.abs(cp - cp[:, :1]).max() <= 0.1 + 1e-6
    assert c.strokes.groups[1].points.shape == (5, 1, 2)
    # a blank page has no darkness to follow: dark init falls back to uniform
    blank = optimise(torch.ones(1, 1, 30, 60), p, device="cpu")
    assert np.isfinite(blank.strokes.groups[0].points).all()


@pytest.mark.parametrize("margin_px", [0.0, 3.0])
def test_points_are_clamped_to_the_canvas_plus_its_margin(margin_px):
    p = _pipe(lr=0.5, iterations=6, strokes=[{"kind": "quadratic", "count": 20}],
              canvas_margin_px=margin_px)
    r = optimise(CAMERA, p, device="cpu")
    c = r.strokes.canvas
    m = margin_px / c.scale
    pts = r.strokes.groups[0].points
    assert np.abs(pts[..., 0]).max() <= c.x_extent + m + 1e-6
    assert np.abs(pts[..., 1]).max() <= 1.0 + m + 1e-6
    if margin_px:  # with lr 0.5 some control points are pushed past the edge
        assert np.abs(pts[..., 1]).max() > 1.0 + 1e-6 or np.abs(pts[..., 0]).max() > c.x_extent


def test_several_kinds_learned_width_grey_and_colour():
    p = _pipe(
        channels=3,
        composition="over",
        iterations=8,
        strokes=[
            {"kind": "line", "count": 10, "learn_color": True, "learn_width": True},
            {"kind": "polyline", "count": 5, "control_points": 3, "color": [0.8, 0.1, 0.1]},
            {"kind": "point", "count": 6, "learn_color": True, "parametrisation": "sigmoid",
             "learn_grey": True, "grey": 0.7},
        ],
    )
    r = optimise(DATA / "astronaut_small.png", p, device="cpu")
    g = r.strokes.groups
    assert [x.kind for x in g] == ["line", "polyline", "point"]
    assert [x.points.shape for x in g] == [(10, 2, 2), (5, 3, 2), (6, 1, 2)]
    assert r.rendering.shape[1] == 3
    assert not np.allclose(g[0].width_px, 1.0)  # learned
    assert (g[0].width_px >= 0).all() and (g[0].width_px <= 4.0 + 1e-6).all()
    assert g[0].color.shape == (10, 3) and (0 <= g[0].color).all() and (g[0].color <= 1).all()
    assert np.allclose(g[1].color, [0.8, 0.1, 0.1]) and g[1].grey is None
    assert g[2].grey.shape == (6,) and not np.allclose(g[2].grey, 0.7)
    assert np.isfinite(r.losses).all()


def test_coarse_to_fine_runs_both_levels():
    p = _pipe(iterations=10, coarse_to_fine={"scale": 0.5, "fraction": 0.5})
    r = optimise(CAMERA, p, device="cpu")
    assert len(r.losses) == 10
    assert r.rendering.shape[-2] == 32  # final rendering at full resolution
    plain = optimise(CAMERA, _pipe(iterations=10), device="cpu")
    assert r.losses[:5] != plain.losses[:5]  # the first half compares coarse images


def test_reinit_replaces_vanished_strokes_only():
    p = _pipe(strokes=[{"kind": "line", "count": 6, "learn_width": True, "learn_grey": True}],
              reinit=True)
    canvas = Canvas(40, 32)
    gen = torch.Generator().manual_seed(0)
    init = _Init(p, canvas, torch.ones(1, 1, 32, 40), gen)
    groups = _make_groups(p, init, torch.device("cpu"))
    g: _Group = groups[0]
    opt = torch.optim.Adam([x for gr in groups for x in gr.params()], lr=0.01)
    sum(x.sum() for x in g.params()).backward()
    opt.step()
    with torch.no_grad():
        g.width[1] = 0.0  # thinned to nothing
        g.grey_raw[4] = 0.0  # faded to nothing
    before = g.points.detach().clone()
    assert _reinit_vanished(groups, init, opt) == 2
    moved = (g.points.detach() != before).flatten(1).any(1)
    assert moved.tolist() == [False, True, False, False, True, False]
    assert g.width_px()[1].item() == pytest.approx(1.0)
    assert g.grey()[4].item() == pytest.approx(1.0)
    assert opt.state[g.points]["exp_avg"][1].abs().sum() == 0
    assert opt.state[g.points]["exp_avg"][0].abs().sum() > 0


def test_snapshot_is_a_copy():
    p = _pipe()
    init = _Init(p, Canvas(40, 32), torch.ones(1, 1, 32, 40), torch.Generator().manual_seed(0))
    g = _make_groups(p, init, torch.device("cpu"))[0]
    snap = g.snapshot()
    keep = snap.points.copy()
    with torch.no_grad():
        g.points.add_(0.5)
    assert np.array_equal(snap.points, keep)


def test_target_tensor_input_and_channel_conversion():
    rgb = torch.rand(1, 3, 24, 30, generator=torch.Generator().manual_seed(0))
    r = optimise(rgb, _pipe(iterations=2), device="cpu")
    assert r.target.shape == (1, 1, 24, 30)
    grey = rgb[:, :1]
    r3 = optimise(grey, _pipe(iterations=2, channels=3), device="cpu")
    assert r3.target.shape == (1, 3, 24, 30)
    with pytest.raises(InputError, match="target tensor"):
        optimise(torch.rand(2, 1, 8, 8), _pipe(), device="cpu")
    bad = torch.ones(1, 1, 8, 8)
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        optimise(bad, _pipe(), device="cpu")


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="not available"):
            resolve_device("cuda")
    else:  # an ordinal past the last GPU is refused here, not by the first .to(device)
        with pytest.raises(ConfigError, match="no CUDA device 64"):
            resolve_device("cuda:64")


class _RecordingLoss(Loss):
    """A real (MSE) loss that also records the allow_random_weights it was given."""

    seen: list[bool] = []

    def __init__(self, target, allow_random_weights=False):
        super().__init__(target)
        _RecordingLoss.seen.append(allow_random_weights)
        self.allow = allow_random_weights

    def forward(self, image):
        return ((image - self.target) ** 2).mean()

    def metadata(self):
        return {"weights": "random" if self.allow else "none"}


register_loss("test-recording", params={"allow_random_weights": False})(_RecordingLoss)


def test_allow_random_weights_reaches_losses_that_accept_it():
    _RecordingLoss.seen.clear()
    p = _pipe(iterations=1, loss={"type": "test-recording"}, allow_random_weights=True)
    r = optimise(CAMERA, p, device="cpu")
    assert _RecordingLoss.seen == [True]
    assert r.strokes.metadata["loss_metadata"] == {"weights": "random"}
    _RecordingLoss.seen.clear()
    optimise(CAMERA, _pipe(iterations=1, loss={"type": "test-recording"}), device="cpu")
    assert _RecordingLoss.seen == [False]


# ------------------------------------------------------------------------------- outputs


def test_write_outputs(tmp_path):
    p = _pipe(iterations=5, strokes=[
        {"kind": "line", "count": 6},
        {"kind": "catmull_rom", "count": 3, "control_points": 5, "grey": 0.5},
        {"kind": "point", "count": 4, "width_px": 2.0},
        {"kind": "cubic", "count": 2},
    ])
    r = optimise(CAMERA, p, device="cpu")
    paths = write_outputs(r, tmp_path / "out")
    assert set(paths) == {"strokes", "svg", "preview", "loss_csv", "loss_png"}
    assert all(x.is_file() and x.stat().st_size > 0 for x in paths.values())
    assert not list((tmp_path / "out").glob("*.tmp"))

    back = Strokes.load(paths["strokes"])
    assert back.canvas == r.strokes.canvas and len(back) == 15
    assert np.allclose(back.groups[1].points, r.strokes.groups[1].points)
    assert back.metadata["loss"] == "blurmse" and back.metadata["iterations"] == 5
    assert back.metadata["device"] == "cpu" and "elapsed_s" in back.metadata
    assert back.pipeline == p.to_dict()

    with paths["loss_csv"].open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["iteration", "loss", "elapsed_s"]
    assert [float(x[1]) for x in rows[1:]] == r.losses
    assert [int(x[0]) for x in rows[1:]] == list(range(5))

    prev = cv2.imread(str(paths["preview"]))
    assert prev.shape[0] >= 256 and prev.shape[1] > 2 * prev.shape[0] * 0.9
    assert cv2.imread(str(paths["loss_png"])) is not None

    root = ET.parse(paths["svg"]).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert root.get("width") == str(r.strokes.canvas.width)
    assert len(root.findall(f".//{ns}path")) == 6 + 3 + 2
    assert len(root.findall(f".//{ns}circle")) == 4
    assert root.findall(f".//{ns}g")[1].findall(f"{ns}path")[0].get("opacity") == "0.5"

    # an output that cannot be written is one PlotterdError naming the directory
    blocked = tmp_path / "blocked"
    (blocked / "strokes.json").mkdir(parents=True)
    with pytest.raises(PlotterdError, match="blocked: cannot write"):
        write_outputs(r, blocked)


def test_svg_is_readable_by_vpype(tmp_path):
    import vpype

    p = _pipe(iterations=0, strokes=[{"kind": "line", "count": 7},
                                     {"kind": "catmull_rom", "count": 2}])
    r = optimise(CAMERA, p, device="cpu")
    path = tmp_path / "d.svg"
    path.write_text(strokes_to_svg(r.strokes))
    lc, w, h = vpype.read_svg(str(path), quantization=0.05)
    assert len(lc) == 9
    # a line's end points come back where the canvas puts them: pixel units from the page's
    # top-left corner, which is half a pixel before the first pixel centre
    a = r.strokes.canvas.world_to_pixel(r.strokes.groups[0].points[0]) + 0.5
    got = lc.lines[0]
    assert abs(got[0] - complex(*a[0])) < 1e-2 and abs(got[-1] - complex(*a[1])) < 1e-2


def test_catmull_rom_bezier_is_the_rasterisers_curve():
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(5, 6, 2, generator=g, dtype=torch.float64) * 50
    pts[0, 2] = pts[0, 1]  # coincident control points stay finite
    seg = 10
    sampled = sample_curve("catmull_rom", pts, seg).numpy()
    u = np.linspace(0, 1, seg + 1)[:, None]
    for i in range(len(pts)):
        spans = catmull_rom_to_bezier(pts[i].numpy())
        assert spans.shape == (3, 4, 2)
        curve = []
        for j, b in enumerate(spans):
            bez = ((1 - u) ** 3 * b[0] + 3 * (1 - u) ** 2 * u * b[1]
                   + 3 * (1 - u) * u**2 * b[2] + u**3 * b[3])
            curve.append(bez if j == 0 else bez[1:])
        assert np.allclose(np.concatenate(curve), sampled[i], atol=1e-6)
