"""The watched inbox: stable files become jobs, exactly once, whatever crashes.

A file is taken when two checks ``stable_s`` apart see the same size and mtime. Hidden and
temporary files are ignored. Taking a file is a claim done in an order a restart can
always finish (:meth:`Inbox.reconcile`):

1. insert the job row in state ``claiming`` with the moves it intends (inbox file ->
   job dir), committed;
2. rename the file(s) into the job directory;
3. clear the claim and queue the job (one transaction).

A crash between 1 and 3 leaves a row whose moves are replayed on restart (each move is
idempotent: done if the destination exists). The file is never both in the inbox and
claimed by a finished row, so it cannot be processed twice.

When the job ends, a copy of the original goes to ``inbox/done/`` or ``inbox/failed/``
(with ``NAME.reason.txt``); the job keeps its own copy as its input. Files are never
deleted.
"""

from __future__ import annotations

import errno
import filecmp
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from plotterd.errors import ConfigError
from plotterd.pen import pen_from_dict
from plotterd.service.config import Config
from plotterd.service.job_options import override_error, pipeline_name_error
from plotterd.service.routing import candidates, parse_request, unsatisfiable
from plotterd.service.store import TERMINAL, JobStore

log = logging.getLogger("plotterd.intake")

RESERVED = ("done", "failed")
TEMP_SUFFIXES = (".tmp", ".part", ".crdownload", ".swp", ".swx", ".partial", ".download", "~")
SIDECAR_SUFFIXES = (".yaml", ".yml")
MAX_NAME_BYTES = 255


def is_ignored(name: str) -> bool:
    """Hidden and temporary files are never taken (editors, browsers, rsync, curl)."""
    if not name or name.startswith(".") or name.startswith("~$"):
        return True
    low = name.lower()
    return any(low.endswith(s) for s in TEMP_SUFFIXES)


def is_sidecar(name: str) -> bool:
    return name.lower().endswith(SIDECAR_SUFFIXES) or name.endswith(".reason.txt")


def input_kind(name: str) -> str:
    """"svg" for vector input that skips the optimiser (SVG, and QuickDraw .ndjson /
    Sketch-RNN .npz stroke sequences, read by the vector stage), else "image"."""
    low = name.lower()
    vector = (".svg", ".ndjson", ".npz", ".gcode", ".nc", ".ngc", ".gc")  # .gcode: to plot
    return "svg" if low.endswith(vector) else "image"


def safe_suffix(name: str) -> str:
    """The file's extension if it is short and plain, else '' (odd names stay out of paths)."""
    suf = Path(name).suffix.lower()
    if 1 < len(suf) <= 8 and suf[1:].isalnum() and suf.isascii():
        return suf
    return ""


def sidecar_for(path: Path) -> Path | None:
    """``photo.yaml`` or ``photo.png.yaml`` beside ``photo.png``."""
    for base in (path.with_suffix(""), path):
        for suf in SIDECAR_SUFFIXES:
            name = base.name + suf
            if len(name.encode()) > MAX_NAME_BYTES:
                continue
            cand = base.parent / name
            try:
                if cand != path and not cand.is_symlink() and cand.is_file():
                    return cand
            except OSError:
                continue
    return None


def fit_name(name: str, extra: str = "") -> str:
    """``name + extra`` shortened (in the middle of the stem) to fit a file name's bytes."""
    if len((name + extra).encode()) <= MAX_NAME_BYTES:
        return name + extra
    stem, suf = os.path.splitext(name)
    if len(suf.encode()) > 16:
        stem, suf = name, ""
    budget = MAX_NAME_BYTES - len((suf + extra).encode()) - 3
    while len(stem.encode()) > budget:
        stem = stem[:-1]
    return f"{stem}...{suf}{extra}"


def move_file(src: Path, dst: Path) -> None:
    """Rename, or copy-then-rename-then-unlink across file systems. Idempotent: a
    destination that exists is a complete move (it only appears by an atomic rename)."""
    if os.path.lexists(dst):
        if os.path.lexists(src) and not os.path.islink(src) and src.is_file():
            # crashed between the copy and the unlink of a cross-device move
            if filecmp.cmp(src, dst, shallow=False):
                src.unlink()
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(dst.name + ".part")
        shutil.copy2(src, tmp, follow_symlinks=False)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.rename(tmp, dst)
        src.unlink()


