"""optimiser.backend: ray, on a real local Ray cluster (a head on 127.0.0.1, 2 CPUs, no GPU)
started by these tests, with the real daemon sending its jobs' optimise stage there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from plotterd.pipeline import resolve_pipeline

from .daemon_proc import DaemonProc, drop
from .helpers import DATA, free_port, wait_for

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")


@pytest.fixture(scope="module")
def ray_head():
    """``ray start --head`` on 127.0.0.1; its workers see an empty weights folder and torch
    hub (the missing-weights test), like a fresh GPU node."""
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("ray is not installed (the [ray] extra; ./dev installs it where a wheel "
                    "exists): the Ray backend tests skip")
    # short: Ray's unix sockets live under it (107 characters at most)
    temp = Path(tempfile.mkdtemp(prefix="pdray-", dir="/tmp"))
    port = free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1",
               PLOTTERD_WEIGHTS_DIR=str(temp / "no-weights"), TORCH_HOME=str(temp / "torch"))
    (temp / "no-weights").mkdir()
    cmd = [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
           "--disable-usage-stats", f"--temp-dir={temp}", "--object-store-memory=100000000"]

    def start() -> None:
        started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if started.returncode != 0:
            pytest.fail(f"ray start failed:\n{started.stdout}\n{started.stderr}")

    def stop() -> None:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)

    start()
    yield {"address": f"127.0.0.1:{port}", "temp": temp, "env": env, "start": start,
           "stop": stop}
    subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)
    shutil.rmtree(temp, ignore_errors=True)


def _daemon(tmp_path: Path, head: dict, **overrides) -> DaemonProc:
    tmp_path.mkdir(exist_ok=True)
    # a job's sidecar may only lower the pipeline's iterations: the daemon's own `tiny`
    # allows long jobs, and the sidecars below ask for as many as each test needs
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir(exist_ok=True)
    tiny = yaml.safe_load(resolve_pipeline("tiny").read_text())
    (pipelines / "tiny.yaml").write_text(yaml.safe_dump({**tiny, "iterations": 200000}))
    return DaemonProc(tmp_path, optimiser={"threads": 1, "checkpoint_every": 5,
                                           "backend": "ray", "device": "cpu"},
                      ray={"address": head["address"], "num_cpus": 1,
                           "connect_timeout_s": 10}, pipeline_dirs=[str(pipelines)],
                      **overrides).start()


def _groups(job_dir: Path) -> list:
    return json.loads((job_dir / "strokes.json").read_text())["groups"]


def _optimising(job: dict) -> tuple[float, float]:
    """When the job's optimise stage began and ended (its events)."""
    at = {e["state"]: e["at"] for e in job["events"]}
    return at["optimising"], at["vectorised"]


def test_jobs_optimise_on_the_cluster_at_once_and_plot_here(ray_head, tmp_path):
    d = _daemon(tmp_path, ray_head)  # ray.jobs_in_flight: 2 (the default)
    try:
        for name in ("camera_small.png", "horse_small.png"):
            (tmp_path / f"{name}.yaml").write_text(json.dumps({"iterations": 1500}))
            drop(tmp_path / f"{name}.yaml", d.inbox)
        for name in ("camera_small.png", "horse_small.png"):
            drop(DATA / name, d.inbox)
        status = wait_for(lambda: len((s := d.http.get("/api/status").json())
                                      ["optimising_all"]) == 2 and s, 120, 0.05,
                          "two jobs optimising")
        assert status["optimiser_backend"] == "ray"
        jobs = d.wait_states(2, timeout=180)
        assert [j["state"] for j in jobs] == ["done", "done"], [j["error"] for j in jobs]
        pids = set()
        for job in jobs:
            job_dir = Path(d.job(job["id"])["dir"])
            worker = json.loads((job_dir / "ray-worker.json").read_text())
            # the stage ran in a Ray worker process, not in the daemon's own optimiser
            assert worker["attempt"] == 1 and worker["pid"] != d.proc.pid
            pids.add(worker["pid"])
            assert {"strokes", "preview", "gcode", "render"} <= set(job["artefacts"])
        # two jobs in flight: both optimised at the same time, in two worker processes
        (a0, a1), (b0, b1) = (_optimising(d.job(j["id"])) for j in jobs)
        assert a0 < b1 and b0 < a1, "the two jobs did not optimise at the same time"
        assert len(pids) == 2
    finally:
        d.stop()


