"""A run of garbled replies mid-plot, through the daemon: the stream stops safely (feed hold,
pen up), the job fails naming the bytes, and the plotter trusts no position until the user
confirms the origin; no job is put back as if nothing had been drawn."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from plotterd.service.api import make_app

from .helpers import LOCAL, wait_for
from .test_machine_state import _job_with, _pty_daemon
from .test_plotter import square_program


def test_garbled_replies_fail_the_job_and_hold_the_plotter_until_the_origin(cfg, tmp_path):
    server, d = _pty_daemon(cfg, tmp_path, "sim://grbl?speed=instant&faults=noise@60:5"
                            "&bounds=0,0,1000,1000", paper="auto")
    api = TestClient(make_app(d), base_url=LOCAL)
    first = _job_with(d, square_program(10))
    second = _job_with(d, square_program(3))
    d.plotter.start()
    try:
        j = wait_for(lambda: (x := d.store.get(first["id"]))["state"] == "failed" and x, 30,
                     what="the garbled replies to fail the job")
        assert "garbled reply" in j["error"], j
        time.sleep(1.5)  # the next job waits: the head is not where the program thinks
        assert d.store.get(second["id"])["state"] == "vectorised"
        st = api.get("/api/status").json()["plotter"]
        assert not st["position_known"], st
        assert api.post("/api/machine/origin").status_code == 200
        wait_for(lambda: d.store.get(second["id"])["state"] == "done", 30,
                 what="the next job after the origin was confirmed")
    finally:
        d.stopping.set()
        d.plotter.join(10)
        server.stop()
    events = [e["state"] for e in d.store.events(first["id"])]
    assert "failed" in events and events.count("plotting") == 1, events
    assert not server.sim.out_of_bounds
