"""``python -m plotterd.service.optimise_worker JOBDIR``: one job's heavy work, in its own
process, so a crash or an out-of-memory kill fails that job and not the daemon.

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
from pathlib import Path

from plotterd.errors import PlotterdError
from plotterd.progress import Cancelled, Progress


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
        strokes, paths = stages.optimise_image(spec, job_dir, report)
        artefacts.update({k: str(Path(v).relative_to(job_dir)) if Path(v).is_relative_to(job_dir)
                          else str(v) for k, v in paths.items()})
        source = strokes
    else:
        source = str(job_dir / spec["input"])
    store.progress(job_id, "vectorise", 0.0, {})
    paths, stats = stages.make_gcode(source, spec, job_dir)
    rename = {"svg": "page", "stats": "gcode_stats"}  # draw's svg is the drawing
    for k, v in paths.items():
        k = rename.get(k, k)
        v = Path(v)
        artefacts[k] = str(v.relative_to(job_dir)) if v.is_relative_to(job_dir) else str(v)
    _atomic_write(job_dir / "result.json", stages.dumps({"artefacts": artefacts,
                                                         "stats": stats}))
    store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m plotterd.service.optimise_worker JOBDIR", file=sys.stderr)
        return 64
    job_dir = Path(argv[0]).absolute()
    parent = os.getppid()
    die_with_parent()
    lock = open(job_dir / "worker.lock", "w")  # noqa: SIM115 - held for the process's life
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
    except PlotterdError as e:
        _atomic_write(job_dir / "error.txt", str(e))
        return 2
    except Cancelled as e:
        print(f"cancelled: {e}", file=sys.stderr)
        return 4
    except MemoryError:
        _atomic_write(job_dir / "error.txt", "out of memory while optimising")
        return 2


if __name__ == "__main__":
    sys.exit(main())
