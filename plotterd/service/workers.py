"""The two workers: the optimiser (one subprocess per job) and the plotter (one port).

They overlap: while the plotter draws job N, the optimiser works on job N+1. Both take
their next job from the store with an atomic compare-and-set, so the state in the
database is always the truth a restart starts from.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plotterd import atomic
from plotterd.errors import PlotterdError
from plotterd.progress import Progress
from plotterd.service import stages

if TYPE_CHECKING:
    from plotterd.service.daemon import Daemon

log = logging.getLogger("plotterd.workers")


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    from plotterd.service.optimise_worker import die_with_parent

    die_with_parent()


class OptimiserWorker(threading.Thread):
    """Runs ``python -m plotterd.service.optimise_worker JOBDIR`` for each queued job."""

    def __init__(self, daemon: Daemon):
        super().__init__(name="optimiser", daemon=True)
        self.d = daemon
        self.wake = threading.Event()
        self.current: int | None = None
        self._proc: subprocess.Popen | None = None
        self._buf = b""
        self._cancel: set[int] = set()

    def cancel(self, job_id: int) -> bool:
        """Stop the running optimisation of ``job_id``; True if it was running."""
        if self.current != job_id:
            return False
        self._cancel.add(job_id)
        self.wake.set()
        return True

    def run(self) -> None:
        try:
            self._worker()  # start it now: it imports torch while nothing waits for it
        except OSError:
            log.exception("cannot start the optimiser process")
        while not self.d.stopping.is_set():
            try:
                job = self.d.store.claim_next("queued", "optimising")
            except Exception:
                log.exception("optimiser: cannot read the job store")
                job = None
            if job is None:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            try:
                self.process(job)
            except Exception as e:  # a bug here must fail the job, not stop the worker
                log.exception("job %d: optimiser worker error", job["id"])
                self.d.finish(job["id"], "failed", f"internal error: {e}", expect=["optimising"])
            finally:
                self.current = None
        self._stop_worker()

    def spec(self, job: dict) -> dict[str, Any]:
        cfg = self.d.cfg
        return {
            "job_id": job["id"], "db": str(cfg.db_path), "kind": job["kind"],
            "input": job["input"], "pipeline": job["pipeline"], "overrides": job["options"],
            "pipeline_dirs": [str(p) for p in cfg.pipeline_dirs],
            "page": {"paper": cfg.page.paper, "orientation": cfg.page.orientation,
                     "margin_mm": cfg.page.margin_mm},
            "profile": cfg.plotter.profile, "device": cfg.optimiser.device,
            "threads": cfg.optimiser.threads, "checkpoint_every": cfg.optimiser.checkpoint_every,
            "iterations": cfg.optimiser.iterations, "seed": cfg.optimiser.seed,
            "weights_dir": str(cfg.weights_dir) if cfg.weights_dir else None,
        }

    def process(self, job: dict) -> None:
        job_id = job["id"]
        job_dir = Path(job["dir"])
        self.current = job_id
        for stale in ("result.json", "error.txt"):
            (job_dir / stale).unlink(missing_ok=True)
        spec_path = job_dir / "job.json"
        atomic.write_text(spec_path, json.dumps(self.spec(job), indent=1))
        self.d.store.update(job_id, optimise_attempts=job["optimise_attempts"] + 1,
                            stage="optimise" if job["kind"] == "image" else "vectorise")
        log.info("job %d: optimising (%s)", job_id, job["pipeline"] or "svg")
        proc = self._worker()
        assert proc.stdin is not None
        try:
            proc.stdin.write(f"{job_dir}\n".encode())
            proc.stdin.flush()
        except OSError:  # the worker died while idle: the job runs in a fresh one
            self._stop_worker()
            proc = self._worker()
            proc.stdin.write(f"{job_dir}\n".encode())  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        started = time.monotonic()
        timeout = self.d.cfg.optimiser.timeout_s
        stall = self.d.cfg.optimiser.stall_s
        next_stall_check = started + min(5.0, stall or 5.0)
        outcome = None
        rc: int | None = None
        while rc is None:
            now = time.monotonic()
            if self.d.stopping.is_set():
                outcome = "stopping"
            elif job_id in self._cancel:
                outcome = "cancelled"
            elif timeout and now - started > timeout:
                outcome = "timeout"
            elif stall and now >= next_stall_check:
                # the worker stamps the job's row with every progress report
                next_stall_check = now + min(5.0, stall)
                row = self.d.store.get(job_id)
                if row is not None and time.time() - row["updated"] > stall:
                    outcome = "stalled"
            if outcome:
                self._stop_worker()
                break
            rc = self._answer(0.25)
        if job_id in self._cancel:  # asked while the worker was answering: still a cancel
            outcome = outcome or "cancelled"
        self._cancel.discard(job_id)
        if outcome == "stopping":
            log.info("job %d: optimisation stopped by shutdown; resumes on restart", job_id)
            return  # stays 'optimising'; start-up recovery requeues it
        if outcome == "cancelled":
            self.d.finish(job_id, "cancelled", "cancelled while optimising", expect=["optimising"])
            return
        if outcome == "timeout":
            self.d.finish(job_id, "failed", f"optimisation took longer than {timeout:g}s",
                          expect=["optimising"])
            return
        if outcome == "stalled":
            self.d.finish(job_id, "failed",
                          f"optimiser made no progress for {stall:g}s (hung?); stopped it",
                          expect=["optimising"])
            return
        if rc == 0 and (job_dir / "result.json").exists():
            result = json.loads((job_dir / "result.json").read_text())
            artefacts = {"input": job["input"], **result.get("artefacts", {})}
            self.d.store.transition(
                job_id, "vectorised", expect=["optimising"], artefacts=artefacts,
                stats=result.get("stats", {}), stage="optimise", progress=1.0,
                resume_stroke=None, last_acked_stroke=None, last_completed_stroke=None,
            )
            log.info("job %d: G-code ready", job_id)
            self.d.plotter.wake.set()
            return
        msg = self._failure(job_dir, rc)
        if job["input"]:  # name the file the user dropped, not the job's copy of it
            msg = msg.replace(str(job_dir / job["input"]), job["name"])
        self.d.finish(job_id, "failed", msg, expect=["optimising"])

    # -- the long-lived worker process ---------------------------------------------------
    def _worker(self) -> subprocess.Popen:
        """The running ``optimise_worker --serve`` process, started if needed."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(self.d.cfg.optimiser.threads)
        with open(self.d.cfg.state_dir / "optimiser.log", "ab") as logf:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "plotterd.service.optimise_worker", "--serve"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf, env=env,
                preexec_fn=_set_pdeathsig, cwd=str(self.d.cfg.state_dir),
            )
        self._buf = b""
        return self._proc

    def _stop_worker(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)  # a stopped (hung, SIGSTOPped) worker must see it
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _answer(self, wait: float) -> int | None:
        """The job's exit status once the worker answers (or dies: then its own exit
        status, negative for a signal); None while it works."""
        proc = self._proc
        if proc is None:
            return 1
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], wait)
        if ready:
            data = os.read(proc.stdout.fileno(), 4096)
            if not data:  # EOF: the worker died with the job in hand
                rc = proc.wait()
                self._proc = None
                return rc if rc != 0 else 1
            self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "rc" in msg:
                return int(msg["rc"])
        return None

    @staticmethod
    def _failure(job_dir: Path, rc: int) -> str:
        err = job_dir / "error.txt"
        if rc == 2 and err.exists():
            return err.read_text().strip() or "optimisation failed"
        if rc < 0:
            name = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
            hint = " (out of memory?)" if -rc == signal.SIGKILL else ""
            return f"optimiser process killed by {name}{hint}"
        tail = ""
        try:
            lines = (job_dir / "worker.log").read_text(errors="replace").strip().splitlines()
            tail = lines[-1] if lines else ""
        except OSError:
            pass
        return f"optimiser process failed (exit {rc}): {tail}".rstrip(": ")


