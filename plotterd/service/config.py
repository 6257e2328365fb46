"""The daemon's configuration: one YAML file, parsed once into validated dataclasses.

Every key has a default, so the daemon runs with no file at all (dry-run against the
simulated plotter, state under ``platformdirs.user_state_dir("plotterd")``). Unknown keys are
refused and every error names its dotted key (``ConfigError("api.port", ...)``).

Example (all keys, with their defaults)::

    state_dir: ~/.local/state/plotterd   # jobs/, jobs.db, inbox/ (unless inbox is set)
    inbox: null                          # default <state_dir>/inbox
    log_level: info                      # debug | info | warning | error
    weights_dir: null                    # perceptual weights (VGG16/LPIPS); null = stage default
    pens_dir: null                       # fitted pen profiles (NAME.yaml, `plotterd pens fit`);
                                         # null = $PLOTTERD_PENS_DIR, else <state_dir>/pens
    pipeline: paper                      # default pipeline
    pipelines: {}                        # inbox subfolder -> pipeline name or path
    pipeline_dirs: []                    # extra folders searched for <name>.yaml pipelines
    folders: {}                          # inbox subfolder -> {pipeline: NAME, set: {dotted.key:
                                         # value}, vector: {...as below}, plotter: NAME or
                                         # tags: [...] (where its jobs plot)}
    vector:                              # the vector stage (as `plotterd gcode`)
      pens: [{color: black, width_mm: 0.3, name: null}]   # in plot order
      tolerance_mm: 0.05
      two_opt: false
      merge_tolerance_mm: 0.05
      min_length_mm: 0.2
      per_pen: false                     # also plot-penN-COLOUR.gcode per pen
    plotter:
      port: null                         # serial port or pyserial URL; null = simulator (dry-run)
      profile: grbl-servo                # firmware profile name or path
      baudrate: 115200
      sim_speed: scaled:20               # simulator speed: instant | scaled:<factor> | realtime
      auto_resume: null                  # resume an interrupted plot by itself (null: dry-run only)
      paper: null                        # manual: wait for "paper changed" after each job;
                                         # auto / roll: no wait (null: auto in dry-run, else manual)
      paper_trigger_file: null           # touching it confirms "paper changed"
                                         # (null: <state_dir>/paper-changed)
      reconnect_s: 2.0                   # retry an absent plotter this often (jobs wait)
      timeouts: {}                       # plotterd.machine.Timeouts fields, seconds (banner,
                                         # ok, status, command, homing, idle, poll,
                                         # reconnect_attempts, reconnect_backoff, max_resumes)
      machine: {}                        # plotterd.machine MachineOptions: homing (null: from
                                         # GRBL $22), unlock_alarm (null: only without homing),
                                         # write_settings (false: may set $10), jog_feed
      pen: null                          # the pen mounted: {profile: NAME} (a fitted pen from
                                         # pens_dir) or {nib_mm, darkness}; its jobs are drawn,
                                         # plotted and rendered with it unless they ask for one
    plotters: null                       # several plotters instead of `plotter:` (not both):
      # - name: a3                       # [a-z0-9_-], unique (the `plotter:` one is "plotter")
      #   port: /dev/serial/by-id/...    # ...and every other `plotter:` key, per plotter
      #   tags: [a3, black]              # jobs asking for tags go to a plotter with all of them
      #   page: {paper: a3}              # over the top-level page (default: it)
      #   pens: [{color: red, width_mm: 0.5}]   # or vector: {...}: over the job's vector
                                         # settings (its folder's, else the top-level)
    routing:
      when_gone: wait                    # a job bound by name to a plotter that is gone:
                                         # wait | same_tags (a plotter with all its tags)
      gone_after_s: 60                   # away (port absent, no answer) this long = gone
    page: {paper: a4, orientation: auto, margin_mm: 10}
    optimiser: {device: auto, threads: 1, checkpoint_every: 25, iterations: null, seed: null,
                timeout_s: null, stall_s: 600,
                backend: local}                  # local: a subprocess here; ray: a Ray task
    ray:                                 # with optimiser.backend: ray (plotterd[ray] extra)
      address: auto                      # the cluster: auto (RAY_ADDRESS / a running local
                                         # head), HOST:PORT, or ray://HOST:10001
      num_gpus: 0                        # what each optimise task asks for
      num_cpus: 1
      max_attempts: 3                    # a worker dying mid-job: retried from its checkpoint
      jobs_in_flight: 2                  # jobs optimised at once (locally always one)
      namespace: plotterd
      connect_timeout_s: 30
    intake: {observer: auto, stable_s: 1.0, scan_interval_s: 1.0}
    camera:
      source: null                       # device index (0) or stream URL / video file path
      crop: null                         # [x, y, w, h] as fractions of the frame (0..1)
      clahe: {clip_limit: 2.0, tile: 8}  # contrast normalisation; null = none
      grey: true
      interval_s: null                   # capture every N seconds; null = no timer
      trigger_file: null                 # capture when this file appears (it is then removed)
      retry_s: 30                        # retry a camera that cannot be opened
      warmup_frames: 2                   # frames dropped before the one kept (stale buffers)
      pipeline: null                     # pipeline for camera jobs (null = default pipeline)
      timeout_s: 10                      # an open or a frame taking longer: given up
    retention: {days: null, max_gb: null}  # prune finished jobs' folders, inbox/done, old logs
    api: {bind: 127.0.0.1, port: 8765, token: null, max_upload_mb: 50,
          hosts: []}                     # names besides loopback, IPs, this host's own
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from plotterd.errors import ConfigError
from plotterd.pen import FittedPen, RoundNib, pen_from_dict

LOG_LEVELS = ("debug", "info", "warning", "error")
OBSERVERS = ("auto", "inotify", "polling")
# manual: a sheet per job, confirmed by the user; auto / roll: the next job starts at once
PAPER_MODES = ("manual", "auto", "roll")
DEFAULT_PLOTTER = "plotter"  # the name of the one plotter of a `plotter:` config
PLOTTER_NAME = re.compile(r"[a-z0-9_-]+")
WHEN_GONE = ("wait", "same_tags")
OPTIMISER_BACKENDS = ("local", "ray")


@dataclass
class PlotterConfig:
    name: str = DEFAULT_PLOTTER  # [a-z0-9_-]+, unique; the legacy `plotter:` is "plotter"
    port: str | None = None
    profile: str = "grbl-servo"
    baudrate: int = 115200
    sim_speed: str = "scaled:20"
    auto_resume: bool | None = None
    paper: str | None = None
    paper_trigger_file: str | None = None
    reconnect_s: float = 2.0
    timeouts: dict[str, float] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    pen: RoundNib | FittedPen | None = None  # the pen mounted; None: the jobs' own
    page: PageConfig | None = None  # None: the top-level page (filled in by parse_config)
    # the vector keys this plotter sets itself (its pens): they win over a job's folder
    # `vector:` and the top-level one, since they describe what is mounted on the machine
    vector_keys: dict[str, Any] = field(default_factory=dict)
    key: str = "plotter"  # where it was configured, for messages (plotters[1])

    @property
    def dry_run(self) -> bool:
        return self.port is None

    @property
    def auto_resume_on(self) -> bool:
        return self.dry_run if self.auto_resume is None else self.auto_resume

    @property
    def paper_mode(self) -> str:
        """manual (wait for a new sheet after each job) or auto (no wait; also roll)."""
        mode = self.paper or ("auto" if self.dry_run else "manual")
        return "auto" if mode == "roll" else mode

    def paper_trigger(self, state_dir: Path, several: bool) -> Path:
        if self.paper_trigger_file:
            return Path(self.paper_trigger_file)
        return state_dir / (f"paper-changed.{self.name}" if several else "paper-changed")


@dataclass
class RoutingConfig:
    """What happens to a job bound to a plotter (by name) that is gone (its port absent or
    not answering for ``gone_after_s``): ``wait`` for it, or go to another plotter that has
    all of its tags (``same_tags``). A plot that has started always stays on its plotter."""
    when_gone: str = "wait"
    gone_after_s: float = 60.0


@dataclass
class PageConfig:
    paper: str = "a4"
    orientation: str = "auto"
    margin_mm: float = 10.0


@dataclass
class OptimiserConfig:
    device: str = "auto"
    threads: int = 1
    checkpoint_every: int = 25
    iterations: int | None = None
    seed: int | None = None  # None = the pipeline's own seed
    timeout_s: float | None = None
    # fail a job whose optimiser reports no progress for this long (a hung process would
    # otherwise hold the queue for good); None disables the check
    stall_s: float | None = 600.0
    backend: str = "local"  # local | ray


@dataclass
class RayConfig:
    address: str = "auto"
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    max_attempts: int = 3
    jobs_in_flight: int = 2  # jobs optimised at once on the cluster (one driver each here)
    namespace: str = "plotterd"
    connect_timeout_s: float = 30.0


@dataclass
class IntakeConfig:
    observer: str = "auto"
    stable_s: float = 1.0
    scan_interval_s: float = 1.0


@dataclass
class ClaheConfig:
    clip_limit: float = 2.0
    tile: int = 8


@dataclass
class CameraConfig:
    source: int | str | None = None
    crop: list[float] | None = None
    clahe: ClaheConfig | None = field(default_factory=ClaheConfig)
    grey: bool = True
    interval_s: float | None = None
    trigger_file: str | None = None
    retry_s: float = 30.0
    warmup_frames: int = 2
    pipeline: str | None = None
    timeout_s: float = 10.0  # an open or a frame that takes longer is given up (hung camera)


@dataclass
class RetentionConfig:
    days: float | None = None  # finished jobs' folders, inbox/done and old logs older: removed
    max_gb: float | None = None  # and the oldest of them while these take more than this


@dataclass
class ApiConfig:
    bind: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_upload_mb: float = 50.0
    hosts: list[str] = field(default_factory=list)  # more names it answers to (Host header)

    @property
    def is_loopback(self) -> bool:
        return is_loopback(self.bind)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else self.bind
        if host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


VECTOR_KEYS = ("pens", "tolerance_mm", "two_opt", "merge_tolerance_mm", "min_length_mm",
               "per_pen")
PEN_KEYS = ("color", "width_mm", "name")


@dataclass
class VectorConfig:
    """The vector stage's settings for daemon jobs, as ``plotterd gcode`` takes them (the
    defaults are plotterd.vector.VectorOptions' own)."""
    pens: list[dict[str, Any]] = field(default_factory=lambda: [{"color": "black",
                                                                 "width_mm": 0.3}])
    tolerance_mm: float = 0.05
    two_opt: bool = False
    merge_tolerance_mm: float = 0.05
    min_length_mm: float = 0.2
    per_pen: bool = False  # also write plot-penN-COLOUR.gcode per pen into the job folder

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class FolderConfig:
    """An inbox subfolder's settings: its pipeline, pipeline keys set for its jobs (as
    ``plotterd draw --set``), and vector settings over the top-level ``vector:``."""
    pipeline: str | None = None
    set: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, as written
    overrides: dict[str, Any] = field(default_factory=dict)  # the same, nested
    vector: VectorConfig | None = None
    plotter: str | None = None  # its jobs go to this plotter (by name)...
    tags: list[str] = field(default_factory=list)  # ...or to a plotter with all these tags


