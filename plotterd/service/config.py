"""The daemon's configuration: one YAML file, parsed once into validated dataclasses.

Every key has a default, so the daemon runs with no file at all (dry-run against the
simulated plotter, state under ``platformdirs.user_state_dir("plotterd")``). Unknown keys are
refused and every error names its dotted key (``ConfigError("api.port", ...)``).

Example (all keys, with their defaults)::

    state_dir: ~/.local/state/plotterd   # jobs/, jobs.db, inbox/ (unless inbox is set)
    inbox: null                          # default <state_dir>/inbox
    log_level: info                      # debug | info | warning | error
    weights_dir: null                    # perceptual weights (VGG16/LPIPS); null = stage default
    pipeline: paper                      # default pipeline
    pipelines: {}                        # inbox subfolder -> pipeline name or path
    pipeline_dirs: []                    # extra folders searched for <name>.yaml pipelines
    folders: {}                          # inbox subfolder -> {pipeline: NAME, set: {dotted.key:
                                         # value}, vector: {...as below}}
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
    page: {paper: a4, orientation: auto, margin_mm: 10}
    optimiser: {device: auto, threads: 1, checkpoint_every: 25, iterations: null, seed: null,
                timeout_s: null, stall_s: 600,
                backend: local}                  # local: a subprocess here; ray: a Ray task
    ray:                                 # only with optimiser.backend: ray (pip install plotterd[ray])
      address: auto                      # the cluster: auto (RAY_ADDRESS / a running local
                                         # head), HOST:PORT, or ray://HOST:10001
      num_gpus: 0                        # what each optimise task asks for
      num_cpus: 1
      max_attempts: 3                    # a worker dying mid-job: retried from its checkpoint
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
    api: {bind: 127.0.0.1, port: 8765, token: null, max_upload_mb: 50}
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from plotterd.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")
OBSERVERS = ("auto", "inotify", "polling")
# manual: a sheet per job, confirmed by the user; auto / roll: the next job starts at once
PAPER_MODES = ("manual", "auto", "roll")
OPTIMISER_BACKENDS = ("local", "ray")


@dataclass
class PlotterConfig:
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


@dataclass
class ApiConfig:
    bind: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_upload_mb: float = 50.0

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


@dataclass
class Config:
    state_dir: Path
    inbox: Path
    log_level: str = "info"
    weights_dir: Path | None = None
    pipeline: str = "paper"
    pipelines: dict[str, str] = field(default_factory=dict)
    pipeline_dirs: list[Path] = field(default_factory=list)
    folders: dict[str, FolderConfig] = field(default_factory=dict)
    vector: VectorConfig = field(default_factory=VectorConfig)
    plotter: PlotterConfig = field(default_factory=PlotterConfig)
    page: PageConfig = field(default_factory=PageConfig)
    optimiser: OptimiserConfig = field(default_factory=OptimiserConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    source: str | None = None  # the file it came from, for messages

    @property
    def dry_run(self) -> bool:
        return self.plotter.port is None

    @property
    def auto_resume(self) -> bool:
        if self.plotter.auto_resume is None:
            return self.dry_run
        return self.plotter.auto_resume

    @property
    def paper_mode(self) -> str:
        """manual (wait for a new sheet after each job) or auto (no wait; also roll)."""
        mode = self.plotter.paper or ("auto" if self.dry_run else "manual")
        return "auto" if mode == "roll" else mode

    @property
    def paper_trigger(self) -> Path:
        if self.plotter.paper_trigger_file:
            return Path(self.plotter.paper_trigger_file)
        return self.state_dir / "paper-changed"

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
        cfg.plotter.port = None
    return cfg


def parse_config(data: Any, *, source: str | None = None, base_dir: Path | None = None) -> Config:
    """Validate a config mapping (as loaded from YAML). Relative paths are taken relative to
    the config file's folder (``base_dir``), else to the working directory."""
    v = _Validator(source, base_dir)
    top = v.mapping(data, "config")
    known = {
        "state_dir", "inbox", "log_level", "weights_dir", "pipeline", "pipelines",
        "pipeline_dirs", "folders", "vector", "plotter", "page", "optimiser", "intake",
        "camera", "api", "ray",
    }
    v.no_unknown(top, known, "")
    state_dir = v.path(top.get("state_dir"), "state_dir") or default_state_dir()
    inbox = v.path(top.get("inbox"), "inbox") or state_dir / "inbox"
    cfg = Config(state_dir=state_dir, inbox=inbox, source=source)
    cfg.log_level = v.choice(top.get("log_level", "info"), "log_level", LOG_LEVELS)
    cfg.weights_dir = v.path(top.get("weights_dir"), "weights_dir")
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
    cfg.vector = _vector(v, top.get("vector"), "vector", VectorConfig())
    cfg.folders = _folders(v, top.get("folders"), cfg)

    cfg.plotter = v.section(top.get("plotter"), "plotter", PlotterConfig)
    if cfg.plotter.port is not None:
        cfg.plotter.port = v.string(cfg.plotter.port, "plotter.port")
    v.string(cfg.plotter.profile, "plotter.profile")
    v.positive(cfg.plotter.baudrate, "plotter.baudrate", integer=True)
    _check_speed(cfg.plotter.sim_speed, source)
    if cfg.plotter.auto_resume is not None and not isinstance(cfg.plotter.auto_resume, bool):
        raise ConfigError("plotter.auto_resume", "must be true, false or null", source)
    if cfg.plotter.paper is not None:
        if cfg.plotter.paper == "layout":
            raise ConfigError("plotter.paper", "layout (several jobs on one sheet) is not "
                              "implemented; use manual, auto or roll", source)
        v.choice(cfg.plotter.paper, "plotter.paper", PAPER_MODES)
    if cfg.plotter.paper_trigger_file is not None:
        cfg.plotter.paper_trigger_file = str(v.path(cfg.plotter.paper_trigger_file,
                                                    "plotter.paper_trigger_file"))
    v.positive(cfg.plotter.reconnect_s, "plotter.reconnect_s")
    _check_machine(v, cfg.plotter)

    cfg.page = v.section(top.get("page"), "page", PageConfig)
    v.string(cfg.page.paper, "page.paper")
    v.choice(cfg.page.orientation, "page.orientation", ("auto", "portrait", "landscape"))
    v.number(cfg.page.margin_mm, "page.margin_mm", minimum=0)

    cfg.optimiser = v.section(top.get("optimiser"), "optimiser", OptimiserConfig)
    v.string(cfg.optimiser.device, "optimiser.device")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.optimiser.device):
        # which GPUs exist is checked in the optimiser process (it imports torch; we do not)
        raise ConfigError("optimiser.device",
                          f"expected auto, cpu, cuda or cuda:N, got {cfg.optimiser.device!r}",
                          source)
    v.positive(cfg.optimiser.threads, "optimiser.threads", integer=True)
    v.positive(cfg.optimiser.checkpoint_every, "optimiser.checkpoint_every", integer=True)
    if cfg.optimiser.iterations is not None:
        v.positive(cfg.optimiser.iterations, "optimiser.iterations", integer=True)
    if cfg.optimiser.seed is not None:
        v.number(cfg.optimiser.seed, "optimiser.seed", integer=True, minimum=0)
    if cfg.optimiser.timeout_s is not None:
        v.positive(cfg.optimiser.timeout_s, "optimiser.timeout_s")
    if cfg.optimiser.stall_s is not None:
        v.positive(cfg.optimiser.stall_s, "optimiser.stall_s")
    v.choice(cfg.optimiser.backend, "optimiser.backend", OPTIMISER_BACKENDS)
    cfg.ray = _ray(v, top.get("ray"), cfg.optimiser.backend)

    cfg.intake = v.section(top.get("intake"), "intake", IntakeConfig)
    v.choice(cfg.intake.observer, "intake.observer", OBSERVERS)
    v.number(cfg.intake.stable_s, "intake.stable_s", minimum=0)
    v.positive(cfg.intake.scan_interval_s, "intake.scan_interval_s")

    cam_raw = v.mapping(top.get("camera") or {}, "camera")
    clahe_raw = cam_raw.get("clahe", {})
    cam_raw = {k: val for k, val in cam_raw.items() if k != "clahe"}
    cfg.camera = v.section(cam_raw, "camera", CameraConfig)
    cfg.camera.clahe = None if clahe_raw is None else v.section(clahe_raw, "camera.clahe",
                                                                 ClaheConfig)
    cam = cfg.camera
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
    v.number(cam.warmup_frames, "camera.warmup_frames", integer=True, minimum=0)
    if cam.pipeline is not None:
        v.string(cam.pipeline, "camera.pipeline")

    cfg.api = v.section(top.get("api"), "api", ApiConfig)
    v.string(cfg.api.bind, "api.bind")
    v.number(cfg.api.port, "api.port", integer=True, minimum=0)
    if cfg.api.port > 65535:
        raise ConfigError("api.port", "must be at most 65535", source)
    if cfg.api.token is not None:
        cfg.api.token = v.string(cfg.api.token, "api.token")
        if len(cfg.api.token) < 8:
            raise ConfigError("api.token", "too short (8 characters at least)", source)
    if cfg.api.token is None and os.environ.get("PLOTTERD_TOKEN"):
        cfg.api.token = os.environ["PLOTTERD_TOKEN"]
    if not cfg.api.is_loopback and not cfg.api.token:
        raise ConfigError(
            "api.token",
            f"required when api.bind is not a loopback address ({cfg.api.bind}); "
            "set it or PLOTTERD_TOKEN",
            source,
        )
    v.positive(cfg.api.max_upload_mb, "api.max_upload_mb")
    return cfg


