"""A plotter farm: N simulated plotters (1, 2, 4) behind one real daemon, tiny jobs, scaled time.

For each optimiser backend (``local``: the daemon's own optimiser process; ``ray``: a Ray
cluster, here a head started on 127.0.0.1 by this script unless ``--ray-address`` names one)
and each plotter count N, it starts the real daemon (``python -m plotterd.service``) with N
simulated GRBL plotters (paper: auto, ``--sim-speed``), drops ``--jobs-per-plotter`` x N small
photos into the inbox at once, and waits until every job has ended. It prints:

- jobs per hour (wall clock, at the simulator's speed-up: plotting is scaled, optimising is not);
- each plotter's idle fraction (1 - its plotting time / the run's wall time, from the jobs'
  events in the store);
- the daemon process's CPU (its own user + system seconds over the run, as % of one core) and
  resident memory (idle before the jobs, and the peak, VmHWM), and the same for its optimiser
  processes (its children; with Ray these are the drivers, the Ray workers' own CPU is not
  counted: they are the cluster's);
- the time from drop to the first job plotting.

    .venv/bin/python benchmarks/farm.py                        # both backends, 1, 2, 4 plotters
    .venv/bin/python benchmarks/farm.py --backends local --plotters 2 --jobs-per-plotter 3

It ends with one JSON line. Linux only (it reads /proc). Run it alone: the figures mean
nothing while another benchmark shares the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from plotterd.pipeline import resolve_pipeline

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "tests" / "data").glob("*_small.png"))
TERMINAL = ("done", "failed", "cancelled")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- /proc readings
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    """Peak resident memory (VmHWM), or with ``field="VmRSS"`` the present one."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    """Direct children, whichever of the daemon's threads started them."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class Sampler:
    """The daemon's and its children's CPU seconds and peak memory, sampled while it runs
    (a child that exits takes its figures with it, so they are read every half second)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.daemon_cpu0 = cpu_seconds(pid)
        self.idle_rss = peak_rss_mb(pid, "VmRSS")
        self.child_cpu: dict[int, tuple[float, float]] = {}  # pid -> (first, last)
        self.child_rss = 0.0

    def sample(self) -> None:
        for child in children(self.pid):
            try:
                cpu, rss = cpu_seconds(child), peak_rss_mb(child)
            except OSError:
                continue
            first = self.child_cpu.get(child, (cpu, cpu))[0]
            self.child_cpu[child] = (first, cpu)
            self.child_rss = max(self.child_rss, rss)

    def figures(self, wall_s: float) -> dict[str, float]:
        daemon_cpu = cpu_seconds(self.pid) - self.daemon_cpu0
        child_cpu = sum(last - first for first, last in self.child_cpu.values())
        return {"daemon_cpu_pct": round(100 * daemon_cpu / wall_s, 1),
                "daemon_idle_rss_mb": round(self.idle_rss, 1),
                "daemon_peak_rss_mb": round(peak_rss_mb(self.pid), 1),
                "optimiser_cpu_pct": round(100 * child_cpu / wall_s, 1),
                "optimiser_peak_rss_mb": round(self.child_rss, 1)}


# --------------------------------------------------------------------------- one run
def config(root: Path, n: int, backend: str, args: argparse.Namespace, ray_address: str | None,
           port: int) -> dict:
    cfg = {
        "state_dir": str(root / "state"),
        "pipeline": "farm",
        "pipeline_dirs": [str(farm_pipeline(root, args.iterations))],
        "plotters": [{"name": f"p{k + 1}", "port": None, "sim_speed": args.sim_speed,
                      "paper": "auto"} for k in range(n)],
        "optimiser": {"threads": 1, "backend": backend, "device": "cpu"},
        "intake": {"stable_s": 0.2, "scan_interval_s": 0.2},
        "api": {"port": port},
    }
    if backend == "ray":
        cfg["ray"] = {"address": ray_address, "num_cpus": 1, "jobs_in_flight": args.in_flight}
    return cfg


def farm_pipeline(root: Path, iterations: int) -> Path:
    """A folder with `farm`: `tiny` at the run's iterations (a sidecar may only lower them)."""
    folder = root / "pipelines"
    folder.mkdir(parents=True, exist_ok=True)
    tiny = yaml.safe_load(resolve_pipeline("tiny").read_text())
    (folder / "farm.yaml").write_text(yaml.safe_dump({**tiny, "name": "farm",
                                                      "iterations": iterations}))
    return folder


def drop_jobs(inbox: Path, count: int) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        photo = PHOTOS[k % len(PHOTOS)]
        name = f"job{k:03d}.png"
        sidecar = inbox / f".{name}.yaml.tmp"
        sidecar.write_text(yaml.safe_dump({"seed": k}))
        sidecar.rename(inbox / f"{name}.yaml")
        tmp = inbox / f".{name}.tmp"
        shutil.copy(photo, tmp)
        tmp.rename(inbox / name)


def idle_fractions(http: httpx.Client, jobs: list[dict], names: list[str], t0: float,
                   t1: float) -> dict[str, float]:
    busy = dict.fromkeys(names, 0.0)
    for job in jobs:
        events = http.get(f"/jobs/{job['id']}").json()["events"]
        start = None
        for e in events:  # plotting -> done / interrupted / ...: the plotter's busy time
            if e["state"] == "plotting":
                start = e["at"]
            elif start is not None:
                busy[job["plotter"]] = busy.get(job["plotter"], 0.0) + e["at"] - start
                start = None
    return {name: round(1 - busy[name] / (t1 - t0), 3) for name in names}