@dataclass
class Config:
    state_dir: Path
    inbox: Path
    log_level: str = "info"
    weights_dir: Path | None = None
    pens_dir: Path | None = None  # filled in by parse_config (never None after it)
    pipeline: str = "paper"
    pipelines: dict[str, str] = field(default_factory=dict)
    pipeline_dirs: list[Path] = field(default_factory=list)
    folders: dict[str, FolderConfig] = field(default_factory=dict)
    vector: VectorConfig = field(default_factory=VectorConfig)
    plotters: list[PlotterConfig] = field(default_factory=lambda: [PlotterConfig()])
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    page: PageConfig = field(default_factory=PageConfig)
    optimiser: OptimiserConfig = field(default_factory=OptimiserConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    source: str | None = None  # the file it came from, for messages

    @property
    def plotter(self) -> PlotterConfig:
        """The first plotter (the only one of a `plotter:` config)."""
        return self.plotters[0]

    def plotter_named(self, name: str) -> PlotterConfig | None:
        return next((p for p in self.plotters if p.name == name), None)

    @property
    def dry_run(self) -> bool:
        """Every plotter is simulated."""
        return all(p.dry_run for p in self.plotters)

    @property
    def auto_resume(self) -> bool:
        return self.plotter.auto_resume_on

    @property
    def paper_mode(self) -> str:
        return self.plotter.paper_mode

    @property
    def paper_trigger(self) -> Path:
        return self.paper_trigger_of(self.plotter)

    def paper_trigger_of(self, pc: PlotterConfig) -> Path:
        return pc.paper_trigger(self.state_dir, len(self.plotters) > 1)

    def page_of(self, pc: PlotterConfig) -> PageConfig:
        return pc.page or self.page

    def vector_of(self, pc: PlotterConfig, folder: str | None) -> VectorConfig:
        """The vector settings of a job from ``folder`` drawn on ``pc``: the folder's (else
        the top-level), with the plotter's own keys (its pens) over them, at the nib of
        its ``pen:`` when it has one."""
        base = self.vector_for(folder)
        if not pc.vector_keys and pc.pen is None:
            return base
        out = VectorConfig(**{**base.to_dict(), **pc.vector_keys})
        out.pens = [dict(p) for p in out.pens]
        if pc.pen is not None:  # the pen mounted draws every layer at its nib
            out.pens = [{**p, "width_mm": pc.pen.nib_mm} for p in out.pens]
        return out

    def folder_of(self, origin: str | None) -> str | None:
        """The inbox subfolder a job's original came from (``origin``), else None."""
        if not origin:
            return None
        try:
            rel = Path(origin).relative_to(self.inbox)
        except ValueError:
            return None
        return rel.parts[0] if len(rel.parts) == 2 else None

    def vector_for(self, folder: str | None) -> VectorConfig:
        """The vector settings of a job from ``folder`` (its own, else the top-level)."""
        fc = self.folders.get(folder) if folder else None
        return fc.vector if fc is not None and fc.vector is not None else self.vector

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "jobs.db"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_state_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("plotterd"))