def copy_file(src: Path, dst: Path) -> None:
    """Copy through a temporary name, so ``dst`` is either absent or complete."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name("." + dst.name[: MAX_NAME_BYTES - 10] + ".part")
    shutil.copy2(src, tmp, follow_symlinks=False)
    os.replace(tmp, dst)


def unique_path(folder: Path, name: str, job_id: int) -> Path:
    p = folder / fit_name(name)
    if not os.path.lexists(p):
        return p
    stem, suf = os.path.splitext(name)
    return folder / fit_name(f"{stem}-job{job_id}{suf}" if len(suf) <= 16 else f"{name}-{job_id}")


class StabilityTracker:
    """A file is stable once two checks at least ``stable_s`` apart see the same size and
    mtime (and inode: a file replaced by another with equal size is a new file)."""

    def __init__(self, stable_s: float):
        self.stable_s = stable_s
        self._seen: dict[str, tuple[tuple, float]] = {}

    def check(self, path: Path, st: os.stat_result, now: float, extra: tuple = ()) -> bool:
        key = str(path)
        sig = (st.st_size, st.st_mtime_ns, st.st_ino, *extra)
        prev = self._seen.get(key)
        if prev is None or prev[0] != sig:
            self._seen[key] = (sig, now)
            return False
        return now - prev[1] >= self.stable_s

    def forget(self, path: Path) -> None:
        self._seen.pop(str(path), None)

    def prune(self, present: set[str]) -> None:
        for k in [k for k in self._seen if k not in present]:
            del self._seen[k]

    @property
    def pending(self) -> int:
        return len(self._seen)


class Inbox:
    """Scans the inbox, claims stable files as jobs, archives originals of ended jobs."""

    def __init__(self, cfg: Config, store: JobStore,
                 folder_pipeline: Callable[[str], str | None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.store = store
        self.root = cfg.inbox
        self.tracker = StabilityTracker(cfg.intake.stable_s)
        self.clock = clock
        self._folder_pipeline = folder_pipeline or (lambda name: None)
        self._lock = threading.Lock()  # one scan at a time
        self._failing: dict[str, str] = {}  # path -> why it could not be taken (logged once)
        if cfg.folders:
            from plotterd.service.config import check_folder_pipelines

            check_folder_pipelines(cfg)  # a bad folders.<name>.set key fails the start
        for d in (self.root, self.root / "done", self.root / "failed", cfg.jobs_dir):
            d.mkdir(parents=True, exist_ok=True)

    # -- scanning ----------------------------------------------------------------------
    def candidates(self) -> list[tuple[Path, str | None]]:
        """(path, subfolder) of every non-ignored entry: the inbox and one level below."""
        out: list[tuple[Path, str | None]] = []
        try:
            top = sorted(os.scandir(self.root), key=lambda e: e.name)
        except FileNotFoundError:
            self.root.mkdir(parents=True, exist_ok=True)
            return out
        for e in top:
            if is_ignored(e.name) or is_sidecar(e.name):
                continue
            if e.is_dir(follow_symlinks=False):
                if e.name in RESERVED:
                    continue
                try:
                    for f in sorted(os.scandir(e.path), key=lambda x: x.name):
                        if not is_ignored(f.name) and not is_sidecar(f.name) \
                                and not f.is_dir(follow_symlinks=False):
                            out.append((Path(f.path), e.name))
                except OSError as err:
                    log.warning("cannot list inbox folder %s: %s", e.path, err)
            else:
                out.append((Path(e.path), None))
        return out

    def scan(self) -> list[int]:
        """One pass: claim every stable file. Returns the ids of the jobs created."""
        with self._lock:
            now = self.clock()
            created: list[int] = []
            present: set[str] = set()
            for path, sub in self.candidates():
                present.add(str(path))
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                side = sidecar_for(path)
                extra: tuple = ()
                if side is not None:
                    try:
                        sst = os.stat(side)
                        extra = (str(side), sst.st_size, sst.st_mtime_ns)
                    except OSError:
                        pass
                if not self.tracker.check(path, st, now, extra):
                    continue
                self.tracker.forget(path)
                try:
                    job = self.claim(path, sub, side)
                except OSError as e:
                    # retried every scan: log it once, not every second for months
                    level = logging.DEBUG if self._failing.get(str(path)) == str(e) \
                        else logging.ERROR
                    log.log(level, "cannot take %s: %s", path, e)
                    self._failing[str(path)] = str(e)
                    continue
                if self._failing.pop(str(path), None) is not None:
                    log.info("took %s after all", path)
                if job is not None:
                    created.append(job["id"])
            self.tracker.prune(present)
            for k in [k for k in self._failing if k not in present]:
                del self._failing[k]
            return created

    # -- claiming ----------------------------------------------------------------------
    def _reject_reason(self, path: Path) -> str | None:
        if path.is_symlink():
            target = os.path.realpath(path)
            root = os.path.realpath(self.root)
            if os.path.commonpath([target, root]) != root:
                return f"symlink pointing out of the inbox ({target}): not accepted"
            return f"symlink ({os.readlink(path)}): drop the file itself"
        st = os.lstat(path)
        import stat as _stat

        if not _stat.S_ISREG(st.st_mode):
            return "not a regular file"
        return None

    def pipeline_for(self, sub: str | None) -> str:
        if sub is not None:
            folder = self.cfg.folders.get(sub)
            if folder is not None and folder.pipeline:
                return folder.pipeline
            if sub in self.cfg.pipelines:
                return self.cfg.pipelines[sub]
            named = self._folder_pipeline(sub)
            if named:
                return named
        return self.cfg.pipeline

    def claim(self, path: Path, sub: str | None, sidecar: Path | None = None) -> dict | None:
        pending = next((j for j in self.store.list(states=["claiming"])
                        if j["origin"] == str(path)), None)
        if pending is not None:
            # an earlier claim of this file could not move it: retry that one, so a file
            # that cannot be moved does not add a row on every scan
            self._finish_claim(pending)
            return self.store.get(pending["id"])
        name = path.name
        reason = self._reject_reason(path)
        if reason is not None:
            # the entry itself (a link, a fifo) goes straight to failed/
            dst = unique_path(self.root / "failed", name, 0)
            job = self.store.create(
                source="inbox", name=name, kind=input_kind(name), jobs_dir=self.cfg.jobs_dir,
                claim=[(str(path), str(dst))], origin=str(path), error=reason,
                archive=str(dst),
            )
            self._finish_claim(job)
            return self.store.get(job["id"])
        pipeline = self.pipeline_for(sub)
        options: dict[str, Any] = {}
        error = None
        folder = self.cfg.folders.get(sub) if sub is not None else None
        request = None
        if folder is not None and (folder.plotter or folder.tags):
            request = parse_request(folder.plotter, folder.tags, f"folders.{sub}")
        if sidecar is not None:
            try:
                options, pipeline, asked = _read_sidecar(sidecar, pipeline)
                request = asked or request  # the sidecar's request wins over the folder's
            except ValueError as e:
                error = str(e)
        if error is None and (why := unsatisfiable(request, self.cfg)):
            error = f"plotter request: {why}"
        if error is None and sidecar is not None and input_kind(name) == "image":
            error = override_error(pipeline, options, folder.overrides if folder else None,
                                   self.cfg.pipeline_dirs)
        if folder is not None and folder.overrides and input_kind(name) == "image":
            from plotterd.pipeline import merge_overrides

            # the folder's `set` keys, then the sidecar's over them
            options = merge_overrides(folder.overrides, options)
        if error is None:
            options, error = self.with_pen(options, request)
        suffix = safe_suffix(name) or (".svg" if input_kind(name) == "svg" else "")
        moves = [(str(path), "{dir}/input" + suffix)]
        if sidecar is not None:
            moves.append((str(sidecar), "{dir}/options" + sidecar.suffix.lower()))
        job = self.store.create(
            source="inbox", name=name, kind=input_kind(name), jobs_dir=self.cfg.jobs_dir,
            pipeline=pipeline if input_kind(name) == "image" else None, options=options,
            claim=moves, origin=str(path), input_name="input" + suffix, error=error,
            plotter_request=request,
        )
        log.info("job %d: took %s%s", job["id"], path.relative_to(self.root),
                 f" (pipeline {pipeline})" if input_kind(name) == "image" else " (svg)")
        self._finish_claim(job)
        return self.store.get(job["id"])

    def add_file(self, staged: Path, *, source: str, name: str, pipeline: str | None = None,
                 options: dict | None = None, request: dict | None = None) -> dict:
        """Queue a file staged outside the inbox (an upload, a camera frame) through the
        same crash-safe claim as inbox files. ``request``: the plotter it asks for (already
        checked by the caller)."""
        kind = input_kind(name)
        suffix = safe_suffix(name) or (".svg" if kind == "svg" else "")
        options, error = self.with_pen(options or {}, request)
        job = self.store.create(
            source=source, name=name, kind=kind, jobs_dir=self.cfg.jobs_dir,
            pipeline=(pipeline or self.cfg.pipeline) if kind == "image" else None,
            options=options, claim=[(str(staged), "{dir}/input" + suffix)],
            input_name="input" + suffix, plotter_request=request, error=error,
        )
        log.info("job %d: %s %s", job["id"], source, name)
        self._finish_claim(job)
        return self.store.get(job["id"])  # type: ignore[return-value]

    def with_pen(self, options: dict[str, Any], request: dict | None
                 ) -> tuple[dict[str, Any], str | None]:
        """The job's options with its pen settled now, while the pens folder is the
        daemon's: a ``pen: {profile: NAME}`` it asks for becomes that fitted pen's whole
        dict (so no later merge over the pipeline's pen can mix the two, and the job keeps
        the pen it was given if the profile is refitted); without one, the job takes the
        pen of the (first) plotter it may go to. Returns (options, error); the error fails
        the job at intake."""
        asked = options.get("pen")
        if isinstance(asked, dict) and "profile" in asked:
            try:
                pen = pen_from_dict(asked, pens_folder=self.cfg.pens_dir)
            except ConfigError as e:
                return options, f"job options: {e}"
            return {**options, "pen": pen.to_dict()}, None
        if asked is not None:
            return options, None
        plotters = candidates(request, self.cfg)
        if plotters and plotters[0].pen is not None:
            return {**options, "pen": plotters[0].pen.to_dict()}, None
        return options, None

    def _finish_claim(self, job: dict) -> None:
        """Replay the claim's moves (idempotent) and leave state ``claiming``."""
        moved_all = True
        for src, dst in job["claim"] or []:
            s, d = Path(src), Path(dst)
            if not os.path.lexists(s) and not os.path.lexists(d):
                moved_all = False
                continue
            move_file(s, d)
        if job["error"]:
            if job["archive"]:
                # rejected at intake: the entry itself already went to failed/ above
                _write_reason(Path(job["archive"]), job["error"])
                self.store.transition(job["id"], "failed", expect=["claiming"], claim=None,
                                      archived=1, message=job["error"])
            else:  # taken, but its options are bad: fail it like any job
                self.store.transition(job["id"], "failed", expect=["claiming"], claim=None,
                                      message=job["error"])
                self.archive(self.store.get(job["id"]))
            log.warning("job %d: %s: %s", job["id"], job["name"], job["error"])
            return
        if not moved_all and not (Path(job["dir"]) / (job["input"] or "")).exists():
            self.store.transition(job["id"], "failed", expect=["claiming"], claim=None,
                                  message="input file vanished during intake", archived=1)
            return
        self.store.transition(job["id"], "queued", expect=["claiming"], claim=None)

    # -- restart -----------------------------------------------------------------------
    def reconcile(self) -> None:
        """Finish every claim and archive interrupted by a crash (run at start-up)."""
        for job in self.store.list(states=["claiming"], newest_first=False):
            log.info("job %d: finishing an interrupted intake of %s", job["id"], job["name"])
            try:
                self._finish_claim(job)
            except OSError as e:  # retried by the scan that finds the file again
                log.error("job %d: cannot finish the intake of %s: %s", job["id"],
                          job["name"], e)
        self.archive_pending()

    def archive_pending(self) -> None:
        for job in self.store.list(states=TERMINAL, newest_first=False):
            if job["archived"] or job["source"] != "inbox":
                continue
            try:
                self.archive(job)
            except OSError as e:
                log.error("job %d: cannot archive the original: %s", job["id"], e)

    def archive(self, job: dict) -> None:
        """Copy the original of an ended inbox job to done/ or failed/ (+ reason)."""
        if job["source"] != "inbox" or job["archived"]:
            return
        folder = self.root / ("done" if job["state"] == "done" else "failed")
        dst = Path(job["archive"]) if job["archive"] else unique_path(folder, job["name"],
                                                                      job["id"])
        if not job["archive"]:
            self.store.update(job["id"], archive=str(dst))  # intent first, then the copy
        src = Path(job["dir"]) / (job["input"] or "")
        if src.is_file():
            copy_file(src, dst)
        side = next(iter(Path(job["dir"]).glob("options.y*ml")), None)
        if side is not None:
            copy_file(side, dst.with_name(fit_name(dst.name, ".yaml")))
        if job["state"] != "done":
            reason = job["error"] or job["state"]
            _write_reason(dst, reason)
        self.store.update(job["id"], archived=1)


