"""The optimiser: gradient descent on stroke parameters so the rendering matches the target.

Parameters live in WORLD units (y in [-1, 1], as the papers, so lr 0.01 means the same at
every resolution) and are mapped to pixels with :class:`~plotterd.draw.strokes.Canvas`
inside the forward pass. Each iteration: render (plotterd.draw.raster.render), loss
(``build_loss(cfg, target)`` then ``loss(image)`` -- nothing else, so any registered loss
plugs in), backward, Adam step, clamp to the canvas.

Determinism: every random draw (initialisation, re-initialisation) comes from one local
``torch.Generator`` seeded with the pipeline's seed, made on the CPU so CUDA runs start from
the same strokes; the global RNGs are never touched. On CPU a fixed seed gives bit-identical
results, and a run resumed from a checkpoint (parameters, Adam state, generator state, loss
history) ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import plotterd
from plotterd import atomic
from plotterd.draw.losses import build_loss, loss_spec
from plotterd.draw.raster import StrokeBatch, render
from plotterd.draw.strokes import SIGMA_PER_PIXEL_WIDTH, Canvas, StrokeGroup, Strokes
from plotterd.errors import ConfigError, InputError, PlotterdError
from plotterd.pipeline import STRUCTURE_INITS, Pipeline, StrokeSpec
from plotterd.progress import Cancelled, Progress, ProgressCallback

__all__ = ["DrawResult", "optimise", "resolve_device", "CHECKPOINT_VERSION"]

CHECKPOINT_VERSION = 1
# a learned stroke thinner than this (pixels) or fainter than this ink is "vanished"
VANISHED_WIDTH_PX = 0.05
VANISHED_INK = 0.02
# learned widths are clamped to [0, this x width_px] unless the group sets max_width_px
DEFAULT_MAX_WIDTH_FACTOR = 4.0
# torch.multinomial refuses more categories than this (pixels of a dark init's canvas)
_MULTINOMIAL_MAX = 2**24
# sigmoid-parametrised grey/colour start at most this close to 0 or 1 (logit stays finite)
_SIGMOID_EDGE = 0.02


@dataclass
class DrawResult:
    strokes: Strokes  # a snapshot, world units
    losses: list[float]  # loss at each iteration (before that iteration's step)
    rendering: torch.Tensor  # (1, C, H, W) final rendering, CPU
    target: torch.Tensor  # (1, C, H, W) the target at working resolution, CPU
    elapsed_s: float  # optimisation time, including the part before a resume
    times: list[float] = field(default_factory=list)  # elapsed_s after each iteration
    device: str = "cpu"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cpu", "cuda", "cuda:N" as given."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError("device", f"unknown device {device!r} (auto, cpu, cuda)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA was asked for but is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            "device", f"no CUDA device {dev.index} (this machine has {torch.cuda.device_count()})"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError("device", f"unsupported device {device!r} (auto, cpu, cuda)")
    return dev


# --------------------------------------------------------------------------- parameters


class _Group:
    """The learnable tensors of one stroke group (world units) and how to render them."""

    def __init__(self, spec: StrokeSpec, points: torch.Tensor, scale: float):
        self.spec = spec
        self.scale = scale  # full-resolution pixels per world unit
        self.points = points.requires_grad_(True)
        n = points.shape[0]
        w = spec.width_px / scale
        self.width = torch.full((n,), w, dtype=torch.float32, device=points.device)
        self.max_width = (spec.max_width_px or spec.width_px * DEFAULT_MAX_WIDTH_FACTOR) / scale
        self.grey_raw: torch.Tensor | None = None
        self.color_raw: torch.Tensor | None = None
        # (N, K, 1): 0 where a structure start holds a control point (see held_points)
        self.free: torch.Tensor | None = None
        if spec.learn_width:
            self.width.requires_grad_(True)

    def params(self) -> list[torch.Tensor]:
        out = [self.points]
        if self.spec.learn_width:
            out.append(self.width)
        if self.grey_raw is not None:
            out.append(self.grey_raw)
        if self.color_raw is not None:
            out.append(self.color_raw)
        return out

    def _ink(self, raw: torch.Tensor) -> torch.Tensor:
        if self.spec.parametrisation == "sigmoid":
            return torch.sigmoid(raw)
        return raw.clamp(0.0, 1.0)

    def _raw(self, value: torch.Tensor) -> torch.Tensor:
        if self.spec.parametrisation == "sigmoid":
            return torch.logit(value.clamp(_SIGMOID_EDGE, 1.0 - _SIGMOID_EDGE))
        return value.clone()

    def grey(self) -> torch.Tensor | None:
        if self.grey_raw is not None:
            return self._ink(self.grey_raw)
        if self.spec.grey != 1.0:
            return torch.full_like(self.width, self.spec.grey)
        return None

    def color(self) -> torch.Tensor | None:
        if self.color_raw is not None:
            return self._ink(self.color_raw)
        if self.spec.color is not None:
            c = torch.tensor(self.spec.color, dtype=torch.float32, device=self.points.device)
            return c.expand(self.points.shape[0], 3)
        return None

    def width_px(self) -> torch.Tensor:
        return self.width * self.scale

    def batch(self, canvas: Canvas, level: _Level) -> StrokeBatch:
        ox, oy = canvas.offset
        off = torch.tensor([ox, oy], dtype=torch.float32, device=self.points.device)
        px = self.points * self.scale + off
        width_px = self.width_px()
        if level.coarse:
            # area-resampling pixel centres: full pixel c covers [c - .5, c + .5]
            r = torch.tensor([level.rx, level.ry], dtype=torch.float32, device=px.device)
            px = (px + 0.5) * r - 0.5
            # at least 1 px wide, else thin strokes fall between coarse pixel centres
            width_px = (width_px * level.ry).clamp_min(1.0)
        return StrokeBatch(
            kind=self.spec.kind,
            points=px,
            sigma=width_px * SIGMA_PER_PIXEL_WIDTH,
            grey=self.grey(),
            color=self.color(),
        )

    @torch.no_grad()
    def project(self, x_extent: float, margin: float = 0.0) -> None:
        """Keep parameters valid after a step: points on the canvas plus ``margin`` world
        units (every control point), widths in [0, max], clamp-parametrised inks in [0, 1]."""
        self.points[..., 0].clamp_(-x_extent - margin, x_extent + margin)
        self.points[..., 1].clamp_(-1.0 - margin, 1.0 + margin)
        if self.spec.learn_width:
            self.width.clamp_(0.0, self.max_width)
        if self.spec.parametrisation == "clamp":
            for raw in (self.grey_raw, self.color_raw):
                if raw is not None:
                    raw.clamp_(0.0, 1.0)

    @torch.no_grad()
    def vanished(self) -> torch.Tensor:
        gone = torch.zeros(self.points.shape[0], dtype=torch.bool, device=self.points.device)
        if self.spec.learn_width:
            gone |= self.width_px() < VANISHED_WIDTH_PX
        if self.grey_raw is not None:
            gone |= self._ink(self.grey_raw) < VANISHED_INK
        if self.color_raw is not None:  # white ink on white paper draws nothing
            gone |= (1.0 - self._ink(self.color_raw)).amax(-1) < VANISHED_INK
        return gone

    def snapshot(self) -> StrokeGroup:
        """A copy in numpy float64 (never a view of the live parameters)."""
        with torch.no_grad():

            def copy(t: torch.Tensor | None):
                return None if t is None else t.detach().to("cpu", torch.float64).clone().numpy()

            return StrokeGroup(
                kind=self.spec.kind,
                points=copy(self.points),
                width_px=copy(self.width_px()),
                grey=copy(self.grey()),
                color=copy(self.color()),
            )


@dataclass
class _Level:
    height: int
    width: int
    coarse: bool = False
    rx: float = 1.0
    ry: float = 1.0


class _Init:
    """Draws initial stroke parameters from the job's generator (on the CPU)."""

    def __init__(
        self, pipeline: Pipeline, canvas: Canvas, target: torch.Tensor, gen: torch.Generator
    ):
        self.pipeline, self.canvas, self.gen = pipeline, canvas, gen
        self.darkness: torch.Tensor | None = None
        if pipeline.init == "dark":
            d = (1.0 - target.detach().to("cpu", torch.float64).mean(1)).clamp_min(0.0).flatten()
            self.darkness = d if float(d.sum()) > 1e-9 else None  # blank page: uniform

    def _uniform(self, n: int, k: int = 1) -> torch.Tensor:
        u = torch.rand((n, k, 2), generator=self.gen, dtype=torch.float64) * 2.0 - 1.0
        u[..., 0] *= self.canvas.x_extent
        return u

    def anchors(self, n: int) -> torch.Tensor:
        """(n, 2) world positions: uniform, or drawn from the target's darkness."""
        if self.darkness is None or n == 0:
            return self._uniform(n)[:, 0]
        if self.darkness.numel() <= _MULTINOMIAL_MAX:
            idx = torch.multinomial(self.darkness, n, replacement=True, generator=self.gen)
        else:  # inverse CDF: same distribution, no category limit
            cdf = self.darkness.cumsum(0)
            u = torch.rand(n, generator=self.gen, dtype=torch.float64) * cdf[-1]
            idx = torch.searchsorted(cdf, u, right=True).clamp_max(cdf.numel() - 1)
        w = self.canvas.width
        jitter = torch.rand((n, 2), generator=self.gen, dtype=torch.float64) - 0.5
        cr = torch.stack([(idx % w).double(), (idx // w).double()], -1) + jitter
        ox, oy = self.canvas.offset
        return (cr - torch.tensor([ox, oy], dtype=torch.float64)) / self.canvas.scale

    def points(self, spec: StrokeSpec, n: int) -> torch.Tensor:
        """(n, K, 2) float32 world points: an anchor, then the other control points within
        +-init_spread of it (lines start short and grow, as in the papers)."""
        start = self.anchors(n)[:, None, :]
        k = spec.control_points
        if k > 1:
            spread = self.pipeline.init_spread
            rest = start + (torch.rand((n, k - 1, 2), generator=self.gen, dtype=torch.float64)
                            * 2.0 - 1.0) * spread
            pts = torch.cat([start, rest], 1)
        else:
            pts = start
        pts[..., 0].clamp_(-self.canvas.x_extent, self.canvas.x_extent)
        pts[..., 1].clamp_(-1.0, 1.0)
        return pts.float()

    def colors(self, spec: StrokeSpec, n: int) -> torch.Tensor:
        if spec.color is not None:
            return torch.tensor(spec.color, dtype=torch.float32).expand(n, 3).clone()
        return torch.rand((n, 3), generator=self.gen, dtype=torch.float64).float()


def _make_groups(pipeline: Pipeline, init: _Init, device: torch.device) -> list[_Group]:
    groups = []
    for spec in pipeline.strokes:
        g = _Group(spec, init.points(spec, spec.count).to(device), init.canvas.scale)
        if spec.learn_grey:
            g.grey_raw = g._raw(torch.full((spec.count,), spec.grey, device=device))
            g.grey_raw.requires_grad_(True)
        if spec.learn_color:
            g.color_raw = g._raw(init.colors(spec, spec.count).to(device))
            g.color_raw.requires_grad_(True)
        groups.append(g)
    return groups


@torch.no_grad()
def _reinit_vanished(
    groups: list[_Group], init: _Init, opt: torch.optim.Adam
) -> int:
    """Give strokes that vanished fresh parameters and forget their Adam moments."""
    count = 0
    for g in groups:
        idx = torch.nonzero(g.vanished()).flatten()
        n = int(idx.numel())
        if n == 0:
            continue
        count += n
        dev = g.points.device
        g.points[idx] = init.points(g.spec, n).to(dev)
        if g.spec.learn_width:
            g.width[idx] = g.spec.width_px / g.scale
        if g.grey_raw is not None:
            g.grey_raw[idx] = g._raw(torch.full((n,), g.spec.grey, device=dev))
        if g.color_raw is not None:
            g.color_raw[idx] = g._raw(init.colors(g.spec, n).to(dev))
        for p in g.params():
            st = opt.state.get(p)
            if st:
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in st:
                        st[key][idx] = 0.0
    return count


def _bend_penalty(groups: list[_Group]) -> torch.Tensor:
    """Mean squared second difference of the polylines' points, in pixels^2."""
    total, count = None, 0
    for g in groups:
        if g.spec.kind != "polyline" or g.points.shape[1] < 3:
            continue
        p = g.points * g.scale
        bend = (p[:, 2:] - 2 * p[:, 1:-1] + p[:, :-2]).pow(2).sum(-1)
        total = bend.sum() if total is None else total + bend.sum()
        count += bend.numel()
    if total is None:
        return torch.zeros((), device=groups[0].points.device if groups else "cpu")
    return total / count


class _Best:
    """The lowest-loss parameters seen (losses are measured before each step), so a run
    never ends above its own start."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.loss = math.inf
        self.iteration = -1
        self.params: list[torch.Tensor] | None = None
        self.used = False

    def offer(self, value: float, it: int, params: list[torch.Tensor]) -> None:
        if self.enabled and value < self.loss:
            self.loss, self.iteration = value, it
            self.params = [p.detach().clone() for p in params]

    def better_than(self, value: float) -> bool:
        return self.enabled and self.params is not None and self.loss < value

    @torch.no_grad()
    def apply(self, params: list[torch.Tensor]) -> None:
        for p, saved in zip(params, self.params or [], strict=True):
            p.copy_(saved)
        self.used = True

    def state(self) -> dict[str, Any] | None:
        if self.params is None:
            return None
        return {"loss": self.loss, "iteration": self.iteration,
                "params": [p.cpu().clone() for p in self.params]}

    def restore(self, st: dict[str, Any] | None) -> None:
        if st:
            self.loss, self.iteration = float(st["loss"]), int(st["iteration"])
            self.params = [p.clone() for p in st["params"]]


def _structure_groups(pipeline: Pipeline, canvas: Canvas, target: torch.Tensor, loss_fn,
                      device: torch.device, loss_for=None
                      ) -> tuple[list[_Group], dict[str, Any]]:
    """Groups of polylines from the pipeline's structure start, one per size bucket."""
    from plotterd.draw.structure_start import buckets_to_world, pick_start, replace_count

    buckets, holds, info = pick_start(pipeline, target, loss_fn, loss_for)
    spec = pipeline.strokes[0]
    groups = []
    for k, world in buckets_to_world(buckets, canvas.offset, canvas.scale):
        g = _Group(replace_count(spec, len(world), k), world.to(device), canvas.scale)
        if holds[k].any():
            g.free = torch.from_numpy(~holds[k]).to(device, torch.float32)[..., None]
        groups.append(g)
    return groups, info


def _pixel_lines(groups: list[_Group]) -> list:
    """Every polyline in pixels about the canvas centre (add the canvas offset for pixel
    coordinates)."""
    with torch.no_grad():
        return [line for g in groups for line in (g.points * g.scale).double().cpu().numpy()]


@torch.no_grad()
def _keep_refinement_if_paper_agrees(groups, params, start_params, pipeline, loss_fn,
                                     target, canvas: Canvas, info: dict[str, Any]) -> bool:
    """Compare the refined strokes with their start as the pen draws them; go back to the
    start if the refinement drew worse on paper. Records both figures in ``info``."""
    from plotterd.draw.structure_start import paper_loss

    refined = paper_loss(loss_fn, _canvas_lines(groups, canvas), target, pipeline)
    info["final_paper_loss"] = round(refined, 6)
    info["refinement_kept"] = refined <= info["init_paper_loss"]
    if not info["refinement_kept"]:
        for p, saved in zip(params, start_params, strict=True):
            p.copy_(saved)
    return info["refinement_kept"]


def _paper_alongside(pool: ThreadPoolExecutor, groups: list[_Group], pipeline: Pipeline,
                     canvas: Canvas) -> Future:
    """The pen model's drawing of the strokes, rendered on ``pool``'s thread while the
    smooth raster is built on this one: both spend their time in numpy and torch kernels
    that release the GIL, so on two cores the paper costs little of the step's time."""
    from plotterd.draw.structure_start import render_on_paper

    lines = _canvas_lines(groups, canvas)  # a copy: the optimiser may move the points
    return pool.submit(render_on_paper, lines, canvas.height, canvas.width, pipeline)


def _straight_through(image: torch.Tensor, paper: torch.Tensor) -> torch.Tensor:
    """The paper in the forward pass, the Gaussian raster's gradient in the backward pass
    (a straight-through estimator): the loss then measures what the paper will show,
    while the smooth raster says which way to move."""
    paper = paper.to(image)
    return image + (paper - image).detach()


def _canvas_lines(groups: list[_Group], canvas: Canvas) -> list:
    """Every polyline in canvas pixel coordinates."""
    ox, oy = canvas.offset
    return [p + [ox, oy] for p in _pixel_lines(groups)]


def _paper_metadata(pipeline: Pipeline, canvas: Canvas, groups: list[_Group]) -> dict[str, Any]:
    """The pen, the drawing's box (1 px = 1 nib), and its ink, lifts and plot time for a
    pipeline with a page."""
    if pipeline.page is None:
        return {}
    from plotterd.draw.inits import plot_minutes, polylines_length

    nib = pipeline.pen_model.nib_mm
    lines = _pixel_lines(groups)
    return {"pen": pipeline.pen_model.to_dict(),
            "page_mm": {"width_mm": round(canvas.width * nib, 3),
                        "height_mm": round(canvas.height * nib, 3)},
            "ink_mm": round(polylines_length(lines) * nib, 1),
            "pen_lifts": len(lines),
            # constant speeds, drawing order as optimised; the G-code stage's trapezoidal
            # estimate after ordering is in its stats
            "plot_minutes_estimate": round(plot_minutes(lines, nib, pipeline.ink), 2)}


# --------------------------------------------------------------------------- checkpoints


def _fingerprint(pipeline: Pipeline, iterations: int, seed: int, target: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([pipeline.to_dict(), iterations, seed], sort_keys=True).encode())
    h.update(target.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:  # a crash leaves the old checkpoint or the new one
        torch.save(state, tmp)


def _load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise InputError(f"{path}: unreadable optimiser checkpoint ({e})") from e
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{path}: not a plotterd optimiser checkpoint (version 1)")
    if state.get("fingerprint") != fingerprint:
        raise InputError(
            f"{path}: checkpoint is from a different target, pipeline, seed or iteration "
            "count; delete it to start afresh"
        )
    return state


# ------------------------------------------------------------------------------ optimise


def _as_target(target: str | Path | torch.Tensor, pipeline: Pipeline) -> torch.Tensor:
    if isinstance(target, (str, Path)):
        from plotterd.draw.image import load_target

        return load_target(target, pipeline)
    t = torch.as_tensor(target).detach().float()
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[0] != 1 or t.shape[1] not in (1, 3):
        raise InputError(f"target tensor must be (1, C, H, W) with C 1 or 3, got {tuple(t.shape)}")
    if t.shape[-1] < 2 or t.shape[-2] < 2:
        raise InputError(f"target must be at least 2x2 pixels, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise InputError("target tensor contains NaN or infinite values")
    if t.shape[1] != pipeline.channels:
        if pipeline.channels == 1 and pipeline.tone == "light":  # luminance, re-encoded
            from plotterd.light import linear_to_srgb, srgb_to_luminance

            t = linear_to_srgb(srgb_to_luminance(t.clamp(0.0, 1.0)))
        elif pipeline.channels == 1:  # Rec. 601 luma, as OpenCV's RGB2GRAY
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            t = (t * w).sum(1, keepdim=True)
        else:
            t = t.expand(1, 3, *t.shape[-2:])
    return t.clamp(0.0, 1.0).contiguous()


def _aim(target: torch.Tensor, pipeline: Pipeline) -> torch.Tensor:
    """What the losses compare the drawing with, as 1 - coverage: the target's sRGB values
    (tone: pixel), or its linear light (tone: light), the coverage a page needs being
    1 - luminance once the photo's black is mapped to the pen's black point."""
    if pipeline.tone != "light":
        return target
    from plotterd.light import srgb_to_linear

    return srgb_to_linear(target).contiguous()


def _tone_metadata(pipeline: Pipeline, aim: torch.Tensor, info: dict[str, Any]
                   ) -> dict[str, Any]:
    """How the tone was matched; in light, the black point and how far a cap moved it."""
    if pipeline.tone != "light":
        return {"tone": "pixel"}
    from plotterd.draw.paper_loss import black_point, cap_shift_lightness

    darkness = pipeline.pen_model.darkness
    scale = float(info.get("tone_scale", 1.0))
    return {"tone": "light", "black_point": black_point(darkness, scale),
            "tone_cap_delta_lightness": round(cap_shift_lightness(aim, darkness, scale), 2)}


def _loss_config(pipeline: Pipeline) -> dict[str, Any]:
    cfg = dict(pipeline.loss)
    # allow_random_weights is a top-level pipeline key; losses that use it accept it as a param
    if pipeline.allow_random_weights and "allow_random_weights" in loss_spec(cfg["type"]).params:
        cfg["allow_random_weights"] = True
    # a loss that compares at viewing distance needs the canvas's scale: 1 px = 1 nib
    if "canvas_px_per_mm" in loss_spec(cfg["type"]).params and not cfg.get("canvas_px_per_mm"):
        cfg["canvas_px_per_mm"] = 1.0 / pipeline.pen_model.nib_mm
    # a loss that mixes the page in light needs the pipeline's tone and its pen's black
    if "tone" in loss_spec(cfg["type"]).params:
        cfg["tone"] = pipeline.tone
        cfg["pen_darkness"] = pipeline.pen_model.darkness
    return cfg


def _coarse_stage(pipeline: Pipeline, iters: int, tgt: torch.Tensor, loss_cfg: dict[str, Any]
                  ) -> tuple[int, _Level | None, Any]:
    """(iterations at the coarse level, the level, its loss) of a coarse-to-fine run, or
    (0, None, None)."""
    h, w = int(tgt.shape[-2]), int(tgt.shape[-1])
    if pipeline.coarse_to_fine is None or iters <= 0:
        return 0, None, None
    switch = int(round(iters * pipeline.coarse_to_fine.fraction))
    hc = max(8, round(h * pipeline.coarse_to_fine.scale))
    wc = max(8, round(w * pipeline.coarse_to_fine.scale))
    if switch <= 0 or (hc, wc) == (h, w):
        return 0, None, None
    coarse = _Level(hc, wc, coarse=True, rx=wc / w, ry=hc / h)
    return switch, coarse, build_loss(loss_cfg, F.interpolate(tgt, size=(hc, wc), mode="area"))


def _adam(groups: list[_Group], pipeline: Pipeline) -> torch.optim.Adam:
    """Adam over points, learned widths and inks, each with the pipeline's learning rate."""
    param_groups: list[dict[str, Any]] = [
        {"params": [g.points for g in groups], "lr": pipeline.lr, "name": "points"}
    ]
    widths = [g.width for g in groups if g.spec.learn_width]
    if widths:
        param_groups.append({"params": widths, "lr": pipeline.width_lr, "name": "width"})
    inks = [p for g in groups for p in (g.grey_raw, g.color_raw) if p is not None]
    if inks:
        param_groups.append({"params": inks, "lr": pipeline.ink_lr, "name": "ink"})
    return torch.optim.Adam(param_groups)


def optimise(
    target: str | Path | torch.Tensor,
    pipeline: Pipeline,
    *,
    device: str | torch.device = "auto",
    progress: ProgressCallback | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 25,
    iterations: int | None = None,
    seed: int | None = None,
) -> DrawResult:
    """Optimise the pipeline's strokes to draw ``target`` (an image path, or a (1, C, H, W)
    tensor in [0, 1], white = 1, already at working resolution).

    ``progress`` gets Progress(stage="optimise", done, total, elapsed_s, eta_s,
    info={"loss": ...}) after every iteration; raising Cancelled from it stops the run
    (after writing the checkpoint, when there is one) and Cancelled propagates.
    ``checkpoint``: a file written atomically every ``checkpoint_every`` iterations and at
    the end; when it exists at the start, the run resumes from it.
    """
    iters = pipeline.iterations if iterations is None else int(iterations)
    seed = pipeline.seed if seed is None else int(seed)
    if iters < 0:
        raise ConfigError("iterations", f"must be >= 0, got {iters}")
    if checkpoint_every < 1:
        raise ConfigError("checkpoint_every", f"must be >= 1, got {checkpoint_every}")
    run = _Run(target, pipeline, resolve_device(device), iters, seed,
               Path(checkpoint) if checkpoint is not None else None)
    run.resume()
    run.loop(progress, checkpoint_every)
    return run.result()


class _Run:
    """One optimisation: its target, strokes, Adam, generator and history, which a
    checkpoint saves and restores exactly (so a resumed run ends bit-identical)."""

    def __init__(self, target: str | Path | torch.Tensor, pipeline: Pipeline,
                 dev: torch.device, iters: int, seed: int, ckpt: Path | None):
        self.pipeline, self.dev, self.iters, self.seed, self.ckpt = (
            pipeline, dev, iters, seed, ckpt)
        self.source = str(target) if isinstance(target, (str, Path)) else None
        self.tgt_cpu = _as_target(target, pipeline).cpu()  # sRGB values, as the photo
        self.tgt = _aim(self.tgt_cpu, pipeline).to(dev)  # 1 - coverage: what losses see
        h, w = int(self.tgt.shape[-2]), int(self.tgt.shape[-1])
        self.canvas = Canvas(w, h)
        # losses are built before anything else so a missing weights file fails at once
        self.loss_cfg = _loss_config(pipeline)
        self.fine_loss = build_loss(self.loss_cfg, self.tgt)
        self.fine = _Level(h, w)
        self.switch, self.coarse, self.coarse_loss = _coarse_stage(pipeline, iters, self.tgt,
                                                                   self.loss_cfg)
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self.init = _Init(pipeline, self.canvas, self.tgt.cpu(), self.gen)
        self.start_info: dict[str, Any] = {}
        self._capped_losses: dict[float, Any] = {}
        if pipeline.init in STRUCTURE_INITS:
            self.groups, self.start_info = _structure_groups(
                pipeline, self.canvas, self.tgt, self.fine_loss, dev,
                self.loss_at if pipeline.tone == "light" else None)
            self._follow_cap(float(self.start_info.get("tone_scale", 1.0)))
        else:
            self.groups = _make_groups(pipeline, self.init, dev)
        self.params = [p for g in self.groups for p in g.params()]
        self.start_params = [p.detach().clone() for p in self.params]
        self.opt = _adam(self.groups, pipeline)
        self.fp = _fingerprint(pipeline, iters, seed, self.tgt_cpu)
        self.losses: list[float] = []
        self.times: list[float] = []
        self.start_it, self.elapsed0, self.reinits = 0, 0.0, 0
        self.elapsed = 0.0
        self.best = _Best(pipeline.keep_best)

    def loss_at(self, scale: float):
        """The fine loss against the target an ink cap's tone scale leaves (light): the
        optimiser then works towards the tones the capped ink can lay, not against the cap."""
        from plotterd.draw.paper_loss import capped_target

        scale = round(min(float(scale), 1.0), 4)
        if scale >= 1.0:
            return self.fine_loss
        if scale not in self._capped_losses:
            self._capped_losses[scale] = build_loss(self.loss_cfg,
                                                    capped_target(self.tgt, scale))
        return self._capped_losses[scale]

    def _follow_cap(self, scale: float) -> None:
        """In light, aim the losses at the capped tone curve of the chosen start."""
        if self.pipeline.tone != "light" or scale >= 1.0:
            return
        from plotterd.draw.paper_loss import capped_target

        self.fine_loss = self.loss_at(scale)
        self.switch, self.coarse, self.coarse_loss = _coarse_stage(
            self.pipeline, self.iters, capped_target(self.tgt, round(scale, 4)), self.loss_cfg)

    # -- checkpoints ------------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the checkpoint when there is one."""
        if self.ckpt is None or not self.ckpt.exists():
            return
        st = _load_checkpoint(self.ckpt, self.fp)
        with torch.no_grad():
            if len(st["params"]) != len(self.params):
                raise InputError(f"{self.ckpt}: checkpoint does not match the pipeline's "
                                 "strokes")
            for p, saved in zip(self.params, st["params"], strict=True):
                p.copy_(saved.to(self.dev))
        self.opt.load_state_dict(st["optimizer"])
        self.gen.set_state(st["generator"])
        self.losses, self.times = list(st["losses"]), list(st["times"])
        self.start_it, self.elapsed0 = int(st["iteration"]), float(st["elapsed_s"])
        self.reinits = int(st.get("reinitialised", 0))
        self.best.restore(st.get("best"))

    def save(self, it_done: int, elapsed: float) -> None:
        if self.ckpt is None:
            return
        _save_checkpoint(self.ckpt, {
            "version": CHECKPOINT_VERSION,
            "fingerprint": self.fp,
            "iteration": it_done,
            "params": [p.detach().cpu().clone() for p in self.params],
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(),
            "losses": self.losses,
            "times": self.times,
            "elapsed_s": elapsed,
            "reinitialised": self.reinits,
            "best": self.best.state(),
        })

    # -- the descent ------------------------------------------------------------------------
    def draw(self, level: _Level) -> torch.Tensor:
        pipeline = self.pipeline
        on_paper = pipeline.paper_forward and self.start_info and not level.coarse
        # a pool per step: no thread outlives the step (starting one costs microseconds)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="plotterd-paper") as pool:
            paper = (_paper_alongside(pool, self.groups, pipeline, self.canvas)
                     if on_paper else None)
            image = render(
                [g.batch(self.canvas, level) for g in self.groups],
                level.height,
                level.width,
                composition=pipeline.composition,
                channels=pipeline.channels,
                tau=pipeline.tau,
                curve_segments=pipeline.curve_segments,
            )
            if paper is not None:
                image = _straight_through(image, paper.result())
        return image

    def step(self, it: int) -> float:
        """One Adam step; the loss before it."""
        pipeline, groups = self.pipeline, self.groups
        level, loss_fn = ((self.coarse, self.coarse_loss) if it < self.switch
                          else (self.fine, self.fine_loss))
        self.opt.zero_grad(set_to_none=True)
        loss = loss_fn(self.draw(level))
        if pipeline.smoothness > 0:
            loss = loss + pipeline.smoothness * _bend_penalty(groups)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise PlotterdError(f"optimisation diverged: loss is {value} at iteration {it}")
        self.best.offer(value, it, self.params)
        loss.backward()
        for g in groups:
            if g.free is not None and g.points.grad is not None:
                g.points.grad.mul_(g.free)  # held points get no gradient, so Adam keeps them
        self.opt.step()
        for g in groups:
            g.project(self.canvas.x_extent, pipeline.canvas_margin_px / self.canvas.scale)
        if (pipeline.reinit and it < self.iters // 2
                and (it + 1) % pipeline.reinit_every == 0):
            self.reinits += _reinit_vanished(groups, self.init, self.opt)
        return value

    def loop(self, progress: ProgressCallback | None, checkpoint_every: int) -> None:
        t0 = time.perf_counter()
        last_saved = self.start_it
        for it in range(self.start_it, self.iters):
            value = self.step(it)
            self.losses.append(value)
            now = self.elapsed0 + time.perf_counter() - t0
            self.times.append(now)
            if (it + 1) % checkpoint_every == 0 or it + 1 == self.iters:
                self.save(it + 1, now)
                last_saved = it + 1
            if progress is None:
                continue
            run_s = time.perf_counter() - t0
            eta = run_s / (it + 1 - self.start_it) * (self.iters - it - 1)
            try:
                progress(Progress("optimise", it + 1, self.iters, now, eta, {"loss": value}))
            except Cancelled:
                if last_saved != it + 1:
                    self.save(it + 1, now)
                raise
        self.elapsed = self.elapsed0 + time.perf_counter() - t0

    # -- the end ----------------------------------------------------------------------------
    def objective(self, image: torch.Tensor) -> float:
        value = self.fine_loss(image)
        if self.pipeline.smoothness > 0:
            value = value + self.pipeline.smoothness * _bend_penalty(self.groups)
        return float(value)

    def final_drawing(self) -> tuple[torch.Tensor, float]:
        """The drawing the run ends on (its best iterate; the start, when the paper
        disagrees with the refinement) and its loss."""
        with torch.no_grad():
            rendering = self.draw(self.fine)
            final_loss = self.objective(rendering)
            if self.best.better_than(final_loss):  # the last steps made it worse
                self.best.apply(self.params)
                rendering = self.draw(self.fine)
                final_loss = self.objective(rendering)
            if self.start_info:  # the paper has the last word (plotterd.draw.structure_start)
                kept = _keep_refinement_if_paper_agrees(
                    self.groups, self.params, self.start_params, self.pipeline,
                    self.fine_loss, self.tgt, self.canvas, self.start_info)
                if not kept:
                    rendering = self.draw(self.fine)
                    final_loss = self.objective(rendering)
        return rendering, final_loss

    def result(self) -> DrawResult:
        rendering, final_loss = self.final_drawing()
        pipeline, iters, elapsed = self.pipeline, self.iters, self.elapsed
        strokes = Strokes(
            canvas=self.canvas,
            groups=[g.snapshot() for g in self.groups],
            composition=pipeline.composition,
            pipeline=pipeline.to_dict(),
            metadata={
                "loss": pipeline.loss_type,
                "loss_params": {k: v for k, v in self.loss_cfg.items() if k != "type"},
                "loss_metadata": self.fine_loss.metadata(),
                "iterations": iters,
                "seed": self.seed,
                "device": str(self.dev),
                "elapsed_s": round(elapsed, 3),
                "s_per_iteration": round(elapsed / iters, 5) if iters else None,
                "final_loss": final_loss,
                "resumed_from_iteration": self.start_it or None,
                "reinitialised_strokes": self.reinits,
                "best_iteration": self.best.iteration if self.best.used else None,
                **self.start_info,
                **_tone_metadata(pipeline, self.tgt.cpu(), self.start_info),
                **_paper_metadata(pipeline, self.canvas, self.groups),
                "source_image": self.source,
                "plotterd_version": plotterd.__version__,
                "torch_version": torch.__version__,
            },
        )
        return DrawResult(
            strokes=strokes,
            losses=self.losses,
            rendering=rendering.detach().cpu(),
            target=self.tgt_cpu,
            elapsed_s=elapsed,
            times=self.times,
            device=str(self.dev),
        )