def load_config(path: str | Path | None = None, *, dry_run: bool = False) -> Config:
    """Read and validate the daemon configuration; ``None`` = all defaults.

    ``dry_run`` forces the simulated plotter whatever ``plotter.port`` says.
    """
    data: Any = {}
    src = None
    if path is not None:
        src = str(path)
        try:
            text = Path(path).read_text()
        except FileNotFoundError as e:
            raise ConfigError("config", "no such file", src) from e
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError("config", f"cannot read: {e}", src) from e
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError("config", f"not valid YAML: {e}", src) from e
        if data is None:
            data = {}
    cfg = parse_config(data, source=src, base_dir=Path(path).parent if path else None)
    if dry_run:
        for pc in cfg.plotters:
            pc.port = None
    return cfg


def parse_config(data: Any, *, source: str | None = None, base_dir: Path | None = None) -> Config:
    """Validate a config mapping (as loaded from YAML). Relative paths are taken relative to
    the config file's folder (``base_dir``), else to the working directory."""
    v = _Validator(source, base_dir)
    top = v.mapping(data, "config")
    _refuse_non_finite(data, "", source)
    known = {
        "state_dir", "inbox", "log_level", "weights_dir", "pens_dir", "pipeline", "pipelines",
        "pipeline_dirs", "folders", "vector", "plotter", "plotters", "routing", "page",
        "optimiser", "intake", "camera", "api", "ray", "retention",
    }
    v.no_unknown(top, known, "")
    state_dir = v.path(top.get("state_dir"), "state_dir") or default_state_dir()
    inbox = v.path(top.get("inbox"), "inbox") or state_dir / "inbox"
    cfg = Config(state_dir=state_dir, inbox=inbox, source=source)
    cfg.log_level = v.choice(top.get("log_level", "info"), "log_level", LOG_LEVELS)
    cfg.weights_dir = v.path(top.get("weights_dir"), "weights_dir")
    cfg.pens_dir = v.path(top.get("pens_dir") or os.environ.get("PLOTTERD_PENS_DIR"),
                          "pens_dir") or state_dir / "pens"
    _pipelines(v, top, cfg)
    cfg.vector = _vector(v, top.get("vector"), "vector", VectorConfig())
    cfg.folders = _folders(v, top.get("folders"), cfg)

    cfg.page = _page(v, top.get("page"), "page", PageConfig())
    cfg.plotters = _plotters(v, top, cfg)
    cfg.routing = v.section(top.get("routing"), "routing", RoutingConfig)
    v.choice(cfg.routing.when_gone, "routing.when_gone", WHEN_GONE)
    v.positive(cfg.routing.gone_after_s, "routing.gone_after_s")
    _folder_routes(v, top.get("folders"), cfg)

    cfg.optimiser = _optimiser(v, top.get("optimiser"))
    cfg.ray = _ray(v, top.get("ray"), cfg.optimiser.backend)
    cfg.intake = v.section(top.get("intake"), "intake", IntakeConfig)
    v.choice(cfg.intake.observer, "intake.observer", OBSERVERS)
    v.number(cfg.intake.stable_s, "intake.stable_s", minimum=0)
    v.positive(cfg.intake.scan_interval_s, "intake.scan_interval_s")
    cfg.camera = _camera(v, top.get("camera"))
    cfg.api = _api(v, top.get("api"))
    cfg.retention = v.section(top.get("retention"), "retention", RetentionConfig)
    for key in ("days", "max_gb"):
        if getattr(cfg.retention, key) is not None:
            v.positive(getattr(cfg.retention, key), f"retention.{key}")
    return cfg