LONG_JOB = {"iterations": 3000, "resolution": {"height": 96}}  # several seconds of work


def _submit_long_job(d: DaemonProc, tmp_path: Path) -> tuple[dict, Path]:
    """Drop a photo with a sidecar asking for LONG_JOB; the job and its folder."""
    src = tmp_path / "long.png"
    shutil.copy(DATA / "camera_small.png", src)
    (tmp_path / "long.png.yaml").write_text(json.dumps(LONG_JOB))
    drop(tmp_path / "long.png.yaml", d.inbox)
    drop(src, d.inbox)
    job = wait_for(lambda: next(iter(d.jobs()), None), 30, 0.1, "the job")
    return job, Path(d.job(job["id"])["dir"])


def _uninterrupted(tmp_path: Path, overrides: dict) -> list:
    """The same job optimised here, in one go, on CPU with one thread."""
    import torch

    from plotterd.service import stages

    torch.set_num_threads(1)
    work = tmp_path / "reference"
    work.mkdir()
    shutil.copy(DATA / "camera_small.png", work / "input.png")
    spec = {"input": "input.png", "pipeline": "tiny", "overrides": overrides, "device": "cpu",
            "checkpoint_every": 5}
    stages.optimise_image(spec, work, lambda p: None)
    return _groups(work)


def test_worker_killed_mid_job_resumes_from_its_checkpoint_bit_identical(ray_head, tmp_path):
    d = _daemon(tmp_path / "d", ray_head)
    try:
        job, job_dir = _submit_long_job(d, tmp_path)
        worker_file = job_dir / "ray-worker.json"
        # the first checkpoint has come back to the job folder: kill the worker process
        wait_for(lambda: (job_dir / "checkpoint.pt").exists() and worker_file.exists(),
                 120, 0.02, "the first checkpoint")
        first = json.loads(worker_file.read_text())
        # progress reaches the job record as it does locally
        live = wait_for(lambda: (p := d.job(job["id"])["progress"])["info"].get("done") and p,
                        60, 0.02, "progress in the job record")
        assert live["stage"] == "optimise" and live["info"]["total"] == 3000
        assert 0 < live["fraction"] < 1
        os.kill(first["pid"], signal.SIGKILL)
        done = d.wait_job(job["id"], ("done", "failed"), timeout=240)
        assert done["state"] == "done", done["error"]
        second = json.loads(worker_file.read_text())
        assert second["attempt"] == 2 and second["pid"] != first["pid"]
        meta = json.loads((job_dir / "strokes.json").read_text())["metadata"]
        assert meta["resumed_from_iteration"] and meta["resumed_from_iteration"] < 3000
        assert _groups(job_dir) == _uninterrupted(tmp_path, LONG_JOB)
    finally:
        d.stop()


def test_missing_weights_fail_the_job_with_the_local_message(ray_head, tmp_path, monkeypatch):
    """Weights are looked for on the worker; a missing file fails that job with the same
    message a local run gives, naming the file and where to get it."""
    options = {"iterations": 2, "resolution": {"height": 48}}
    messages = []
    for backend in ("ray", "local"):
        root = tmp_path / backend
        root.mkdir()
        if backend == "local":  # this host as bare as the Ray worker
            for key in ("PLOTTERD_WEIGHTS_DIR", "TORCH_HOME"):
                monkeypatch.setenv(key, ray_head["env"][key])
            d = DaemonProc(root, optimiser={"threads": 1}).start()
        else:
            d = _daemon(root, ray_head)
        try:
            (root / "p.png.yaml").write_text(json.dumps({"pipeline": "lines-lpips", **options}))
            drop(root / "p.png.yaml", d.inbox)
            drop(DATA / "camera_small.png", d.inbox, "p.png")
            job = d.wait_states(1, timeout=120)[0]
            assert job["state"] == "failed"
            messages.append(job["error"])
        finally:
            d.stop()
    assert messages[0] == messages[1]
    assert "not found" in messages[0] and ray_head["env"]["PLOTTERD_WEIGHTS_DIR"] in messages[0]