def _write_reason(dst: Path, reason: str) -> None:
    rp = dst.with_name(fit_name(dst.name, ".reason.txt"))
    tmp = rp.with_name("." + rp.name[:200] + ".part")
    tmp.write_text(reason.rstrip() + "\n")
    os.replace(tmp, rp)


def _read_sidecar(path: Path, pipeline: str) -> tuple[dict, str, dict | None]:
    """A sidecar holds pipeline overrides; its ``pipeline`` key picks the pipeline, its
    ``plotter`` or ``tags`` key the plotter (the request; None when it names none)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"sidecar {path.name}: cannot read: {e}") from e
    if data is None:
        return {}, pipeline, None
    if not isinstance(data, dict):
        raise ValueError(f"sidecar {path.name}: must be a mapping of pipeline keys")
    data = dict(data)
    if "pipeline" in data:
        p = data.pop("pipeline")
        if why := pipeline_name_error(p):  # a name only: never a file the job chooses
            raise ValueError(f"sidecar {path.name}: {why}")
        pipeline = p
    request = parse_request(data.pop("plotter", None), data.pop("tags", None),
                            f"sidecar {path.name}")
    return data, pipeline, request


class InboxWatcher:
    """Wakes the intake loop on file-system events (inotify through watchdog, or polling)."""

    def __init__(self, root: Path, wake: threading.Event, mode: str = "auto"):
        self.root = root
        self.wake = wake
        self.mode = mode
        self.kind = "none"
        self._observer = None

    def start(self) -> str:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        wake = self.wake

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # noqa: ANN001 - watchdog's signature
                wake.set()

        tries = []
        if self.mode in ("auto", "inotify"):
            tries.append(("inotify", Observer))
        if self.mode in ("auto", "polling"):
            tries.append(("polling", PollingObserver))
        last: Exception | None = None
        for kind, cls in tries:
            obs = cls() if kind == "inotify" else cls(timeout=1.0)
            try:
                obs.schedule(Handler(), str(self.root), recursive=True)
                obs.start()
            except (OSError, RuntimeError) as e:
                last = e
                log.warning("inbox watcher %s failed (%s); falling back", kind, e)
                continue
            self._observer, self.kind = obs, kind
            log.info("watching %s (%s)", self.root, kind)
            return kind
        # the periodic scan still finds files; only the instant wake-up is lost
        log.error("no inbox watcher could start (%s); relying on periodic scans", last)
        return self.kind

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