def _ray(v: _Validator, raw: Any, backend: str) -> RayConfig:
    """``ray:``; whether Ray is installed is checked at start only when it is used (the
    daemon process itself never imports it)."""
    rc = v.section(raw, "ray", RayConfig)
    v.string(rc.address, "ray.address")
    v.number(rc.num_gpus, "ray.num_gpus", minimum=0)
    v.number(rc.num_cpus, "ray.num_cpus", minimum=0)
    v.positive(rc.max_attempts, "ray.max_attempts", integer=True)
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
        v.no_unknown(body, {"pipeline", "set", "vector"}, key + ".")
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
        if body.get("vector") is not None:
            fc.vector = _vector(v, body["vector"], f"{key}.vector", cfg.vector)
        out[name] = fc
    return out


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
    bad = check_pipelines(checks, cfg.pipeline_dirs)
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


def _check_machine(v: _Validator, plotter: PlotterConfig) -> None:
    """plotter.timeouts and plotter.machine: the machine stage's own fields, checked here so
    that a typo fails at start, not at the first job."""
    from plotterd.machine.base import Timeouts

    t = v.mapping(plotter.timeouts or {}, "plotter.timeouts")
    v.no_unknown(t, {f.name for f in fields(Timeouts)}, "plotter.timeouts.")
    for k, val in t.items():
        integer = k in ("reconnect_attempts", "max_resumes")
        v.positive(val, f"plotter.timeouts.{k}", integer=integer)
    plotter.timeouts = dict(t)
    m = v.mapping(plotter.machine or {}, "plotter.machine")
    v.no_unknown(m, {"homing", "unlock_alarm", "write_settings", "jog_feed"},
                 "plotter.machine.")
    for k in ("homing", "unlock_alarm"):
        if m.get(k) is not None and not isinstance(m[k], bool):
            raise v.err(f"plotter.machine.{k}", "must be true, false or null")
    if "write_settings" in m and not isinstance(m["write_settings"], bool):
        raise v.err("plotter.machine.write_settings", "must be true or false")
    if "jog_feed" in m:
        v.positive(m["jog_feed"], "plotter.machine.jog_feed")
    plotter.machine = dict(m)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_speed(speed: Any, source: str | None) -> None:
    if speed in ("instant", "realtime"):
        return
    if isinstance(speed, str) and speed.startswith("scaled:"):
        try:
            if float(speed.split(":", 1)[1]) > 0:
                return
        except ValueError:
            pass
    raise ConfigError("plotter.sim_speed", "must be instant, realtime or scaled:<factor > 0>",
                      source)


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
