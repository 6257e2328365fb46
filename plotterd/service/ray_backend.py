"""``optimiser.backend: ray``: a job's optimise stage as a Ray task, where the GPU is.

What runs where. The daemon host keeps the job store, the job folder, the vector and G-code
stages and the plotters. This module runs in the daemon's optimiser subprocess
(:mod:`plotterd.service.optimise_worker`), which is the Ray *driver*: it sends the task the
job's spec, the picture's bytes and the last checkpoint's bytes. The task (on any Ray
worker, asking for ``ray.num_gpus`` / ``ray.num_cpus``) runs the same
:func:`plotterd.service.stages.optimise_image` as a local job, and streams back, through
Ray's object store, every progress report, every new checkpoint, and at the end the draw
artefacts (strokes.json, drawing.svg, preview.png, the loss curve).

A worker that dies mid-job (killed, out of memory, its node gone) ends the stream with a
Ray error; the job is sent again with the last checkpoint that came back, up to
``ray.max_attempts`` times. Ray's own task retries are off (``max_retries=0``): they would
start again from iteration 0. The optimiser's checkpoints hold the parameters, Adam's state
and the generator state, so on CPU a resumed job ends bit-identical to an uninterrupted one.

Perceptual weights do not travel: they are large, and a GPU worker keeps its own copy. They
are looked up on the worker as on this host (``PLOTTERD_WEIGHTS_DIR``, then torch's hub
folder; the daemon's ``weights_dir`` when the worker sees that path too); a missing file
fails the job with the same message a local run gives, naming the file and where to get it.

Ray is an optional extra (``pip install 'plotterd[ray]'``); nothing imports it unless a job
is sent here.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from plotterd import __version__, atomic
from plotterd.errors import PlotterdError
from plotterd.progress import Cancelled, Progress

log = logging.getLogger("plotterd.ray")

CHECKPOINT = "checkpoint.pt"
# how often a job waiting for a worker (a busy or missing GPU) says so in its record, so
# the daemon's stall check sees a live job, and the user sees why it waits
WAITING_REPORT_S = 5.0
PROGRESS_EVERY_S = 0.25

_task: Any = None  # the remote function, made once ray is imported


class RemoteError(PlotterdError):
    """The job failed on the worker for a reason a retry would not cure."""


class ClusterUnavailable(PlotterdError):
    """The Ray cluster cannot be reached (not up yet, or its head went away mid-job): the
    job waits for it, as a job waits for an unplugged plotter, and resumes from its
    checkpoint once the cluster answers again."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise PlotterdError("optimiser.backend is ray, but ray is not installed here: "
                            "pip install 'plotterd[ray]'") from e
    return ray


