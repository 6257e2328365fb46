"""The two workers: the optimiser (one subprocess per job, here) and the plotter (one port,
:mod:`plotterd.service.plotter_worker`).

They overlap: while the plotter draws job N, the optimiser works on job N+1. Both take
their next job from the store with an atomic compare-and-set, so the state in the
database is always the truth a restart starts from.
"""

from __future__ import annotations

import dataclasses
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
from plotterd.service.optimise_worker import DISK_FULL, WAIT_FOR_CLUSTER
from plotterd.service.plotter_worker import PlotterWorker
from plotterd.service.retention import disk_full_message, disk_low, out_of_disk

__all__ = ["OptimiserSlot", "OptimiserWorker", "PlotterWorker"]

if TYPE_CHECKING:
    from plotterd.service.daemon import Daemon

log = logging.getLogger("plotterd.workers")

CLUSTER_RETRY_S = 10.0  # how long the slots pause when the Ray cluster cannot be reached


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    from plotterd.service.optimise_worker import die_with_parent

    die_with_parent()


class OptimiserWorker(threading.Thread):
    """The optimise stage: one slot, or with ``optimiser.backend: ray``,
    ``ray.jobs_in_flight`` slots, each driving its own job on the cluster. A slot takes the
    next queued job from the store with a compare-and-set, so two never take one job."""

    def __init__(self, daemon: Daemon):
        super().__init__(name="optimiser", daemon=True)
        self.d = daemon
        self.wake = threading.Event()
        cfg = daemon.cfg
        count = cfg.ray.jobs_in_flight if cfg.optimiser.backend == "ray" else 1
        self.pause_until = [0.0]  # shared: an absent cluster holds every slot
        self.slots = [OptimiserSlot(daemon, self.wake, self.pause_until) for _ in range(count)]

    @property
    def current(self) -> int | None:
        """A job being optimised (the first slot's, when several run)."""
        running = self.running
        return running[0] if running else None

    @property
    def running(self) -> list[int]:
        return [s.current for s in self.slots if s.current is not None]

    def cancel(self, job_id: int) -> bool:
        return any(slot.cancel(job_id) for slot in self.slots)

    def run(self) -> None:
        extra = [threading.Thread(target=slot.run, name=f"optimiser-{k}", daemon=True)
                 for k, slot in enumerate(self.slots[1:], start=2)]
        for t in extra:
            t.start()
        self.slots[0].run()
        for t in extra:
            t.join(timeout=30)


class OptimiserSlot:
    """Runs ``python -m plotterd.service.optimise_worker JOBDIR`` for each queued job it
    takes, in a long-lived worker process of its own."""

    def __init__(self, daemon: Daemon, wake: threading.Event,
                 pause_until: list[float] | None = None):
        self.d = daemon
        self.wake = wake
        self.current: int | None = None
        # monotonic time before which no slot takes a job (one list shared by the slots)
        self.pause_until = pause_until if pause_until is not None else [0.0]
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
            if time.monotonic() < self.pause_until[0]:  # the Ray cluster is away: wait
                self.d.stopping.wait(min(1.0, self.pause_until[0] - time.monotonic()))
                continue
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
                if out_of_disk(e, job["dir"]):
                    log.error("job %d: %s", job["id"], e)
                    why = disk_full_message(job["dir"])
                else:
                    log.exception("job %d: optimiser worker error", job["id"])
                    why = f"internal error: {e}"
                self.d.finish(job["id"], "failed", why, expect=["optimising"])
            finally:
                self.current = None
        self._stop_worker()

    def spec(self, job: dict) -> dict[str, Any]:
        from plotterd.service.routing import gcode_targets

        cfg = self.d.cfg
        return {
            "job_id": job["id"], "db": str(cfg.db_path), "kind": job["kind"],
            "input": job["input"], "pipeline": job["pipeline"], "overrides": job["options"],
            "pipeline_dirs": [str(p) for p in cfg.pipeline_dirs],
            "page": {"paper": cfg.page.paper, "orientation": cfg.page.orientation,
                     "margin_mm": cfg.page.margin_mm},
            "vector": cfg.vector_for(cfg.folder_of(job.get("origin"))).to_dict(),
            "profile": cfg.plotter.profile, "device": cfg.optimiser.device,
            "threads": cfg.optimiser.threads, "checkpoint_every": cfg.optimiser.checkpoint_every,
            "iterations": cfg.optimiser.iterations, "seed": cfg.optimiser.seed,
            "weights_dir": str(cfg.weights_dir) if cfg.weights_dir else None,
            "pens_dir": str(cfg.pens_dir),  # a pipeline's `pen: {profile: NAME}` is read there
            # G-code for every plotter that may draw the job (its profile, page and pens)
            "plotters": gcode_targets(cfg, job),
            "backend": cfg.optimiser.backend, "ray": dataclasses.asdict(cfg.ray),
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
        self._settle(job, job_dir, rc)

    def _settle(self, job: dict, job_dir: Path, rc: int | None) -> None:
        """The job after its worker answered ``rc``: ready to plot, back in the queue (the
        Ray cluster is away), or failed with the reason."""
        job_id = job["id"]
        if rc == WAIT_FOR_CLUSTER:
            self._wait_for_cluster(job, job_dir)
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
            self.d.wake_plotters()
            return
        msg = self._failure(job_dir, rc if rc is not None else 1)
        if job["input"]:  # name the file the user dropped, not the job's copy of it
            msg = msg.replace(str(job_dir / job["input"]), job["name"])
        self.d.finish(job_id, "failed", msg, expect=["optimising"])

    def _wait_for_cluster(self, job: dict, job_dir: Path) -> None:
        """Back to the queue (its checkpoint kept), and no job taken for a while: the
        optimise stage waits for an absent Ray cluster as a plot waits for a plotter."""
        why = self._failure(job_dir, 2)
        self.d.store.transition(job["id"], "queued", expect=["optimising"], message=why,
                                info={"waiting": why})
        self.pause_until[0] = time.monotonic() + CLUSTER_RETRY_S
        log.warning("job %d: %s; trying again in %gs", job["id"], why, CLUSTER_RETRY_S)

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
        if rc in (2, DISK_FULL) and err.exists():
            return err.read_text().strip() or "optimisation failed"
        if rc == DISK_FULL or (rc != 0 and disk_low(job_dir)):  # a worker that died of it
            return disk_full_message(job_dir)
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