def _pipelines(v: _Validator, top: dict, cfg: Config) -> None:
    """``pipeline``, ``pipelines`` (inbox subfolder -> pipeline) and ``pipeline_dirs``."""
    source = v.source
    cfg.pipeline = v.string(top.get("pipeline", cfg.pipeline), "pipeline")
    pipes = v.mapping(top.get("pipelines", {}) or {}, "pipelines")
    cfg.pipelines = {}
    for k, val in pipes.items():
        key = f"pipelines.{k}"
        if not isinstance(k, str) or not k or "/" in k or k.startswith("."):
            raise ConfigError(key, "must be a plain subfolder name", source)
        if k in ("done", "failed"):
            raise ConfigError(key, "'done' and 'failed' are reserved inbox folders", source)
        cfg.pipelines[k] = v.string(val, key)
    dirs = top.get("pipeline_dirs", []) or []
    if not isinstance(dirs, list):
        raise ConfigError("pipeline_dirs", "must be a list of folders", source)
    cfg.pipeline_dirs = [v.path(d, f"pipeline_dirs[{i}]") for i, d in enumerate(dirs)]


def _optimiser(v: _Validator, raw: Any) -> OptimiserConfig:
    oc = v.section(raw, "optimiser", OptimiserConfig)
    v.string(oc.device, "optimiser.device")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", oc.device):
        # which GPUs exist is checked in the optimiser process (it imports torch; we do not)
        raise v.err("optimiser.device",
                    f"expected auto, cpu, cuda or cuda:N, got {oc.device!r}")
    v.positive(oc.threads, "optimiser.threads", integer=True)
    v.positive(oc.checkpoint_every, "optimiser.checkpoint_every", integer=True)
    if oc.iterations is not None:
        v.positive(oc.iterations, "optimiser.iterations", integer=True)
    if oc.seed is not None:
        v.number(oc.seed, "optimiser.seed", integer=True, minimum=0)
    if oc.timeout_s is not None:
        v.positive(oc.timeout_s, "optimiser.timeout_s")
    if oc.stall_s is not None:
        v.positive(oc.stall_s, "optimiser.stall_s")
    v.choice(oc.backend, "optimiser.backend", OPTIMISER_BACKENDS)
    return oc


