"""Paper is a state the daemon knows: after a job is drawn, the next waits for a new sheet
(plotter.paper: manual), confirmed over the API, by the CLI or by the trigger file; the state
outlives a restart. plotter.paper: auto (roll feeders, dry-run) never waits."""

from __future__ import annotations

import os
import time

from fastapi.testclient import TestClient

from plotterd.service.api import make_app
from plotterd.service.config import parse_config
from plotterd.service.daemon import Daemon

from .helpers import LOCAL, wait_for
from .test_plotter import _vectorised_job


def _state(d: Daemon, jid: int) -> str:
    return d.store.get(jid)["state"]


def test_manual_paper_waits_between_jobs_and_survives_a_restart(cfg):
    cfg.plotter.sim_speed = "instant"
    cfg.plotter.paper = "manual"
    d = Daemon(cfg)
    api = TestClient(make_app(d), base_url=LOCAL)
    first, second, third = (_vectorised_job(d, 2) for _ in range(3))
    assert api.get("/api/status").json()["plotter"]["state"] == "idle"  # a fresh sheet
    d.plotter.start()
    try:
        wait_for(lambda: _state(d, first["id"]) == "done", 30)
        time.sleep(1.5)  # the worker looks again every second: the second job must not start
        assert _state(d, second["id"]) == "vectorised"
        st = api.get("/api/status").json()
        assert st["plotter"]["state"] == "waiting_for_paper", st
        assert st["plotter"]["message"].startswith(f"waiting for paper: job {first['id']}")
        assert st["paper"] == {**st["paper"], "mode": "manual", "ready": False,
                               "job": first["id"]}
        assert api.post("/api/paper/changed").status_code == 200
        wait_for(lambda: _state(d, second["id"]) == "done", 30)
        time.sleep(1.5)
        assert _state(d, third["id"]) == "vectorised"
        # a trigger touched before the job ended is not a new sheet: ignored, removed
        cfg.paper_trigger.write_text("")
        stale = d.store.setting("paper")["since"] - 5
        os.utime(cfg.paper_trigger, (stale, stale))
        wait_for(lambda: not cfg.paper_trigger.exists(), 10)
        time.sleep(1.5)
        assert _state(d, third["id"]) == "vectorised"
        # the trigger file confirms it, and is removed when taken
        cfg.paper_trigger.write_text("")
        wait_for(lambda: _state(d, third["id"]) == "done", 30)
        assert not cfg.paper_trigger.exists()
    finally:
        d.stopping.set()
        d.plotter.join(10)
    # the used sheet is remembered across a restart
    d2 = Daemon(cfg)
    st = TestClient(make_app(d2), base_url=LOCAL).get("/api/status").json()
    assert st["plotter"]["state"] == "waiting_for_paper" and st["paper"]["job"] == third["id"]


def test_auto_paper_and_dry_run_do_not_wait(cfg):
    cfg.plotter.sim_speed = "instant"
    assert cfg.paper_mode == "auto"  # dry-run's default
    assert parse_config({"plotter": {"port": "/dev/ttyUSB0"}}).paper_mode == "manual"
    assert parse_config({"plotter": {"port": "/dev/ttyUSB0", "paper": "roll"}}).paper_mode \
        == "auto"
    d = Daemon(cfg)
    jobs = [_vectorised_job(d, 2) for _ in range(3)]
    d.plotter.start()
    try:
        for job in jobs:
            wait_for(lambda job=job: _state(d, job["id"]) == "done", 30)
    finally:
        d.stopping.set()
    assert d.plotter.status()["state"] == "idle"


def test_paper_changed_is_refused_while_a_job_plots_on_the_sheet(cfg):
    cfg.plotter.sim_speed = "scaled:5"
    cfg.plotter.paper = "manual"
    d = Daemon(cfg)
    api = TestClient(make_app(d), base_url=LOCAL)
    job = _vectorised_job(d, 8)
    d.plotter.start()
    try:
        wait_for(lambda: _state(d, job["id"]) == "plotting" and d.plotter.current, 10)
        r = api.post("/api/paper/changed")
        assert r.status_code == 409 and f"job {job['id']} is plotting" in r.json()["detail"]
        assert api.get("/api/status").json()["plotter"]["state"] == "plotting"
        wait_for(lambda: (d.store.get(job["id"])["last_acked_stroke"] or -1) >= 1, 30)
        d.cancel_job(job["id"])
        wait_for(lambda: _state(d, job["id"]) == "cancelled", 30)
    finally:
        d.stopping.set()
    # strokes were drawn before the cancel: the sheet is used
    assert d.plotter.status()["state"] == "waiting_for_paper"


def test_an_interrupted_job_resumes_on_its_own_sheet_and_the_next_waits(cfg):
    cfg.plotter.sim_speed = "scaled:8"
    cfg.plotter.paper = "manual"
    cfg.plotter.auto_resume = False
    d = Daemon(cfg)
    job = _vectorised_job(d, 12)
    d.plotter.start()
    wait_for(lambda: (d.store.get(job["id"])["last_completed_stroke"] or -1) >= 1, 60)
    d.stop()  # interrupted, its drawing on the sheet
    cfg.plotter.sim_speed = "instant"
    d2 = Daemon(cfg)
    d2.recover()
    nxt = _vectorised_job(d2, 2)
    api = TestClient(make_app(d2), base_url=LOCAL)
    d2.plotter.start()
    try:
        time.sleep(1.5)
        assert _state(d2, nxt["id"]) == "vectorised"  # not on the interrupted job's sheet
        st = api.get("/api/status").json()["plotter"]
        assert st["state"] == "interrupted", st
        assert f"plotterd resume {job['id']} or plotterd paper-changed" in st["message"], st
        assert api.post(f"/jobs/{job['id']}/resume").status_code == 200
        wait_for(lambda: _state(d2, job["id"]) == "done", 30)
        time.sleep(1.5)
        assert _state(d2, nxt["id"]) == "vectorised"
        assert api.get("/api/status").json()["plotter"]["state"] == "waiting_for_paper"
    finally:
        d2.stopping.set()
        d2.plotter.join(10)
