"""``python -m plotterd.service.optimise_worker JOBDIR`` (or ``--serve``): the heavy work of
a job, in a process of its own, so a crash or an out-of-memory kill fails that job and not
the daemon. The daemon keeps one ``--serve`` worker and sends it job folders.

It reads ``JOBDIR/job.json`` (written by the daemon), optimises the image into strokes
(resuming from ``JOBDIR/checkpoint.pt`` when present), writes the draw artefacts, lays
the strokes (or the dropped SVG) out on the page and writes ``plot.gcode``. Progress goes
straight to the job database. It ends by writing ``JOBDIR/result.json`` and exiting 0; a
PlotterdError is written to ``JOBDIR/error.txt`` with exit status 2; anything else is a
traceback on stderr (the daemon sends it to ``JOBDIR/worker.log``) and status 1.

It dies with the daemon (PR_SET_PDEATHSIG, and a parent check on every progress report),
so a restarted daemon never finds two workers on one job; a lock file makes sure of it.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from plotterd import atomic
from plotterd.errors import PlotterdError
from plotterd.progress import Cancelled, Progress
from plotterd.service.ray_backend import ClusterUnavailable  # ray itself only when used
from plotterd.service.retention import disk_full_message, out_of_disk


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass




def run(job_dir: Path, parent_pid: int | None = None) -> int:
    from plotterd.service import stages
    from plotterd.service.store import JobStore

    spec = json.loads((job_dir / "job.json").read_text())
    job_id = int(spec["job_id"])
    threads = int(spec.get("threads", 1))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if spec.get("weights_dir"):
        os.environ["PLOTTERD_WEIGHTS_DIR"] = str(spec["weights_dir"])
    store = JobStore(spec["db"])
    last = [0.0]

    def report(p: Progress) -> None:
        if parent_pid is not None and os.getppid() != parent_pid:
            raise Cancelled("the daemon went away")
        now = time.monotonic()
        if now - last[0] < 0.5 and p.done < p.total:
            return
        last[0] = now
        info = {k: v for k, v in (p.info or {}).items() if isinstance(v, (int, float, str))}
        info.update(done=p.done, total=p.total, eta_s=p.eta_s)
        store.progress(job_id, p.stage, p.fraction, stages.jsonable(info))

    artefacts: dict[str, str] = {}
    if spec["kind"] == "image":
        import torch

        torch.set_num_threads(threads)
        if spec.get("backend") == "ray":
            from plotterd.service import ray_backend

            strokes, paths = ray_backend.optimise_image(spec, job_dir, report)
        else:
            strokes, paths = stages.optimise_image(spec, job_dir, report)
        artefacts.update({k: str(Path(v).relative_to(job_dir)) if Path(v).is_relative_to(job_dir)
                          else str(v) for k, v in paths.items()})
        source = strokes
    else:
        source = str(job_dir / spec["input"])
    store.progress(job_id, "vectorise", 0.0, {})
    paths, stats = stages.make_gcodes(source, spec, job_dir)  # one per plotter it may go to
    rename = {"svg": "page", "stats": "gcode_stats"}  # draw's svg is the drawing
    for k, v in paths.items():
        k = rename.get(k, k)
        v = Path(v)
        artefacts[k] = str(v.relative_to(job_dir)) if v.is_relative_to(job_dir) else str(v)
    atomic.write_text(job_dir / "result.json", stages.dumps({"artefacts": artefacts,
                                                         "stats": stats}))
    store.close()
    return 0


WAIT_FOR_CLUSTER = 5
DISK_FULL = 6


def run_one(job_dir: Path, parent: int | None) -> int:
    """One job with its exit status: 0 done, 2 PlotterdError (in error.txt), 1 a crash
    (traceback on stderr), 3 another worker holds the job, 4 the daemon went away, 5 the
    Ray cluster cannot be reached (in error.txt; the job waits for it), 6 the disk is full."""
    with open(job_dir / "worker.lock", "w") as lock:
        deadline = time.monotonic() + 30
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    print("another worker holds this job", file=sys.stderr)
                    return 3
                time.sleep(0.2)
        try:
            return run(job_dir, parent_pid=parent)
        except ClusterUnavailable as e:
            atomic.write_text(job_dir / "error.txt", str(e))
            return WAIT_FOR_CLUSTER
        except PlotterdError as e:
            atomic.write_text(job_dir / "error.txt", str(e))
            return 2
        except Cancelled as e:
            print(f"cancelled: {e}", file=sys.stderr)
            return 4
        except MemoryError:
            atomic.write_text(job_dir / "error.txt", "out of memory while optimising")
            return 2
        except Exception as e:
            if out_of_disk(e, job_dir):
                return _disk_full(job_dir)
            try:
                traceback.print_exc()
                sys.stderr.flush()
            except OSError:  # the log's own disk: the job still gets its exit status
                pass
            return 1


def _disk_full(job_dir: Path) -> int:
    """The job's error where it still fits (error.txt may not: the daemon then says it)."""
    message = disk_full_message(job_dir)
    try:
        print(message, file=sys.stderr, flush=True)
        atomic.write_text(job_dir / "error.txt", message)
    except OSError:
        pass
    return DISK_FULL


def serve() -> int:
    """``--serve``: a long-lived worker taking job folders, one per line on stdin, and
    answering one JSON line per job (``{"rc": N}``) on stdout. It saves the daemon from
    importing torch for every job; a crash still only costs the job in hand (the daemon
    starts a new worker). Each job's output goes to its own ``worker.log``."""
    parent = os.getppid()
    die_with_parent()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    import plotterd.draw  # noqa: F401 - the slow imports, done once while idle
    import plotterd.gcode  # noqa: F401

    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        job_dir = Path(line.strip())
        if not line.strip():
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(2)
        fd = os.open(job_dir / "worker.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        try:
            rc = run_one(job_dir, parent)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved, 1)
            os.dup2(saved, 2)
            os.close(saved)
        proto.write(json.dumps({"rc": rc, "job_dir": str(job_dir)}) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--serve"]:
        return serve()
    if len(argv) != 1:
        print("usage: python -m plotterd.service.optimise_worker JOBDIR | --serve",
              file=sys.stderr)
        return 64
    parent = os.getppid()
    die_with_parent()
    return run_one(Path(argv[0]).absolute(), parent)


if __name__ == "__main__":
    sys.exit(main())
