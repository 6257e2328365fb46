"""kill -9 at random (seeded) moments: no job lost, no file processed twice."""

from __future__ import annotations

import random
import time
from pathlib import Path

from plotterd.service.store import JobStore

from .daemon_proc import DaemonProc, drop
from .helpers import DATA, wait_for


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    rng = random.Random(20261122)
    d = DaemonProc(tmp_path, plotter={"sim_speed": "scaled:40"})
    names = []
    sources = ["camera_small.png", "text_small.png", "horse_small.png"]
    d.start()
    kills = 0
    try:
        for i, src in enumerate(sources):
            name = f"job {i} {src}"
            names.append(name)
            drop(DATA / src, d.inbox, name)
            # kill somewhere in intake / optimisation / plotting of what is in flight
            time.sleep(rng.uniform(0.2, 3.0))
            d.kill9()
            kills += 1
            d.start()
        # and once more in the middle of a plot
        plotting = wait_for(lambda: [j for j in d.jobs() if j["state"] == "plotting"], 120,
                            0.05, "a job plotting")
        time.sleep(rng.uniform(0.2, 0.8))
        assert d.job(plotting[0]["id"])["state"] == "plotting"  # a plot takes seconds
        d.kill9()
        # a file dropped while the daemon is down is found by the start-up scan
        names.append("while down.png")
        drop(DATA / "coffee_small.png", d.inbox, names[-1])
        d.start()
        jobs = d.wait_states(len(names), timeout=150)
    finally:
        d.stop()
    store = JobStore(d.state / "jobs.db")
    log = d.logs()
    assert kills == len(sources) and len(names) == len(sources) + 1
    # every dropped file became exactly one job, and each one finished
    assert sorted(j["name"] for j in jobs) == sorted(names), log[-3000:]
    assert all(j["state"] == "done" for j in jobs), [(j["name"], j["error"]) for j in jobs]
    # each original is archived once, nothing left in the inbox
    assert sorted(p.name for p in (d.inbox / "done").iterdir()) == sorted(names)
    assert sorted(p.name for p in d.inbox.iterdir()) == ["done", "failed"]
    assert not any((d.inbox / "failed").iterdir())
    # job dirs and rows match one to one
    dirs = sorted(int(p.name) for p in (d.state / "jobs").iterdir())
    assert dirs == sorted(j["id"] for j in jobs)
    # restarts show in the events: at least one job was picked up again after a kill
    events = [e for j in jobs for e in store.events(j["id"])]
    assert any(e["message"] and "restart" in e["message"] for e in events), log[-3000:]
    # the plot killed midway was interrupted, then resumed by itself (dry-run) and finished
    killed = [e["state"] for e in store.events(plotting[0]["id"])]
    assert killed[-4:] == ["interrupted", "vectorised", "plotting", "done"], killed
    assert store.get(plotting[0]["id"])["resume_stroke"] is not None


def test_optimisation_resumes_from_its_checkpoint_after_kill9(tmp_path):
    import json

    d = DaemonProc(tmp_path, optimiser={"iterations": 120, "checkpoint_every": 5}).start()
    try:
        drop(DATA / "camera_small.png", d.inbox, "long.png")
        job = wait_for(lambda: [j for j in d.jobs() if j["state"] == "optimising"
                                and (j["progress"]["fraction"] or 0) >= 0.25], 120, 0.05,
                       "a quarter of the iterations")[0]
        d.kill9()
        d.start()
        done = d.wait_job(job["id"], ["done"], timeout=120)
    finally:
        d.stop()
    meta = json.loads(Path(done["files"]["strokes"]).read_text())["metadata"]
    # >= 30 iterations had run and checkpoints come every 5: at least iteration 25 was kept
    assert meta["resumed_from_iteration"] >= 25, meta
    assert meta["iterations"] == 120