def test_a_job_waits_for_an_unreachable_cluster_saying_where(tmp_path):
    """As a job waits for an unplugged plotter: queued, with the reason in its record."""
    pytest.importorskip("ray", reason="ray is not installed (the [ray] extra)")
    dead = f"127.0.0.1:{free_port()}"
    d = DaemonProc(tmp_path, optimiser={"threads": 1, "backend": "ray"},
                   ray={"address": dead, "connect_timeout_s": 2}).start()
    try:
        drop(DATA / "camera_small.png", d.inbox)
        job = wait_for(lambda: next(iter(d.jobs()), None), 30, 0.1, "the job")
        why = f"cannot reach the Ray cluster at ray.address '{dead}'"
        waiting = wait_for(
            lambda: why in ((j := d.job(job["id"]))["progress"]["info"] or {}).get(
                "waiting", "") and j, 60, 0.2, "the job to wait for the cluster")
        assert waiting["state"] == "queued" and waiting["error"] is None
    finally:
        d.stop()


def test_a_worker_with_another_plotterd_version_refuses_the_job():
    """Checked before anything runs (no cluster needed: the task is a plain generator)."""
    from plotterd.service.ray_backend import optimise_task

    messages = list(optimise_task({"version": "0.0.0-other", "attempt": 1, "spec": {}}))
    assert messages == [("error", messages[0][1])]
    assert "install the same version on both" in messages[0][1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancel_while_optimising_on_the_cluster_frees_its_worker(ray_head, tmp_path):
    """Cancelling stops the driver; Ray then ends the task its dead owner leased, so the
    worker (and its GPU) is free for the next job."""
    d = _daemon(tmp_path, ray_head)
    try:
        (tmp_path / "long.png.yaml").write_text(json.dumps({"iterations": 200000}))
        drop(tmp_path / "long.png.yaml", d.inbox)
        drop(DATA / "camera_small.png", d.inbox, "long.png")
        job = wait_for(lambda: next(iter(d.jobs()), None), 30, 0.1, "the job")
        worker_file = Path(d.job(job["id"])["dir"]) / "ray-worker.json"
        wait_for(worker_file.exists, 120, 0.05, "the task to start")
        pid = json.loads(worker_file.read_text())["pid"]
        assert d.http.post(f"/jobs/{job['id']}/cancel").json()["result"] == "cancelling"
        assert d.wait_job(job["id"], ("cancelled",), timeout=60)["state"] == "cancelled"
        wait_for(lambda: not _alive(pid), 60, 0.2, "the Ray worker to stop")
    finally:
        d.stop()


def test_the_cluster_going_away_mid_job_is_waited_for_and_the_job_resumes(ray_head,
                                                                          tmp_path):
    """The head stops mid-job: the job goes back to the queue (its checkpoint kept, the
    daemon carries on); once the head is back the job resumes and ends as if nothing had
    happened. Last in this module: it restarts the module's head."""
    d = _daemon(tmp_path / "d", ray_head)
    try:
        job, job_dir = _submit_long_job(d, tmp_path)
        wait_for(lambda: (job_dir / "checkpoint.pt").exists(), 120, 0.02, "a checkpoint")
        ray_head["stop"]()
        wait_for(lambda: "went away" in (d.job(job["id"])["progress"]["info"] or {}).get(
            "waiting", ""), 120, 0.2, "the job to wait for the cluster")
        assert d.http.get("/health").status_code == 200
        ray_head["start"]()
        done = d.wait_job(job["id"], ("done", "failed"), timeout=240)
        assert done["state"] == "done", done["error"]
        meta = json.loads((job_dir / "strokes.json").read_text())["metadata"]
        assert meta["resumed_from_iteration"]
        assert _groups(job_dir) == _uninterrupted(tmp_path, LONG_JOB)
    finally:
        d.stop()