def _camera(v: _Validator, raw: Any) -> CameraConfig:
    source = v.source
    cam_raw = v.mapping(raw or {}, "camera")
    clahe_raw = cam_raw.get("clahe", {})
    cam_raw = {k: val for k, val in cam_raw.items() if k != "clahe"}
    cam = v.section(cam_raw, "camera", CameraConfig)
    cam.clahe = None if clahe_raw is None else v.section(clahe_raw, "camera.clahe", ClaheConfig)
    if isinstance(cam.source, str) and cam.source.strip().isdigit():
        cam.source = int(cam.source)  # "0" from an environment or a quoted YAML value
    if cam.source is not None and (isinstance(cam.source, bool)
                                   or not isinstance(cam.source, (int, str))):
        raise ConfigError("camera.source", "must be a device index or a URL/path", source)
    if isinstance(cam.source, int) and cam.source < 0:
        raise ConfigError("camera.source", "a device index must be >= 0", source)
    if cam.crop is not None:
        if (not isinstance(cam.crop, list) or len(cam.crop) != 4
                or not all(_is_num(x) and 0 <= x <= 1 for x in cam.crop)):
            raise ConfigError("camera.crop", "must be [x, y, w, h], fractions in [0, 1]", source)
        x, y, w, h = cam.crop
        if w <= 0 or h <= 0 or x + w > 1.0001 or y + h > 1.0001:
            raise ConfigError("camera.crop", "the crop must lie inside the frame", source)
    if cam.clahe is not None:
        v.positive(cam.clahe.clip_limit, "camera.clahe.clip_limit")
        v.positive(cam.clahe.tile, "camera.clahe.tile", integer=True)
    if not isinstance(cam.grey, bool):
        raise ConfigError("camera.grey", "must be true or false", source)
    if cam.interval_s is not None:
        v.positive(cam.interval_s, "camera.interval_s")
    if cam.trigger_file is not None:
        cam.trigger_file = str(v.path(cam.trigger_file, "camera.trigger_file"))
    v.positive(cam.retry_s, "camera.retry_s")
    v.positive(cam.timeout_s, "camera.timeout_s")
    v.number(cam.warmup_frames, "camera.warmup_frames", integer=True, minimum=0)
    if cam.pipeline is not None:
        v.string(cam.pipeline, "camera.pipeline")
    return cam


def _api(v: _Validator, raw: Any) -> ApiConfig:
    source = v.source
    api = v.section(raw, "api", ApiConfig)
    v.string(api.bind, "api.bind")
    v.number(api.port, "api.port", integer=True, minimum=0)
    if api.port > 65535:
        raise ConfigError("api.port", "must be at most 65535", source)
    key = "api.token"
    if api.token is None and os.environ.get("PLOTTERD_TOKEN"):
        api.token, key = os.environ["PLOTTERD_TOKEN"], "PLOTTERD_TOKEN"
    if api.token is not None:  # the same minimum wherever the token comes from
        api.token = v.string(api.token, key)
        if len(api.token.strip()) < 8:
            raise ConfigError(key, "too short (8 characters at least)", source)
    if not api.is_loopback and not api.token:
        raise ConfigError(
            "api.token",
            f"required when api.bind is not a loopback address ({api.bind}); "
            "set it or PLOTTERD_TOKEN",
            source,
        )
    v.positive(api.max_upload_mb, "api.max_upload_mb")
    if not isinstance(api.hosts, list):
        raise ConfigError("api.hosts", "must be a list of host names", source)
    api.hosts = [v.string(h, f"api.hosts[{i}]").strip() for i, h in enumerate(api.hosts)]
    return api


def _ray(v: _Validator, raw: Any, backend: str) -> RayConfig:
    """``ray:``; whether Ray is installed is checked at start only when it is used (the
    daemon process itself never imports it)."""
    rc = v.section(raw, "ray", RayConfig)
    v.string(rc.address, "ray.address")
    v.number(rc.num_gpus, "ray.num_gpus", minimum=0)
    v.number(rc.num_cpus, "ray.num_cpus", minimum=0)
    v.positive(rc.max_attempts, "ray.max_attempts", integer=True)
    v.positive(rc.jobs_in_flight, "ray.jobs_in_flight", integer=True)
    v.string(rc.namespace, "ray.namespace")
    v.positive(rc.connect_timeout_s, "ray.connect_timeout_s")
    if backend == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise v.err("optimiser.backend", "ray is not installed here: "
                        "pip install 'plotterd[ray]' (or set optimiser.backend: local)")
    return rc


