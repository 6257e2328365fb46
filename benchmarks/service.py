"""Daemon benchmark: the real daemon process in dry-run, N pictures dropped at once.

Measures, from the job store's event times: intake latency (file dropped -> job queued),
optimiser-process time per job (optimising -> vectorised, torch import included), plot time
(plotting -> done) and the wall time for all jobs; the overlap of optimisation and plotting
(how much of the plotting ran while another job was optimising); the daemon's and the
optimiser's peak RSS; and the time to recover after a kill -9 (restart -> API answering).

    .venv/bin/python benchmarks/service.py [--jobs 3] [--pipeline tiny] [--sim-speed instant]

The last line printed is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ["camera_small.png", "text_small.png", "horse_small.png", "coffee_small.png",
          "astronaut_small.png"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def start(config: Path, log: Path, url: str) -> tuple[subprocess.Popen, float]:
    t0 = time.monotonic()
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "plotterd.service", "--config",
                                 str(config)], stdout=f, stderr=f)
    while True:
        try:
            if httpx.get(url + "/health", timeout=1, trust_env=False).status_code == 200:
                return proc, time.monotonic() - t0
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--pipeline", default="tiny")
    ap.add_argument("--sim-speed", default="scaled:40")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="plotterd-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp / "plotterd.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(tmp / "state"), "pipeline": args.pipeline,
        "plotter": {"sim_speed": args.sim_speed}, "optimiser": {"threads": 2},
        "intake": {"stable_s": 0.2, "scan_interval_s": 0.2}, "api": {"port": port}}))
    proc, startup_s = start(config, tmp / "daemon.log", url)
    inbox = tmp / "state" / "inbox"
    dropped: dict[str, float] = {}
    t_drop = time.time()
    for i in range(args.jobs):
        src = ROOT / "tests" / "data" / IMAGES[i % len(IMAGES)]
        name = f"{i:02d}-{src.name}"
        shutil.copy(src, inbox / (name + ".part"))
        (inbox / (name + ".part")).rename(inbox / name)
        dropped[name] = time.time()
    worker_rss = 0
    while True:
        jobs = httpx.get(url + "/jobs", params={"limit": 1000}, trust_env=False).json()
        # the optimiser subprocess is the daemon's child: sample its peak RSS while it runs
        # (forked by the optimiser thread, so listed under that thread's task)
        for kids in Path(f"/proc/{proc.pid}/task").glob("*/children"):
            try:
                pids = kids.read_text().split()
            except OSError:
                continue
            for pid in pids:
                worker_rss = max(worker_rss, rss_kb(int(pid)))
        if len(jobs) == args.jobs and all(j["state"] in ("done", "failed") for j in jobs):
            break
        time.sleep(0.1)
    wall = time.time() - t_drop
    daemon_rss = rss_kb(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc2, recover_s = start(config, tmp / "daemon.log", url)
    proc2.send_signal(signal.SIGTERM)
    proc2.wait(30)

    db = sqlite3.connect(tmp / "state" / "jobs.db")
    ev: dict[int, dict[str, float]] = {}
    for job, at, state in db.execute("SELECT job, at, state FROM events ORDER BY id"):
        ev.setdefault(job, {}).setdefault(state, at)
    names = dict(db.execute("SELECT id, name FROM jobs"))
    states = dict(db.execute("SELECT id, state FROM jobs"))
    intake = [ev[j]["queued"] - dropped[names[j]] for j in ev]
    optimise = [ev[j]["vectorised"] - ev[j]["optimising"] for j in ev if "vectorised" in ev[j]]
    plot = [ev[j]["done"] - ev[j]["plotting"] for j in ev if "done" in ev[j]]
    # plotting time of job j that overlapped the optimisation of another job
    overlap = 0.0
    for j in ev:
        if "done" not in ev[j]:
            continue
        p0, p1 = ev[j]["plotting"], ev[j]["done"]
        for k in ev:
            if k != j and "vectorised" in ev[k]:
                o0, o1 = ev[k]["optimising"], ev[k]["vectorised"]
                overlap += max(0.0, min(p1, o1) - max(p0, o0))
    figures = {
        "jobs": args.jobs, "pipeline": args.pipeline, "sim_speed": args.sim_speed,
        "done": sum(s == "done" for s in states.values()),
        "startup_s": round(startup_s, 2), "wall_s": round(wall, 2),
        "intake_s_median": round(statistics.median(intake), 3),
        "optimise_process_s_median": round(statistics.median(optimise), 2) if optimise else None,
        "plot_s_median": round(statistics.median(plot), 2) if plot else None,
        "plot_overlapping_optimisation_s": round(overlap, 2),
        "daemon_peak_rss_mb": round(daemon_rss / 1024, 1),
        "optimiser_peak_rss_mb": round(worker_rss / 1024, 1),
        "restart_after_kill9_s": round(recover_s, 2),
    }
    for k, v in figures.items():
        print(f"{k:>34}: {v}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
