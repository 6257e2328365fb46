"""The plotter worker against the real streamer and simulated GRBL plotter, with a program
built here (so it does not depend on the G-code stage)."""

from __future__ import annotations

from pathlib import Path

from plotterd.gcode.program import GLine, Program
from plotterd.service.daemon import Daemon

from .helpers import wait_for


def square_program(n: int, size: float = 30.0) -> Program:
    header = {"version": 1, "firmware": "grbl", "pen_up": ["M5"], "pen_down": ["M3 S30"],
              "travel_feed": 3000, "bounds": [0, 0, 300, 200], "strokes": n}
    lines = [GLine("G21", "setup"), GLine("G90", "setup"), GLine("M5", "setup")]
    for k in range(n):
        x, y = 10 + (k % 8) * 35, 10 + (k // 8) * 35
        lines += [GLine(f"G0 X{x} Y{y}", "travel", k), GLine("M3 S30", "pen_down", k),
                  GLine("G4 P0.05", "pen_down", k)]
        for dx, dy in ((size, 0), (size, size), (0, size), (0, 0)):
            lines.append(GLine(f"G1 X{x + dx} Y{y + dy} F3000", "draw", k))
        lines.append(GLine("M5", "pen_up", k))
    lines.append(GLine("G0 X0 Y0", "end"))
    return Program(lines, header)


def _vectorised_job(d: Daemon, n: int) -> dict:
    job = d.store.create(source="upload", name="squares.gcode", kind="svg",
                         jobs_dir=d.cfg.jobs_dir, state="queued")
    Path(job["dir"]).mkdir(parents=True)
    square_program(n).save(Path(job["dir"]) / "plot.gcode")
    d.store.transition(job["id"], "vectorised", artefacts={"gcode": "plot.gcode"})
    return job


def _segments(path: Path) -> int:
    return len(path.read_text().split("\n")) - 1 if path.exists() else 0


def test_plot_done_with_render(cfg):
    cfg.plotter.sim_speed = "instant"
    d = Daemon(cfg)
    job = _vectorised_job(d, 5)
    d.plotter.start()
    done = wait_for(lambda: (j := d.store.get(job["id"]))["state"] == "done" and j, 30)
    d.stopping.set()
    assert done["last_completed_stroke"] == 4 and done["error"] is None
    assert {"render", "record", "gcode"} <= set(done["artefacts"])
    assert (Path(done["dir"]) / "render.png").read_bytes()[:4] == b"\x89PNG"
    assert _segments(Path(done["dir"]) / "plot.record") == 5 * 4
    assert done["stats"]["plot"]["lines_acked"] > 0


def test_shutdown_interrupts_and_restart_resumes(cfg):
    cfg.plotter.sim_speed = "scaled:8"
    d = Daemon(cfg)
    job = _vectorised_job(d, 16)
    d.plotter.start()
    wait_for(lambda: (d.store.get(job["id"])["last_completed_stroke"] or -1) >= 2, 60,
             what="three strokes drawn")
    d.stop()
    j = d.store.__class__(cfg.db_path).get(job["id"])
    assert j["state"] == "interrupted", j
    assert 2 < j["resume_stroke"] < 16
    first = _segments(Path(j["dir"]) / "plot.record")
    # a restart in dry-run resumes by itself, from the stroke after the last completed one
    cfg.plotter.sim_speed = "instant"
    d2 = Daemon(cfg)
    d2.recover()
    assert d2.store.get(job["id"])["state"] == "vectorised"
    d2.plotter.start()
    done = wait_for(lambda: (x := d2.store.get(job["id"]))["state"] == "done" and x, 30)
    d2.stopping.set()
    total = _segments(Path(done["dir"]) / "plot.record")
    # every stroke drawn; at most the one in progress at the stop drawn twice
    assert 16 * 4 <= total <= 16 * 4 + 4 + first - 4 * j["resume_stroke"] + 4
    events = [e["state"] for e in d2.store.events(job["id"])]
    assert events[-4:] == ["interrupted", "vectorised", "plotting", "done"]


def test_pause_holds_next_job_and_cancel(cfg):
    cfg.plotter.sim_speed = "scaled:5"
    d = Daemon(cfg)
    d.plotter.pause()
    job = _vectorised_job(d, 8)
    d.plotter.start()
    import time

    time.sleep(1.5)
    assert d.store.get(job["id"])["state"] == "vectorised"  # paused: not started
    d.plotter.resume()
    wait_for(lambda: d.store.get(job["id"])["state"] == "plotting", 10)
    wait_for(lambda: d.plotter.control is not None, 10)
    assert d.cancel_job(job["id"]) == "cancelling"
    j = wait_for(lambda: (x := d.store.get(job["id"]))["state"] == "cancelled" and x, 30)
    d.stopping.set()
    assert j["finished"] is not None
    assert d.plotter.status()["state"] == "idle"


def test_a_dead_worker_thread_ends_the_daemon_with_an_error(cfg):
    # a bug that kills the plotter thread must not leave a daemon that queues jobs forever
    # and never plots: run_forever ends with a one-line error (the unit restarts it)
    import signal

    import pytest

    from plotterd.errors import PlotterdError

    d = Daemon(cfg)
    d.plotter.run = lambda: None  # the thread ends at once, as after an uncaught error
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(PlotterdError, match="plotter thread stopped"):
            d.run_forever()
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert d.stopping.is_set() and not d.optimiser.is_alive()


def test_jobs_wait_for_a_plotter_that_is_not_there_and_start_when_it_appears(cfg, tmp_path):
    # a plotter switched off or unplugged: the jobs wait (they used to become interrupted
    # within seconds) and start when its /dev/serial/by-id name appears
    from plotterd.machine.sim.pty_server import PtyServer

    by_id = tmp_path / "by-id" / "usb-Arduino_Uno_sim-if00"
    by_id.parent.mkdir()
    cfg.plotter.port = str(by_id)
    cfg.plotter.paper = "auto"
    cfg.plotter.reconnect_s = 0.2
    d = Daemon(cfg)
    fresh = _vectorised_job(d, 3)
    resumed = _vectorised_job(d, 3)
    d.store.update(resumed["id"], resume_stroke=2, last_completed_stroke=1)
    d.plotter.start()
    server = PtyServer("sim://grbl?speed=instant&bounds=0,0,300,200")
    try:
        wait_for(lambda: d.plotter.status()["state"] == "waiting_for_plotter", 10)
        import time

        time.sleep(1.5)
        st = d.plotter.status()
        assert st["state"] == "waiting_for_plotter" and not st["connected"], st
        assert st["message"].startswith(f"waiting for plotter {by_id}"), st
        for job in (fresh, resumed):
            assert d.store.get(job["id"])["state"] == "vectorised"
        by_id.symlink_to(server.start())  # plugged in: udev makes the by-id link
        for job in (fresh, resumed):
            j = wait_for(lambda job=job: (x := d.store.get(job["id"]))["state"] == "done"
                         and x, 30)
            assert j["error"] is None
    finally:
        d.stopping.set()
        d.plotter.join(10)
        server.stop()
    # the fresh job drew its 3 squares, the resumed one strokes 2.. only
    assert len(server.sim.segments) == 4 * 3 + 4 * 1
    assert not server.sim.out_of_bounds


def test_a_program_that_cannot_be_streamed_fails_the_job(cfg):
    cfg.plotter.sim_speed = "instant"
    d = Daemon(cfg)
    job = _vectorised_job(d, 2)
    gcode = Path(job["dir"]) / "plot.gcode"
    gcode.write_text(gcode.read_text().replace("G90", "G90 " + "X1" * 50, 1))
    d.plotter.start()
    try:
        j = wait_for(lambda: (x := d.store.get(job["id"]))["state"]
                     not in ("vectorised", "plotting") and x, 30)
    finally:
        d.stopping.set()
    assert j["state"] == "failed" and "at most 79" in j["error"], j


def test_a_tty_name_is_followed_by_its_by_id_link(cfg, tmp_path, monkeypatch):
    # plotter.port: /dev/ttyUSB0 -> the daemon uses /dev/serial/by-id/... from then on, so
    # that a board re-enumerated as /dev/ttyUSB1 (or another board on ttyUSB0) is not taken
    import plotterd.machine.plotter as machine_plotter
    from plotterd.machine.sim.pty_server import PtyServer

    by_id = tmp_path / "serial-by-id"
    by_id.mkdir()
    import functools

    monkeypatch.setattr(machine_plotter, "prefer_by_id",  # this folder as /dev/serial/by-id
                        functools.partial(machine_plotter.prefer_by_id, by_id=str(by_id)))
    server = PtyServer("sim://grbl?speed=instant")
    tty = server.start()  # /dev/pts/N stands in for /dev/ttyUSB0
    link = by_id / "usb-1a86_USB_Serial-if00-port0"
    link.symlink_to(tty)
    cfg.plotter.port = tty
    cfg.plotter.reconnect_s = 0.2
    d = Daemon(cfg)
    d.plotter.start()
    try:
        st = wait_for(lambda: (s := d.plotter.status())["connected"] and s, 20)
        assert st["port"] == str(link), st
        link.unlink()  # the board went away (its tty may be reused by another)
        wait_for(lambda: d.plotter.status()["state"] == "disconnected", 10)
        assert f"{link} is not there" in d.plotter.status()["message"]
    finally:
        d.stopping.set()
        d.plotter.join(10)
        server.stop()