class PlotterWorker(threading.Thread):
    """Streams ready jobs to the one plotter, one at a time, with pause/resume/cancel."""

    def __init__(self, daemon: Daemon):
        super().__init__(name="plotter", daemon=True)
        self.d = daemon
        self.wake = threading.Event()
        self.current: int | None = None
        self.control: Any = None
        self.paused = False
        self.state = "idle"
        self.last_error: str | None = None
        self._lock = threading.Lock()

    # -- control from the API ------------------------------------------------------------
    def pause(self) -> None:
        with self._lock:
            self.paused = True
            if self.control is not None:
                self.control.pause()
        log.info("plotter paused")

    def resume(self) -> None:
        with self._lock:
            self.paused = False
            if self.control is not None:
                self.control.resume()
        self.wake.set()
        log.info("plotter resumed")

    def cancel(self) -> int | None:
        with self._lock:
            if self.control is None or self.current is None:
                return None
            self.control.cancel()
            return self.current

    def status(self) -> dict[str, Any]:
        cfg = self.d.cfg
        return {
            "port": cfg.plotter.port or f"simulator ({cfg.plotter.sim_speed})",
            "dry_run": cfg.dry_run, "profile": cfg.plotter.profile,
            "state": "paused" if self.paused else self.state,
            "current_job": self.current, "last_error": self.last_error,
            "stream": getattr(self.control, "state", None),  # the streamer's own state
        }

    # -- loop ------------------------------------------------------------------------------
    def run(self) -> None:
        try:  # import the machine stage now (it is slow to import) rather than at the first job
            stages.new_control()
        except Exception:
            log.exception("the machine stage cannot be imported")
        while not self.d.stopping.is_set():
            job = None
            if not self.paused:
                try:
                    job = self.d.store.claim_next("vectorised", "plotting")
                except Exception:
                    log.exception("plotter: cannot read the job store")
            if job is None:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            try:
                self.process(job)
            except Exception as e:
                log.exception("job %d: plotter worker error", job["id"])
                self.d.finish(job["id"], "failed", f"internal error while plotting: {e}",
                              expect=["plotting"])
            finally:
                with self._lock:
                    self.current, self.control = None, None
                self.state = "idle"

    def process(self, job: dict) -> None:
        job_id = job["id"]
        job_dir = Path(job["dir"])
        cfg = self.d.cfg
        gcode = job_dir / (job["artefacts"].get("gcode") or "plot.gcode")
        start = job["resume_stroke"]
        render = job_dir / "render.png" if cfg.dry_run else None
        record = job_dir / "plot.record"
        if start is None:
            record.unlink(missing_ok=True)  # a fresh plot starts a fresh drawing
        control = stages.new_control()
        with self._lock:
            self.current, self.control = job_id, control
            if self.paused:
                control.pause()
        self.state = "plotting"
        self.d.store.update(job_id, plot_attempts=job["plot_attempts"] + 1, stage="plot",
                            progress=0.0)
        log.info("job %d: plotting%s", job_id, f" from stroke {start}" if start else "")
        last = [0.0]
        ckpt: dict[str, Any] = {}

        def report(p: Progress) -> None:
            info = p.info or {}
            stroke = info.get("stroke")
            if isinstance(stroke, int):
                ckpt["last_acked_stroke"] = stroke
            done_stroke = info.get("completed_stroke")
            if isinstance(done_stroke, int):
                ckpt["last_completed_stroke"] = done_stroke
            now = time.monotonic()
            if now - last[0] < 0.5 and p.done < p.total:
                return
            last[0] = now
            data = stages.jsonable({k: v for k, v in info.items()
                                    if isinstance(v, (int, float, str))})
            data.update(done=p.done, total=p.total, eta_s=p.eta_s)
            self.d.store.progress(job_id, "plot", p.fraction, data, **ckpt)

        if cfg.dry_run:
            port = None
        else:
            port = cfg.plotter.port
        try:
            result = stages.plot(gcode, port, sim_speed=cfg.plotter.sim_speed,
                                 record=record, baudrate=cfg.plotter.baudrate,
                                 start_stroke=start, progress=report, control=control,
                                 render_to=render)
        except (PlotterdError, OSError) as e:
            # stream() raises only for a program it cannot send (an unreadable G-code file, a
            # line too long for the firmware): a resume would fail the same way
            self.last_error = str(e)
            self._end(job, "failed", f"plotter: {e}", ckpt)
            return
        status = getattr(result, "status", "failed")
        if status == "failed" and not getattr(result, "connected", True):
            # the plotter could not be reached (off, unplugged) and nothing was sent: the
            # paper may hold part of the drawing, so keep the job resumable
            status = "interrupted"
        for key in ("last_acked_stroke", "last_completed_stroke"):
            val = getattr(result, key, None)
            if val is not None:
                ckpt[key] = val
        artefacts = dict(job["artefacts"])
        if render is not None and render.exists():
            artefacts["render"] = render.name
        if record.exists():
            artefacts["record"] = record.name
        ckpt["artefacts"] = artefacts
        ckpt["stats"] = {**job["stats"], "plot": stages.jsonable({
            k: getattr(result, k) for k in ("lines_acked", "lines_executed", "elapsed_s")
            if hasattr(result, k)})}
        if status == "cancelled" and self.d.stopping.is_set():
            status = "interrupted"  # a shutdown, not a user's cancel: resumable
        if status == "interrupted" and getattr(result, "resume_stroke", None) is not None:
            ckpt["resume_stroke"] = result.resume_stroke
        if status == "interrupted" and getattr(result, "resume_stroke", 1) is None \
                and ckpt.get("last_completed_stroke") is not None:
            status = "done"  # every stroke was drawn; only the closing moves were lost
        error = getattr(result, "error", None)
        if status != "done":
            self.last_error = error or status
        self._end(job, status, error, ckpt)

    def _end(self, job: dict, status: str, error: str | None, fields: dict[str, Any]) -> None:
        job_id = job["id"]
        if status == "interrupted":
            if fields.get("resume_stroke") is None:
                done = fields.get("last_completed_stroke", job["last_completed_stroke"])
                fields["resume_stroke"] = 0 if done is None else done + 1
            self.d.store.transition(job_id, "interrupted", expect=["plotting"],
                                    message=error or "plot interrupted", error=error, **fields)
            log.warning("job %d: plot interrupted (resume from stroke %d)", job_id,
                        fields["resume_stroke"])
            return
        if status not in ("done", "cancelled", "failed"):
            status, error = "failed", error or f"plot ended with status {status!r}"
        self.d.finish(job_id, status, error, expect=["plotting"], **fields)
