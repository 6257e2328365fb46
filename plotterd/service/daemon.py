"""The daemon: recovery at start-up, then intake, camera, optimiser, plotter and the API.

Threads: ``intake`` (inbox scans), ``camera`` (its timer and trigger file), ``retention``
(hourly pruning), ``optimiser`` (drives one subprocess per job), one ``plotter`` thread per
configured plotter (each streams to its own port), ``api`` (uvicorn). The main thread waits
for a signal and pings the systemd watchdog.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from plotterd import __version__
from plotterd.errors import PlotterdError
from plotterd.service import retention, routing, stages
from plotterd.service.camera import Camera, CameraError
from plotterd.service.config import Config
from plotterd.service.intake import Inbox, InboxWatcher, safe_suffix
from plotterd.service.notify import sd_notify, watchdog_interval
from plotterd.service.store import TERMINAL, JobStore
from plotterd.service.workers import OptimiserWorker, PlotterWorker

log = logging.getLogger("plotterd.daemon")


class AmbiguousPlotter(PlotterdError):
    """A command for "the plotter" when several are configured (the API answers 400)."""


class Daemon:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.stopping = threading.Event()
        self.started = time.time()
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.staging = cfg.state_dir / "incoming"
        self.store = JobStore(cfg.db_path)
        self.inbox = Inbox(cfg, self.store, folder_pipeline=self._folder_pipeline)
        self.wake_intake = threading.Event()
        self.watcher = InboxWatcher(cfg.inbox, self.wake_intake, cfg.intake.observer)
        self.camera = Camera(cfg.camera)
        self.optimiser = OptimiserWorker(self)
        # one worker per plotter, in config order (the first free one gets a job first)
        self.plotters: dict[str, PlotterWorker] = {pc.name: PlotterWorker(self, pc)
                                                   for pc in cfg.plotters}
        self._threads: list[threading.Thread] = []
        self.server: Any = None
        self.ready = threading.Event()

    # -- helpers used by workers and the API ------------------------------------------------
    @property
    def plotter(self) -> PlotterWorker:
        """The first plotter's worker (the only one of a single-plotter config)."""
        return next(iter(self.plotters.values()))

    def plotter_gone(self, name: str) -> bool:
        worker = self.plotters.get(name)
        return worker is not None and worker.gone()

    def wake_plotters(self) -> None:
        for worker in self.plotters.values():
            worker.wake.set()

    def pick_plotter(self, name: str | None, *, waiting: str | None = None) -> PlotterWorker:
        """The plotter a command is for: ``name``, else the only one, else (``waiting``: a
        state such as ``pen_change``) the only one in that state. KeyError for an unknown
        name, AmbiguousPlotter when several could be meant."""
        if name:
            if name not in self.plotters:
                raise KeyError(f"no plotter is named {name!r} (plotters: "
                               f"{', '.join(self.plotters)})")
            return self.plotters[name]
        if len(self.plotters) == 1:
            return self.plotter
        if waiting is not None:
            hits = [w for w in self.plotters.values() if w.state_and_message()[0] == waiting]
            if len(hits) == 1:
                return hits[0]
        raise AmbiguousPlotter(f"there are {len(self.plotters)} plotters "
                               f"({', '.join(self.plotters)}): say which (plotter=NAME, "
                               "--plotter NAME)")

    def _folder_pipeline(self, sub: str) -> str | None:
        return stages.pipeline_for_folder(sub, self.cfg.pipeline_dirs)

    def finish(self, job_id: int, state: str, error: str | None = None, *,
               expect: list[str] | None = None, **fields: Any) -> bool:
        """End a job (done / failed / cancelled) and archive its inbox original."""
        assert state in TERMINAL
        if state == "failed" and error:
            fields["error"] = error
        moved = self.store.transition(job_id, state, expect=expect, message=error, **fields)
        if not moved:
            return False
        job = self.store.get(job_id)
        level = logging.INFO if state == "done" else logging.WARNING
        log.log(level, "job %d: %s%s", job_id, state, f": {error}" if error else "")
        try:
            self.inbox.archive(job)
        except OSError as e:
            log.error("job %d: cannot archive the original: %s", job_id, e)
        return True

    def cancel_job(self, job_id: int) -> str:
        """Cancel any job that has not ended; returns what happened."""
        job = self.store.get(job_id)
        if job is None:
            raise KeyError(job_id)
        state = job["state"]
        if state in TERMINAL:
            return f"already {state}"
        if state == "optimising" and self.optimiser.cancel(job_id):
            return "cancelling"
        worker = next((w for w in self.plotters.values() if w.current == job_id), None)
        if state == "plotting" and worker is not None:
            worker.cancel()
            return "cancelling"
        if self.finish(job_id, "cancelled", "cancelled", expect=["queued", "vectorised",
                                                                 "interrupted", "optimising"]):
            return "cancelled"
        return "not cancelled (state changed)"

    def resume_job(self, job_id: int) -> dict:
        """An interrupted plot continues from its last completed stroke."""
        job = self.store.get(job_id)
        if job is None:
            raise KeyError(job_id)
        start = job["resume_stroke"]
        if start is None:
            done = job["last_completed_stroke"]
            start = 0 if done is None else done + 1
        if not self.store.transition(job_id, "vectorised", expect=["interrupted"],
                                     resume_stroke=start, error=None,
                                     message=f"resume from stroke {start}"):
            raise PlotterdError(f"job {job_id} is {job['state']}, not interrupted")
        self.wake_plotters()
        return self.store.get(job_id)  # type: ignore[return-value]

    def replot_job(self, job_id: int) -> dict:
        """Plot an already vectorised job again from the first stroke."""
        job = self.store.get(job_id)
        if job is None:
            raise KeyError(job_id)
        if not (Path(job["dir"]) / job["artefacts"].get("gcode", "plot.gcode")).exists():
            raise PlotterdError(f"job {job_id} has no G-code to plot")
        if not self.store.transition(job_id, "vectorised",
                                     expect=["done", "failed", "cancelled", "interrupted"],
                                     resume_stroke=None, error=None, finished=None,
                                     last_acked_stroke=None, last_completed_stroke=None,
                                     message="replot"):
            raise PlotterdError(f"job {job_id} is {job['state']}: cannot replot it now")
        self.wake_plotters()
        return self.store.get(job_id)  # type: ignore[return-value]

    def stage_file(self, name: str) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True)
        # the original name lives in the job row; the staged file only keeps its extension
        return self.staging / f"{uuid.uuid4().hex}{safe_suffix(name)}"

    def submit_file(self, staged: Path, *, source: str, name: str,
                    pipeline: str | None = None, options: dict | None = None,
                    request: dict | None = None) -> dict:
        job = self.inbox.add_file(staged, source=source, name=name, pipeline=pipeline,
                                  options=options, request=request)
        self.optimiser.wake.set()
        return job

    def capture(self) -> dict:
        """Grab a camera frame and queue it as a job (API, timer, trigger file)."""
        frame = self.camera.grab()
        name = time.strftime("camera-%Y%m%d-%H%M%S.png")
        staged = self.stage_file(name)
        self.camera.save(frame, staged)
        return self.submit_file(staged, source="camera", name=name,
                                pipeline=self.cfg.camera.pipeline)

    def status(self) -> dict[str, Any]:
        """The first plotter's status at the top level (as with one plotter), every
        plotter's under ``plotters``."""
        plotters = [w.status() for w in self.plotters.values()]
        return {**plotters[0], "plotters": plotters, "camera": self.camera.status(),
                "optimising": self.optimiser.current, "optimising_all": self.optimiser.running,
                "optimiser_backend": self.cfg.optimiser.backend, "watcher": self.watcher.kind,
                "inbox": str(self.cfg.inbox), "jobs": self.store.counts()}

    # -- start-up recovery ----------------------------------------------------------------------
    def recover(self) -> None:
        self.inbox.reconcile()
        for job in self.store.list(states=["optimising"], newest_first=False):
            self.store.transition(job["id"], "queued", expect=["optimising"],
                                  message="restart: optimisation resumes from its checkpoint")
            log.info("job %d: optimisation resumes after a restart", job["id"])
        for job in self.store.list(states=["plotting"], newest_first=False):
            done = job["last_completed_stroke"]
            start = 0 if done is None else done + 1
            self.store.transition(job["id"], "interrupted", expect=["plotting"],
                                  resume_stroke=start,
                                  message="the daemon stopped while plotting")
            log.warning("job %d: was plotting when the daemon stopped: interrupted at stroke %d",
                        job["id"], start)
        self._reroute()
        for job in self.store.list(states=["interrupted"], newest_first=False):
            pc = self.cfg.plotter_named(job["plotter"] or "") or self.cfg.plotter
            if pc.auto_resume_on:
                self.resume_job(job["id"])
                log.info("job %d: resuming the plot on %s by itself", job["id"], pc.name)
        # staged uploads / frames that never became a job (crash before the row)
        claimed = {src for j in self.store.list(states=["claiming"])
                   for src, _ in (j["claim"] or [])}
        if self.staging.exists():
            for p in self.staging.iterdir():
                if str(p) not in claimed:
                    p.unlink(missing_ok=True) if p.is_file() else shutil.rmtree(p, True)

    def _reroute(self) -> None:
        """After a config change: a ready job whose request no plotter satisfies now fails
        saying so; one with G-code for none of the plotters that may draw it now is made
        again (queued: an image resumes from its final checkpoint)."""
        cfg = self.cfg
        for job in self.store.list(states=["vectorised"], newest_first=False):
            if job["resume_stroke"] is not None:
                continue  # a started plot stays with its plotter (it waits for it)
            why = routing.unsatisfiable(job["plotter_request"], cfg)
            made = routing.gcode_for(job)
            if why:
                self.finish(job["id"], "failed", f"plotter request: {why}",
                            expect=["vectorised"])
            elif made and not any(p.name in made
                                  for p in routing.candidates(job["plotter_request"], cfg)):
                self.store.transition(job["id"], "queued", expect=["vectorised"],
                                      message="the plotters changed: its G-code is made again")
                log.info("job %d: no G-code for the plotters configured now: made again",
                         job["id"])

    # -- threads -------------------------------------------------------------------------------
    def _intake_loop(self) -> None:
        scan_error: str | None = None
        while not self.stopping.is_set():
            try:
                if self.inbox.scan():
                    self.optimiser.wake.set()
                if scan_error is not None:
                    log.info("inbox scan works again")
                    scan_error = None
            except Exception as e:
                # a scan runs every second: log a failure once, not a traceback a second
                if repr(e) != scan_error:
                    log.exception("inbox scan failed")
                    scan_error = repr(e)
            wait = self.cfg.intake.scan_interval_s
            if self.inbox.tracker.pending:
                wait = min(wait, max(0.05, self.cfg.intake.stable_s))
            self.wake_intake.wait(wait)
            self.wake_intake.clear()
            # let a burst of events settle before rescanning
            if not self.stopping.is_set():
                self.stopping.wait(0.05)

    def _retention_loop(self) -> None:
        """A retention pass at start and then hourly (see plotterd.service.retention)."""
        while not self.stopping.is_set():
            try:
                retention.prune(self.cfg, self.store)
            except Exception:  # a pass that fails is tried again next time; never fatal
                log.exception("retention pass failed")
            self.stopping.wait(retention.EVERY_S)

    def _camera_loop(self) -> None:
        """The camera's timer and trigger file, on a thread of their own: a camera that
        hangs (up to camera.timeout_s a call) never holds up the inbox."""
        cam = self.cfg.camera
        next_shot = time.monotonic() + cam.interval_s if cam.interval_s else None
        while not self.stopping.is_set():
            self._camera_tick(next_shot)
            if next_shot is not None and time.monotonic() >= next_shot:
                next_shot = time.monotonic() + cam.interval_s
            self.stopping.wait(min(self.cfg.intake.scan_interval_s, 1.0))

    def _camera_tick(self, next_shot: float | None) -> None:
        trigger = self.cfg.camera.trigger_file
        shoot = next_shot is not None and time.monotonic() >= next_shot
        if trigger and os.path.exists(trigger):
            try:
                os.unlink(trigger)
            except OSError as e:
                log.warning("camera trigger %s: cannot remove: %s", trigger, e)
            shoot = True
        if shoot:
            try:
                job = self.capture()
                log.info("camera: queued job %d", job["id"])
            except CameraError:
                pass  # recorded in the camera status; retried
            except Exception:
                log.exception("camera capture failed")
        else:
            self.camera.try_open()

    def start(self) -> None:
        from plotterd.service.api import make_server

        self.recover()
        self.watcher.start()
        self.server = make_server(self)
        api = threading.Thread(target=self._serve, name="api", daemon=True)
        intake = threading.Thread(target=self._intake_loop, name="intake", daemon=True)
        self._threads = [self.optimiser, *self.plotters.values(), intake, api]
        self._threads.append(threading.Thread(target=self._retention_loop, name="retention",
                                              daemon=True))
        if self.camera.enabled:
            self._threads.append(threading.Thread(target=self._camera_loop, name="camera",
                                                  daemon=True))
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + 30
        while not self.server.started and api.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            self.stopping.set()
            raise PlotterdError(
                f"the HTTP API could not listen on {self.cfg.api.bind}:{self.cfg.api.port} "
                "(port in use?)"
            )
        self.ready.set()
        sd_notify(f"READY=1\nSTATUS=listening on {self.cfg.api.url}\nMAINPID={os.getpid()}")
        log.info("plotterd %s ready: API %s, inbox %s, %s", __version__, self.cfg.api.url,
                 self.cfg.inbox, ", ".join(
                     f"{pc.name}: {pc.port or 'simulated (dry-run)'}" for pc in self.cfg.plotters))

    def _serve(self) -> None:
        try:
            self.server.run()
        except SystemExit:  # uvicorn exits when it cannot bind
            pass
        except Exception:
            log.exception("the HTTP API stopped")

    def stop(self) -> None:
        workers = list(self.plotters.values())
        if self.stopping.is_set() and not self._threads and not any(w.is_alive()
                                                                   for w in workers):
            return
        log.info("stopping")
        sd_notify("STOPPING=1")
        self.stopping.set()
        self.optimiser.wake.set()
        self.wake_plotters()
        self.wake_intake.set()
        for w in workers:
            if w.control is not None:
                w.control.cancel()  # recorded as interrupted, resumable
        self.watcher.stop()
        self.camera.shut()
        if self.server is not None:
            self.server.should_exit = True
        for t in {*self._threads, self.optimiser, *workers}:
            if t.is_alive():
                t.join(timeout=30)
        self._threads = []
        self.camera.close()
        self.store.close()

    def run_forever(self) -> None:
        """Start, then wait for SIGTERM / SIGINT (and ping the systemd watchdog). A worker
        thread that died ends the daemon with a PlotterdError (exit status 2), so the
        service manager restarts it even without a watchdog."""
        got = threading.Event()

        def on_signal(signum, frame):  # noqa: ANN001 - signal handler signature
            got.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        ping = watchdog_interval()
        last_ping = 0.0
        try:
            self.start()
            while not got.is_set():
                got.wait(min(ping or 1.0, 1.0))
                dead = [t.name for t in self._threads if not t.is_alive()]
                if dead and not got.is_set():
                    raise PlotterdError(f"the {', '.join(dead)} thread stopped unexpectedly; "
                                        "exiting so that the daemon is restarted")
                if ping and time.monotonic() - last_ping >= ping:
                    sd_notify("WATCHDOG=1")
                    last_ping = time.monotonic()
        finally:
            self.stop()


def run(cfg: Config) -> None:
    from plotterd.service.logs import setup_logging

    setup_logging(cfg.log_level)
    Daemon(cfg).run_forever()