def _folder_name(v: _Validator, name: Any, key: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise v.err(key, "must be a plain subfolder name")
    if name in ("done", "failed"):
        raise v.err(key, "'done' and 'failed' are reserved inbox folders")


def _folders(v: _Validator, raw: Any, cfg: Config) -> dict[str, FolderConfig]:
    """``folders: {name: {pipeline, set, vector}}``. The dotted keys are parsed here; their
    values are checked against the pipeline by :func:`check_folder_pipelines` at start."""
    from plotterd.pipeline import dotted_overrides

    out: dict[str, FolderConfig] = {}
    for name, body in v.mapping(raw or {}, "folders").items():
        key = f"folders.{name}"
        _folder_name(v, name, key)
        body = v.mapping(body or {}, key)
        v.no_unknown(body, {"pipeline", "set", "vector", "plotter", "tags"}, key + ".")
        if name in cfg.pipelines and "pipeline" in body:
            raise v.err(f"{key}.pipeline", f"also set by pipelines.{name}: keep one")
        fc = FolderConfig(pipeline=cfg.pipelines.get(name))
        if body.get("pipeline") is not None:
            fc.pipeline = v.string(body["pipeline"], f"{key}.pipeline")
        fc.set = dict(v.mapping(body.get("set") or {}, f"{key}.set"))
        try:
            fc.overrides = dotted_overrides(fc.set, fc.pipeline or cfg.pipeline,
                                            tuple(cfg.pipeline_dirs))
        except ConfigError as e:
            sub = "pipeline" if e.key == "pipeline" else f"set.{e.key}"
            raise v.err(f"{key}.{sub}", e.message) from e
        asked = fc.overrides.get("pen")
        if isinstance(asked, dict) and "profile" in asked:
            # loaded now, whole: a missing profile stops the start, and no merge over the
            # pipeline's own pen can keep that pen's nib under the profile's name
            fc.overrides["pen"] = _pen(v, asked, f"{key}.set.pen", cfg.pens_dir).to_dict()
        if body.get("vector") is not None:
            fc.vector = _vector(v, body["vector"], f"{key}.vector", cfg.vector)
        out[name] = fc
    return out


PLOTTER_KEYS = {f.name for f in fields(PlotterConfig)} - {"vector_keys", "key"} | {
    "vector", "pens"}


def _page(v: _Validator, raw: Any, key: str, base: PageConfig) -> PageConfig:
    """A ``page:`` section; a plotter's is merged key by key over the top-level one."""
    if raw is None:
        return base
    raw = v.mapping(raw, key)
    v.no_unknown(raw, {f.name for f in fields(PageConfig)}, key + ".")
    page = PageConfig(**{**{f.name: getattr(base, f.name) for f in fields(PageConfig)}, **raw})
    v.string(page.paper, f"{key}.paper")
    v.choice(page.orientation, f"{key}.orientation", ("auto", "portrait", "landscape"))
    v.number(page.margin_mm, f"{key}.margin_mm", minimum=0)
    return page


def _plotters(v: _Validator, top: dict, cfg: Config) -> list[PlotterConfig]:
    """``plotter:`` (one plotter, named "plotter") or ``plotters:`` (a list), never both."""
    if "plotter" in top and "plotters" in top:
        raise v.err("plotters", "give either plotter: (one plotter) or plotters: (a list), "
                    "not both")
    if "plotters" not in top:
        raw = top.get("plotter")
        if raw is not None:
            raw = v.mapping(raw, "plotter")
        return [_plotter(v, raw or {}, "plotter", cfg)]
    items = top["plotters"]
    if not isinstance(items, list) or not items:
        raise v.err("plotters", "must be a non-empty list of plotters ({name, port, ...})")
    out: list[PlotterConfig] = []
    for i, raw in enumerate(items):
        key = f"plotters[{i}]"
        raw = v.mapping(raw, key)
        if "name" not in raw:
            raise v.err(f"{key}.name", "every plotter needs a name ([a-z0-9_-])")
        pc = _plotter(v, raw, key, cfg)
        if any(o.name == pc.name for o in out):
            raise v.err(f"{key}.name", f"{pc.name!r} is already the name of another plotter")
        for o in out:
            if pc.port is not None and pc.port == o.port:
                raise v.err(f"{key}.port", f"{pc.port} is also {o.name}'s port")
            if pc.paper_trigger_file and pc.paper_trigger_file == o.paper_trigger_file:
                raise v.err(f"{key}.paper_trigger_file", f"also {o.name}'s trigger file")
        out.append(pc)
    return out


def _plotter(v: _Validator, raw: dict, key: str, cfg: Config) -> PlotterConfig:
    v.no_unknown(raw, PLOTTER_KEYS, key + ".")
    body = {k: val for k, val in raw.items() if k not in ("page", "vector", "pens", "pen")}
    pc = PlotterConfig(**body, key=key)
    if not isinstance(pc.name, str) or not PLOTTER_NAME.fullmatch(pc.name):
        raise v.err(f"{key}.name", f"must be letters a-z, digits, _ or - (got {pc.name!r})")
    pc.tags = _tags(v, pc.tags, f"{key}.tags")
    if pc.port is not None:
        pc.port = v.string(pc.port, f"{key}.port")
    v.string(pc.profile, f"{key}.profile")
    v.positive(pc.baudrate, f"{key}.baudrate", integer=True)
    _check_speed(pc.sim_speed, v.source, f"{key}.sim_speed")
    if pc.auto_resume is not None and not isinstance(pc.auto_resume, bool):
        raise v.err(f"{key}.auto_resume", "must be true, false or null")
    if pc.paper is not None:
        if pc.paper == "layout":
            raise v.err(f"{key}.paper", "layout (several jobs on one sheet) is not "
                        "implemented; use manual, auto or roll")
        v.choice(pc.paper, f"{key}.paper", PAPER_MODES)
    if pc.paper_trigger_file is not None:
        pc.paper_trigger_file = str(v.path(pc.paper_trigger_file, f"{key}.paper_trigger_file"))
    v.positive(pc.reconnect_s, f"{key}.reconnect_s")
    _check_machine(v, pc, key)
    if raw.get("pen") is not None:
        pc.pen = _pen(v, raw["pen"], f"{key}.pen", cfg.pens_dir)
    if raw.get("page") is not None:
        pc.page = _page(v, raw["page"], f"{key}.page", cfg.page)
    vec = dict(v.mapping(raw.get("vector") or {}, f"{key}.vector"))
    if "pens" in raw:
        if "pens" in vec:
            raise v.err(f"{key}.pens", f"also set by {key}.vector.pens: keep one")
        vec["pens"] = raw["pens"]
    if vec:
        # checked as a whole over the top-level vector:, naming the plotter's key
        where = f"{key}.vector" if "pens" not in raw else key
        _vector(v, vec, where, cfg.vector)
        pc.vector_keys = vec
    return pc


def _pen(v: _Validator, raw: Any, key: str, folder: Path | None) -> RoundNib | FittedPen:
    """A plotter's ``pen:``, loaded now: a missing or bad profile fails the start."""
    try:
        return pen_from_dict(v.mapping(raw, key), key=key, pens_folder=folder)
    except ConfigError as e:
        raise v.err(e.key, e.message) from None


def _tags(v: _Validator, raw: Any, key: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise v.err(key, "must be a list of tags (strings)")
    for i, t in enumerate(raw):
        if not isinstance(t, str) or not t.strip():
            raise v.err(f"{key}[{i}]", "must be a non-empty string")
    return [t.strip() for t in raw]


def _folder_routes(v: _Validator, raw: Any, cfg: Config) -> None:
    """``folders.<sub>.plotter`` / ``.tags``: checked against the plotters at start."""
    from plotterd.service.routing import unsatisfiable

    for name, body in (raw or {}).items():
        body = body or {}
        fc = cfg.folders[name]
        key = f"folders.{name}"
        if body.get("plotter") is not None:
            fc.plotter = v.string(body["plotter"], f"{key}.plotter")
        fc.tags = _tags(v, body.get("tags"), f"{key}.tags")
        if fc.plotter and fc.tags:
            raise v.err(f"{key}.tags", "give a plotter or tags, not both")
        why = unsatisfiable({"plotter": fc.plotter, "tags": fc.tags}, cfg)
        if why:
            raise v.err(f"{key}.plotter" if fc.plotter else f"{key}.tags", why)


def _vector(v: _Validator, raw: Any, key: str, base: VectorConfig) -> VectorConfig:
    """A ``vector:`` section over ``base`` (pens replaced whole), checked by the vector
    stage's own VectorOptions.check so the rules are the ones ``plotterd gcode`` applies."""
    if raw is None:
        return base
    raw = v.mapping(raw, key)
    v.no_unknown(raw, set(VECTOR_KEYS), key + ".")
    merged = {**base.to_dict(), **raw}
    pens = merged["pens"]
    if not isinstance(pens, list) or not pens:
        raise v.err(f"{key}.pens", "must be a list of pens ({color, width_mm, name}), "
                    "in plot order")
    for i, pen in enumerate(pens):
        pk = f"{key}.pens[{i}]"
        pen = v.mapping(pen, pk)
        v.no_unknown(pen, set(PEN_KEYS), pk + ".")
        if "name" in pen and pen["name"] is not None:
            v.string(pen["name"], f"{pk}.name")
    for flag in ("two_opt", "per_pen"):
        if not isinstance(merged[flag], bool):
            raise v.err(f"{key}.{flag}", "must be true or false")
    out = VectorConfig(**merged)
    out.pens = [dict(p) for p in pens]
    try:
        vector_options(out).check()
    except ConfigError as e:  # its keys read vector.<field>
        raise v.err(key + e.key[len("vector"):], e.message) from e
    return out


def vector_options(vc: VectorConfig):
    """The plotterd.vector VectorOptions of a vector section."""
    from plotterd.vector import Pen, VectorOptions

    pens = [Pen(**p) for p in vc.pens]
    return VectorOptions(tolerance_mm=vc.tolerance_mm, min_length_mm=vc.min_length_mm,
                         merge_tolerance_mm=vc.merge_tolerance_mm, two_opt=vc.two_opt,
                         pens=pens)


def check_folder_pipelines(cfg: Config) -> None:
    """Load every inbox folder's pipeline with its ``set`` keys, so that a bad key or value
    is refused at start naming ``folders.<name>.set.<key>``, not at the folder's first job.
    Loading a pipeline imports torch (the loss checks), so the daemon does it in a child
    process (plotterd.service.stages.check_pipelines)."""
    from plotterd.service.stages import check_pipelines

    checks = [(name, fc.pipeline or cfg.pipeline, fc.overrides)
              for name, fc in cfg.folders.items() if fc.pipeline or fc.overrides]
    if not checks:
        return
    bad = check_pipelines(checks, cfg.pipeline_dirs, cfg.pens_dir)
    if bad is not None:
        name, key, message = bad
        fc = cfg.folders[name]
        if key == "pipeline":
            where = "pipeline"
        else:
            # the dotted key as the user wrote it, when one matches the error's key
            written = next((k for k in fc.set if key == k or key.startswith((k + ".", k + "["))
                            or k.startswith((key + ".", key + "["))), key)
            where = f"set.{written}"
        raise ConfigError(f"folders.{name}.{where}", message, cfg.source)


def _check_machine(v: _Validator, plotter: PlotterConfig, key: str = "plotter") -> None:
    """<plotter>.timeouts and .machine: the machine stage's own fields, checked here so
    that a typo fails at start, not at the first job."""
    from plotterd.machine.base import Timeouts

    t = v.mapping(plotter.timeouts or {}, f"{key}.timeouts")
    v.no_unknown(t, {f.name for f in fields(Timeouts)}, f"{key}.timeouts.")
    for k, val in t.items():
        integer = k in ("reconnect_attempts", "max_resumes")
        v.positive(val, f"{key}.timeouts.{k}", integer=integer)
    plotter.timeouts = dict(t)
    m = v.mapping(plotter.machine or {}, f"{key}.machine")
    v.no_unknown(m, {"homing", "unlock_alarm", "write_settings", "jog_feed"},
                 f"{key}.machine.")
    for k in ("homing", "unlock_alarm"):
        if m.get(k) is not None and not isinstance(m[k], bool):
            raise v.err(f"{key}.machine.{k}", "must be true, false or null")
    if "write_settings" in m and not isinstance(m["write_settings"], bool):
        raise v.err(f"{key}.machine.write_settings", "must be true or false")
    if "jog_feed" in m:
        v.positive(m["jog_feed"], f"{key}.machine.jog_feed")
    plotter.machine = dict(m)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _refuse_non_finite(val: Any, key: str, source: str | None) -> None:
    """No NaN or infinity anywhere in the config (YAML's .nan / .inf), naming the key:
    checked once over the whole tree so that no section can forget it."""
    if isinstance(val, float) and not math.isfinite(val):
        raise ConfigError(key or "config", f"must be a finite number (got {val})", source)
    items = val.items() if isinstance(val, dict) else (
        enumerate(val) if isinstance(val, list) else ())
    for k, sub in items:
        sub_key = f"{key}[{k}]" if isinstance(val, list) else (f"{key}.{k}" if key else str(k))
        _refuse_non_finite(sub, sub_key, source)


def _check_speed(speed: Any, source: str | None, key: str = "plotter.sim_speed") -> None:
    if speed in ("instant", "realtime"):
        return
    if isinstance(speed, str) and speed.startswith("scaled:"):
        try:
            if float(speed.split(":", 1)[1]) > 0:
                return
        except ValueError:
            pass
    raise ConfigError(key, "must be instant, realtime or scaled:<factor > 0>", source)


class _Validator:
    def __init__(self, source: str | None, base_dir: Path | None):
        self.source = source
        self.base_dir = base_dir

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(key, msg, self.source)

    def mapping(self, val: Any, key: str) -> dict:
        if not isinstance(val, dict):
            raise self.err(key, "must be a mapping")
        return val

    def no_unknown(self, val: dict, known: set[str], prefix: str) -> None:
        for k in val:
            if k not in known:
                name = f"{prefix}{k}"
                raise self.err(name, f"unknown key (known: {', '.join(sorted(known))})")

    def section(self, val: Any, key: str, cls: type) -> Any:
        if val is None:
            return cls()
        val = self.mapping(val, key)
        known = {f.name for f in fields(cls)}
        self.no_unknown(val, known, key + ".")
        return cls(**val)

    def string(self, val: Any, key: str) -> str:
        if not isinstance(val, str) or not val.strip():
            raise self.err(key, "must be a non-empty string")
        return val

    def choice(self, val: Any, key: str, choices: tuple[str, ...]) -> str:
        if val not in choices:
            raise self.err(key, f"must be one of {', '.join(choices)} (got {val!r})")
        return val

    def number(self, val: Any, key: str, *, integer: bool = False,
               minimum: float | None = None) -> float:
        if not _is_num(val) or (integer and not isinstance(val, int)):
            raise self.err(key, "must be an integer" if integer else "must be a number")
        if minimum is not None and val < minimum:
            raise self.err(key, f"must be >= {minimum}")
        return val

    def positive(self, val: Any, key: str, *, integer: bool = False) -> float:
        self.number(val, key, integer=integer)
        if val <= 0:
            raise self.err(key, "must be > 0")
        return val

    def path(self, val: Any, key: str) -> Path | None:
        if val is None:
            return None
        if not isinstance(val, str) or not val.strip():
            raise self.err(key, "must be a path")
        p = Path(os.path.expandvars(val)).expanduser()
        if not p.is_absolute():
            p = (self.base_dir or Path.cwd()) / p
        return p.absolute()