def run_farm(n: int, backend: str, args: argparse.Namespace, ray_address: str | None) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"farm-{backend}-{n}-"))
    port = free_port()
    (root / "plotterd.yaml").write_text(yaml.safe_dump(config(root, n, backend, args,
                                                              ray_address, port)))
    log = open(root / "daemon.log", "ab")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "plotterd.service", "--config",
                             str(root / "plotterd.yaml")], stdout=log, stderr=log, env=env)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, trust_env=False)
    try:
        wait_health(http, proc, root)
        time.sleep(2.0)  # the optimiser process imports torch while idle: not a job's cost
        sampler = Sampler(proc.pid)
        count = n * args.jobs_per_plotter
        t0 = time.time()
        drop_jobs(root / "state" / "inbox", count)
        jobs, first_plot = wait_all(http, count, sampler, args.timeout, t0)
        t1 = time.time()
        states = [j["state"] for j in jobs]
        return {"backend": backend, "plotters": n, "jobs": count,
                "done": states.count("done"), "wall_s": round(t1 - t0, 1),
                "jobs_per_hour": round(count / (t1 - t0) * 3600),
                "first_plot_s": round(first_plot - t0, 1) if first_plot else None,
                "idle": idle_fractions(http, jobs, [f"p{k + 1}" for k in range(n)], t0, t1),
                **sampler.figures(t1 - t0)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def wait_health(http: httpx.Client, proc: subprocess.Popen, root: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited:\n{(root / 'daemon.log').read_text()[-3000:]}")
        try:
            if http.get("/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the daemon did not answer /health in 120 s")


def wait_all(http: httpx.Client, count: int, sampler: Sampler, timeout: float, t0: float
             ) -> tuple[list[dict], float | None]:
    first_plot = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sampler.sample()
        jobs = http.get("/jobs", params={"limit": 10000}).json()
        if first_plot is None and any(j["state"] in ("plotting", "done") for j in jobs):
            first_plot = time.time()
        if len(jobs) >= count and all(j["state"] in TERMINAL for j in jobs):
            return jobs, first_plot
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout:g}s; states: "
                     f"{sorted(j['state'] for j in http.get('/jobs').json())}")


# --------------------------------------------------------------------------- a local Ray head
def start_ray_head() -> tuple[str, Path]:
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        raise SystemExit("ray is not installed: pip install -e '.[ray]'")
    temp = Path(tempfile.mkdtemp(prefix="farmray-", dir="/tmp"))
    port = free_port()
    cores = os.cpu_count() or 2
    subprocess.run([str(ray), "start", "--head", "--node-ip-address=127.0.0.1",
                    f"--port={port}", f"--num-cpus={cores}", "--num-gpus=0",
                    "--include-dashboard=false", "--disable-usage-stats",
                    f"--temp-dir={temp}", "--object-store-memory=100000000"],
                   check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return f"127.0.0.1:{port}", temp


def stop_ray_head(temp: Path) -> None:
    ray = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray), "stop", "--force"], capture_output=True)
    shutil.rmtree(temp, ignore_errors=True)


def print_table(rows: list[dict]) -> None:
    print(f"{'backend':8} {'N':>2} {'jobs':>4} {'wall s':>7} {'jobs/h':>7} {'1st plot s':>10} "
          f"{'idle per plotter':28} {'daemon cpu%':>11} {'rss idle/peak MB':>16} "
          f"{'optim cpu%':>10} {'rss MB':>7}")
    for r in rows:
        idle = " ".join(f"{v:.2f}" for v in r["idle"].values())
        print(f"{r['backend']:8} {r['plotters']:>2} {r['done']:>2}/{r['jobs']:<1} "
              f"{r['wall_s']:>7} {r['jobs_per_hour']:>7} {r['first_plot_s']!s:>10} {idle:28} "
              f"{r['daemon_cpu_pct']:>11} "
              f"{r['daemon_idle_rss_mb']:>7.0f} / {r['daemon_peak_rss_mb']:<6.0f} "
              f"{r['optimiser_cpu_pct']:>10} {r['optimiser_peak_rss_mb']:>7}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plotters", default="1,2,4", help="plotter counts (default 1,2,4)")
    ap.add_argument("--backends", default="local,ray")
    ap.add_argument("--jobs-per-plotter", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=300, help="per job (pipeline tiny)")
    ap.add_argument("--sim-speed", default="scaled:10")
    ap.add_argument("--in-flight", type=int, default=2, help="ray.jobs_in_flight")
    ap.add_argument("--ray-address", help="an existing cluster (default: start a local head)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--keep", action="store_true", help="keep the runs' folders")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.plotters.split(",")]
    rows = []
    for backend in args.backends.split(","):
        address, temp = args.ray_address, None
        if backend == "ray" and address is None:
            address, temp = start_ray_head()
        try:
            for n in counts:
                rows.append(run_farm(n, backend, args, address))
                print_table(rows[-1:])
        finally:
            if temp is not None:
                stop_ray_head(temp)
    print()
    print_table(rows)
    print(json.dumps({"farm": rows, "sim_speed": args.sim_speed,
                      "jobs_per_plotter": args.jobs_per_plotter,
                      "iterations": args.iterations, "cores": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
