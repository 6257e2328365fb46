"""The plotter's states through the daemon: an M0 pen change waits for the user and goes on
with POST /api/pen/continue; a board reset loses the position, the job stays interrupted
until the origin is confirmed (POST /api/machine/origin), then resumes from its stroke;
machine controls are refused while a job plots and bounds-checked between jobs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from plotterd.gcode.program import GLine, Program
from plotterd.service.api import make_app
from plotterd.service.daemon import Daemon
from plotterd.service.plotter_worker import POSITION_LOST

from .helpers import LOCAL, wait_for
from .test_plotter import square_program


def _job_with(d: Daemon, program: Program) -> dict:
    job = d.store.create(source="upload", name="squares.gcode", kind="svg",
                         jobs_dir=d.cfg.jobs_dir, state="queued")
    Path(job["dir"]).mkdir(parents=True)
    program.save(Path(job["dir"]) / "plot.gcode")
    d.store.transition(job["id"], "vectorised", artefacts={"gcode": "plot.gcode"})
    return job


def two_pen_program() -> Program:
    """Strokes 0-1 with pen 1, an M0 pen change, strokes 2-3 with pen 2."""
    prog = square_program(4)
    prog.header["pen_change"] = ["M0"]
    prog.header["pens"] = [{"first_stroke": 0, "name": "pen 1 (black)"},
                           {"first_stroke": 2, "name": "pen 2 (red)"}]
    at = next(i for i, ln in enumerate(prog.lines) if ln.stroke == 2)  # its travel
    prog.lines.insert(at + 1, GLine("M0", "pen_down", 2))  # where the writer puts it
    return prog


def _state(d: Daemon, jid: int) -> str:
    return d.store.get(jid)["state"]


def test_pen_change_waits_and_continues_through_the_api(cfg):
    cfg.plotter.sim_speed = "instant"
    d = Daemon(cfg)
    api = TestClient(make_app(d), base_url=LOCAL)
    job = _job_with(d, two_pen_program())
    assert api.post("/api/pen/continue").status_code == 409  # nothing waits
    d.plotter.start()
    try:
        st = wait_for(lambda: (s := api.get("/api/status").json())["plotter"]["state"]
                      == "pen_change" and s, 30, what="the pen change")
        assert st["plotter"]["message"].startswith("waiting for pen change: pen 2 (red)"), st
        time.sleep(1.0)
        assert _state(d, job["id"]) == "plotting"  # it waits for the user, not a timeout
        # pen 1's strokes are drawn (M0 waits for the planner to empty), pen 2's are not
        record = Path(job["dir"], "plot.record")
        assert record.read_text().count("\n") == 2 * 4
        r = api.post("/api/pen/continue")
        assert r.status_code == 200, r.text
        done = wait_for(lambda: (j := d.store.get(job["id"]))["state"] == "done" and j, 30)
    finally:
        d.stopping.set()
        d.plotter.join(10)
    assert done["last_completed_stroke"] == 3 and done["error"] is None
    assert Path(done["dir"], "plot.record").read_text().count("\n") == 4 * 4


def _pty_daemon(cfg, tmp_path, url: str, **plotter):
    from plotterd.machine.sim.pty_server import PtyServer

    server = PtyServer(url)
    link = tmp_path / "usb-plotter"
    link.symlink_to(server.start())
    cfg.plotter.port = str(link)
    cfg.plotter.reconnect_s = 0.2
    for k, v in plotter.items():
        setattr(cfg.plotter, k, v)
    return server, Daemon(cfg)


def test_a_board_reset_interrupts_until_the_origin_is_confirmed(cfg, tmp_path):
    # room for a drawing offset by where the head stood at the reset
    server, d = _pty_daemon(cfg, tmp_path, "sim://grbl?speed=instant&faults=reset@60"
                            "&bounds=0,0,1000,1000", paper="auto")
    api = TestClient(make_app(d), base_url=LOCAL)
    job = _job_with(d, square_program(10))
    d.plotter.start()
    try:
        j = wait_for(lambda: (x := d.store.get(job["id"]))["state"] == "interrupted" and x,
                     30, what="the reset to interrupt the job")
        assert POSITION_LOST in j["error"], j
        start = j["resume_stroke"]
        assert 0 < start < 10
        time.sleep(1.5)  # it does not resume by itself
        assert _state(d, job["id"]) == "interrupted"
        st = api.get("/api/status").json()["plotter"]
        assert st["state"] == "interrupted" and POSITION_LOST in st["message"], st
        assert not st["position_known"]
        r = api.post("/api/machine/origin")  # the user: the pen is at the origin
        assert r.status_code == 200, r.text
        assert r.json()["result"] == {"resumed": [job["id"]]}
        done = wait_for(lambda: (x := d.store.get(job["id"]))["state"] == "done" and x, 30)
    finally:
        d.stopping.set()
        d.plotter.join(10)
        server.stop()
    events = [e["state"] for e in d.store.events(job["id"])]
    assert events[-4:] == ["interrupted", "vectorised", "plotting", "done"], events
    assert done["error"] is None and done["last_completed_stroke"] == 9
    assert not server.sim.out_of_bounds


def test_machine_controls_between_jobs_refused_while_plotting(cfg, tmp_path):
    server, d = _pty_daemon(cfg, tmp_path, "sim://grbl?speed=scaled:4", paper="manual")
    api = TestClient(make_app(d), base_url=LOCAL)
    d.plotter.start()
    try:
        wait_for(lambda: api.get("/api/status").json()["plotter"]["connected"], 20)
        r = api.post("/api/machine/jog", json={"dx": 5, "dy": 5})
        assert r.status_code == 400 and "unknown" in r.json()["detail"]  # not yet known
        assert api.post("/api/machine/origin").status_code == 200
        r = api.post("/api/machine/jog", json={"dx": 5, "dy": 5})
        assert r.status_code == 200, r.text
        r = api.post("/api/machine/jog", json={"dx": 1000, "dy": 0})  # beyond 300 mm
        assert r.status_code == 400, r.text
        assert api.post("/api/machine/send", json={"line": "G92 X0 Y0"}).status_code == 400
        assert api.post("/api/machine/pen-down").status_code == 200
        assert api.post("/api/machine/pen-up").status_code == 200
        assert isinstance(api.get("/api/machine/ports").json(), list)
        # motors off (GRBL sleeps): jobs wait until the origin is set again
        assert api.post("/api/machine/motors-off").status_code == 200
        st = api.get("/api/status").json()["plotter"]
        assert st["message"].startswith("motors off") and not st["position_known"], st
        waiting = _job_with(d, square_program(1))
        time.sleep(1.5)
        assert _state(d, waiting["id"]) == "vectorised"
        assert api.post("/api/machine/origin").status_code == 200  # wakes the board
        wait_for(lambda: _state(d, waiting["id"]) == "done", 30)
        assert api.post("/api/paper/changed").status_code == 200
        job = _job_with(d, square_program(8))
        wait_for(lambda: d.plotter.current == job["id"], 20)
        for path in ("pen-up", "home", "origin", "motors-off"):
            r = api.post(f"/api/machine/{path}")
            assert r.status_code == 409 and "plotting" in r.json()["detail"], (path, r.text)
        d.cancel_job(job["id"])
        wait_for(lambda: _state(d, job["id"]) == "cancelled", 30)
    finally:
        d.stopping.set()
        d.plotter.join(10)
        server.stop()
    assert not server.sim.out_of_bounds


@pytest.mark.parametrize("homing", [False, True], ids=["no-homing", "homing"])
def test_cable_pulled_mid_plot_then_plugged_back(cfg, tmp_path, homing):
    from plotterd.machine.sim.pty_server import PtyServer

    extra = "&homing=1" if homing else ""
    server, d = _pty_daemon(cfg, tmp_path, "sim://grbl?speed=scaled:6" + extra,
                            paper="auto", timeouts={"reconnect_attempts": 2,
                                                    "reconnect_backoff": 0.1, "status": 0.5})
    api = TestClient(make_app(d), base_url=LOCAL)
    job = _job_with(d, square_program(12))
    link = Path(cfg.plotter.port)
    d.plotter.start()
    again = None
    try:
        wait_for(lambda: (d.store.get(job["id"])["last_completed_stroke"] or -1) >= 2, 60,
                 what="three strokes drawn")
        link.unlink()  # the cable is pulled: the device and its by-id link go away
        server.stop()
        j = wait_for(lambda: (x := d.store.get(job["id"]))["state"] == "interrupted" and x,
                     30, what="the job to be interrupted")
        assert POSITION_LOST in j["error"] and j["resume_stroke"] >= 2, j
        wait_for(lambda: api.get("/api/status").json()["plotter"]["state"] == "disconnected",
                 10)
        again = PtyServer("sim://grbl?speed=instant" + extra)  # plugged back: a fresh board
        link.symlink_to(again.start())
        if not homing:
            st = wait_for(lambda: (s := api.get("/api/status").json()["plotter"])["connected"]
                          and s, 20, what="the plotter to be back")
            assert st["state"] == "interrupted" and not st["position_known"], st
            time.sleep(1.0)
            assert _state(d, job["id"]) == "interrupted"  # not without the user's word
            assert api.post("/api/machine/origin").status_code == 200
        # (a machine that homes re-establishes its position on connecting: it resumes)
        done = wait_for(lambda: (x := d.store.get(job["id"]))["state"] == "done" and x, 30)
    finally:
        d.stopping.set()
        d.plotter.join(10)
        if again is not None:
            again.stop()
    assert done["last_completed_stroke"] == 11
    # the fresh board drew the strokes from the resume stroke on
    assert len(again.sim.segments) == 4 * (12 - j["resume_stroke"])


def test_a_homing_machine_homes_after_a_reset_and_goes_on(cfg, tmp_path):
    server, d = _pty_daemon(cfg, tmp_path, "sim://grbl?speed=instant&homing=1"
                            "&faults=reset@60", paper="auto")
    job = _job_with(d, square_program(10))
    d.plotter.start()
    try:
        done = wait_for(lambda: (x := d.store.get(job["id"]))["state"] in ("done", "failed",
                                                                          "interrupted")
                        and x, 30)
        assert d.plotter.status()["position_known"]
    finally:
        d.stopping.set()
        d.plotter.join(10)
        server.stop()
    assert done["state"] == "done", done
    assert server.sim.faults.fired, "the reset did not happen"
    assert "interrupted" not in [e["state"] for e in d.store.events(job["id"])]


def test_a_board_locked_in_alarm_shows_alarm_and_jobs_wait(cfg, tmp_path):
    # homing enabled on the board, but the config forbids homing and unlocking
    server, d = _pty_daemon(cfg, tmp_path, "sim://grbl?speed=instant&homing=1",
                            paper="auto", machine={"homing": False, "unlock_alarm": False})
    api = TestClient(make_app(d), base_url=LOCAL)
    job = _job_with(d, square_program(2))
    d.plotter.start()
    try:
        st = wait_for(lambda: (s := api.get("/api/status").json()["plotter"])["state"]
                      == "alarm" and s, 20, what="the alarm state")
        assert "locked in Alarm" in st["message"], st
        time.sleep(0.5)
        assert _state(d, job["id"]) == "vectorised"
    finally:
        d.stopping.set()
        d.plotter.join(10)
        server.stop()


def test_dry_run_machine_commands_go_to_a_simulator(cfg):
    d = Daemon(cfg)  # dry-run; the worker thread is not needed for commands
    api = TestClient(make_app(d), base_url=LOCAL)
    try:
        assert api.post("/api/machine/origin").json()["result"] == {"resumed": []}
        r = api.post("/api/machine/jog", json={"dx": 10, "dy": 20})
        assert r.status_code == 200 and r.json()["plotter"]["position"] == [10, 20], r.text
        r = api.post("/api/machine/jog", json={"dx": -50, "dy": 0})  # x = -40: outside
        assert r.status_code == 400, r.text
        assert api.post("/api/machine/jog", json={"dx": "nan", "dy": 0}).status_code == 422
        r = api.post("/api/machine/send", json={"line": "G10 L20 P1 X0"})
        assert r.status_code == 400, r.text
        assert api.post("/api/machine/send", json={"line": "G0 X5 Y5"}).status_code == 200
        assert api.get("/api/status").json()["plotter"]["position"] == [5, 5]
    finally:
        d.plotter._sim_link.close()