def connect(ray_cfg: dict[str, Any]) -> Any:
    """The ray module, connected to ``ray.address`` (once per process)."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    address = ray_cfg.get("address") or "auto"
    started = time.monotonic()
    _check_reachable(address, float(ray_cfg.get("connect_timeout_s", 30)))
    try:
        ray.init(address=address, namespace=ray_cfg.get("namespace", "plotterd"),
                 log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=False, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ClusterUnavailable(f"cannot reach the Ray cluster at ray.address {address!r}: "
                                 f"{_first_line(e)}") from e
    log.info("connected to Ray at %s in %.1fs", address, time.monotonic() - started)
    return ray


def _check_reachable(address: str, timeout_s: float) -> None:
    """Refuse an address nothing listens on, within ``timeout_s``: ray.init itself retries
    for minutes before it gives up, and the job would look hung."""
    import socket

    if address in ("auto", "local"):
        return  # RAY_ADDRESS or the head started on this host; ray.init fails fast on these
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise PlotterdError(f"ray.address must be auto, HOST:PORT or ray://HOST:PORT, "
                            f"got {address!r}")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout_s)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise ClusterUnavailable(
                    f"cannot reach the Ray cluster at ray.address {address!r}: "
                    f"{e.strerror or e} (is `ray start --head` running there?)") from e
            time.sleep(1.0)


def _remote(ray: Any) -> Any:
    global _task
    if _task is None:
        _task = ray.remote(max_retries=0)(optimise_task)
    return _task


# --------------------------------------------------------------------------- the worker side
def optimise_task(payload: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """The Ray task (a streaming generator): ``(kind, data)`` messages, ending with
    ``done`` (the artefacts' bytes) or ``error`` (a PlotterdError's message)."""
    if payload.get("version") != __version__:
        yield ("error", f"the Ray worker runs plotterd {__version__}, the daemon "
                        f"{payload.get('version')}: install the same version on both")
        return
    work = Path(tempfile.mkdtemp(prefix="plotterd-ray-"))
    try:
        yield ("started", {"pid": os.getpid(), "host": os.uname().nodename,
                           "attempt": payload["attempt"]})
        yield from _run_in_thread(payload, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_in_thread(payload: dict[str, Any], work: Path) -> Iterator[tuple[str, Any]]:
    """Optimise in a thread; the generator passes its messages on as they come (a Ray
    generator can only yield from its own frame, and optimise reports by callback)."""
    messages: queue.Queue[tuple[str, Any]] = queue.Queue()
    spec = dict(payload["spec"])
    (work / spec["input"]).write_bytes(payload["input"])
    if payload.get("checkpoint") is not None:
        (work / CHECKPOINT).write_bytes(payload["checkpoint"])
    weights = spec.get("weights_dir")
    # Ray reuses worker processes: the daemon's folder holds for this job only
    saved = os.environ.get("PLOTTERD_WEIGHTS_DIR")
    if weights and Path(weights).is_dir():
        os.environ["PLOTTERD_WEIGHTS_DIR"] = weights
    try:
        worker = threading.Thread(target=_optimise_here, args=(spec, work, messages.put),
                                  name="plotterd-optimise", daemon=True)
        worker.start()
        while True:
            kind, data = messages.get()
            yield (kind, data)
            if kind in ("done", "error", "crash"):
                break
        worker.join()
    finally:
        if saved is None:
            os.environ.pop("PLOTTERD_WEIGHTS_DIR", None)
        else:
            os.environ["PLOTTERD_WEIGHTS_DIR"] = saved


def _optimise_here(spec: dict[str, Any], work: Path, send: Callable[[tuple], None]) -> None:
    import torch

    from plotterd.service import stages

    torch.set_num_threads(int(spec.get("threads", 1)))
    ckpt = work / CHECKPOINT
    last_seen = [_stamp(ckpt)]
    last_sent = [0.0]

    def report(p: Progress) -> None:
        # optimise calls back right after it has (atomically) written a checkpoint
        stamp = _stamp(ckpt)
        new_checkpoint = stamp is not None and stamp != last_seen[0]
        now = time.monotonic()
        # every message is an object in Ray's store: a few a second, not one per iteration
        if new_checkpoint or p.done >= p.total or now - last_sent[0] >= PROGRESS_EVERY_S:
            last_sent[0] = now
            send(("progress", {"stage": p.stage, "done": p.done, "total": p.total,
                               "elapsed_s": p.elapsed_s, "eta_s": p.eta_s,
                               "info": stages.jsonable(p.info or {})}))
        if new_checkpoint:
            last_seen[0] = stamp
            send(("checkpoint", ckpt.read_bytes()))

    try:
        _strokes, paths = stages.optimise_image(spec, work, report)
        send(("done", {key: (path.name, path.read_bytes()) for key, path in paths.items()}))
    except PlotterdError as e:
        send(("error", str(e)))
    except MemoryError:
        send(("error", "out of memory while optimising (on the Ray worker)"))
    except Exception:
        send(("crash", traceback.format_exc()))


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


# --------------------------------------------------------------------------- the driver side
def optimise_image(spec: dict[str, Any], job_dir: Path,
                   progress: Callable[[Progress], None]) -> tuple[Any, dict[str, Path]]:
    """As :func:`plotterd.service.stages.optimise_image`, on a Ray worker: the strokes and
    the artefacts' paths in ``job_dir``, with every checkpoint kept in ``job_dir`` as it
    comes back (so a daemon restart resumes from it too)."""
    from plotterd.draw.strokes import Strokes

    ray_cfg = spec.get("ray") or {}
    ray = connect(ray_cfg)
    max_attempts = int(ray_cfg.get("max_attempts", 3))
    input_bytes = (job_dir / spec["input"]).read_bytes()
    for attempt in range(1, max_attempts + 1):
        ckpt = job_dir / CHECKPOINT
        payload = {"version": __version__, "attempt": attempt, "spec": spec,
                   "input": input_bytes,
                   "checkpoint": ckpt.read_bytes() if ckpt.exists() else None}
        task = _remote(ray).options(
            num_cpus=float(ray_cfg.get("num_cpus", 1)), num_gpus=float(ray_cfg.get("num_gpus", 0)),
            name=f"plotterd-job-{spec.get('job_id')}",
        )
        stream = task.remote(payload)
        try:
            files = _follow(ray, stream, job_dir, progress, attempt, ray_cfg)
        except _WorkerLost as e:
            _unless_cluster_gone(ray, ray_cfg, e)
            if attempt == max_attempts:
                raise PlotterdError(f"the Ray worker was lost {attempt} times; last: {e}") from e
            log.warning("job %s: Ray worker lost (%s); attempt %d of %d resumes from the "
                        "last checkpoint", spec.get("job_id"), e, attempt + 1, max_attempts)
            continue
        paths = _save_files(job_dir, files)
        return Strokes.load(paths["strokes"]), paths
    raise AssertionError("unreachable")


class _WorkerLost(Exception):
    pass


def _unless_cluster_gone(ray: Any, ray_cfg: dict[str, Any], lost: Any) -> None:
    """A lost worker is retried; a lost *cluster* (its head no longer answers) is waited
    for: the driver lets go of it (Ray would otherwise end this process a minute later),
    and the job goes back to the queue with its checkpoint."""
    address = ray_cfg.get("address") or "auto"
    try:
        _check_reachable(address, 2.0)
        return
    except ClusterUnavailable:
        pass
    try:
        ray.shutdown()
    except Exception:  # a driver whose cluster is gone may fail to say goodbye
        log.debug("ray.shutdown after the cluster went away", exc_info=True)
    raise ClusterUnavailable(f"the Ray cluster at ray.address {address!r} went away mid-job "
                             f"({str(lost)[:200]}); the job waits for it and resumes from its "
                             "checkpoint")


def _follow(ray: Any, stream: Any, job_dir: Path, progress: Callable[[Progress], None],
            attempt: int, ray_cfg: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    """Consume one attempt's messages; the artefacts' files at the end."""
    waiting_since = time.monotonic()
    last_waiting = 0.0
    started = False
    try:
        while True:
            ready, _ = ray.wait([stream], timeout=1.0)
            if not ready:
                if not started and time.monotonic() - last_waiting >= WAITING_REPORT_S:
                    last_waiting = time.monotonic()
                    _unless_cluster_gone(ray, ray_cfg, "waiting for a worker")
                    progress(Progress("optimise", 0, 1, time.monotonic() - waiting_since,
                                      info={"waiting": "for a Ray worker", "attempt": attempt}))
                continue
            try:
                kind, data = ray.get(next(stream))
            except StopIteration:
                raise _WorkerLost("the task ended without a result") from None
            started = True
            if kind == "done":
                return data
            _handle(kind, data, job_dir, progress)
    except Cancelled:
        ray.cancel(stream, force=True)
        raise
    except _ray_lost_errors(ray) as e:
        raise _WorkerLost(f"{type(e).__name__}: {_first_line(e)}") from e
    except ray.exceptions.RayTaskError as e:  # a bug in the task's own frame: not retried
        raise PlotterdError(f"the optimise task failed on the Ray worker: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _handle(kind: str, data: Any, job_dir: Path, progress: Callable[[Progress], None]) -> None:
    if kind == "progress":
        progress(Progress(data["stage"], data["done"], data["total"], data["elapsed_s"],
                          data["eta_s"], data["info"]))
    elif kind == "checkpoint":
        atomic.write_bytes(job_dir / CHECKPOINT, data)
    elif kind == "started":
        atomic.write_text(job_dir / "ray-worker.json", json.dumps(data))
        log.info("job in %s: attempt %d on %s (pid %d)", job_dir.name, data["attempt"],
                 data["host"], data["pid"])
    elif kind == "error":
        raise RemoteError(data)
    elif kind == "crash":
        raise PlotterdError("the optimiser crashed on the Ray worker: "
                            + data.strip().splitlines()[-1])


def _ray_lost_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """The errors that mean the worker (or its node, or the result) was lost, so the job
    may be sent again; an error *in* the job is a RemoteError instead."""
    ex = ray.exceptions
    names = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
             "LocalRayletDiedError", "RaySystemError", "TaskUnschedulableError",
             "ActorDiedError")
    return tuple(getattr(ex, n) for n in names if hasattr(ex, n))


def _save_files(job_dir: Path, files: dict[str, tuple[str, bytes]]) -> dict[str, Path]:
    paths = {}
    for key, (name, data) in files.items():
        path = job_dir / Path(name).name  # a name, never a path from elsewhere
        atomic.write_bytes(path, data)
        paths[key] = path
    return paths
