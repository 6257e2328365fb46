"""End-to-end: the real daemon process, the real stages, the simulated plotter."""

from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path

from .daemon_proc import DaemonProc, drop
from .helpers import DATA, wait_for

PLOTTERD = str(Path(sys.executable).with_name("plotterd"))  # the installed console script
SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="100mm" height="80mm"
 viewBox="0 0 100 80"><path d="M10 10 L90 10 L90 70 Z" fill="none" stroke="black"/>
<circle cx="50" cy="40" r="20" fill="none" stroke="black"/></svg>
"""


def png_bomb(path: Path, w: int = 60000, h: int = 60000) -> Path:
    """A tiny PNG whose header claims an enormous image (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = zlib.compress(b"\0" * (w + 1) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0,
                                                                          0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path




def test_inbox_good_and_bad_files(daemon, tmp_path):
    inbox = daemon.inbox
    drop(DATA / "camera_small.png", inbox, "-leading dash ünïcødé photo.png")
    (tmp_path / "drawing.svg").write_text(SVG)
    drop(tmp_path / "drawing.svg", inbox)
    (tmp_path / "notes.png").write_text("this is not an image\n")
    drop(tmp_path / "notes.png", inbox)
    (tmp_path / "empty.jpg").write_bytes(b"")
    drop(tmp_path / "empty.jpg", inbox)
    good = (DATA / "horse_small.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    drop(tmp_path / "cut.png", inbox)
    drop(png_bomb(tmp_path / "bomb.png"), inbox)
    (inbox / "escape.png").symlink_to(DATA / "camera_small.png")
    (inbox / "ignored.png.part").write_bytes(good)
    (inbox / ".hidden.png").write_bytes(good)

    jobs = daemon.wait_states(7, timeout=120)
    by_name = {j["name"]: j for j in jobs}
    assert len(jobs) == 7, sorted(by_name)
    photo = by_name["-leading dash ünïcødé photo.png"]
    assert photo["state"] == "done", photo["error"]
    assert {"input", "strokes", "preview", "gcode", "render"} <= set(photo["artefacts"])
    render = daemon.http.get(photo["artefacts"]["render"])
    assert render.status_code == 200 and render.content[:4] == b"\x89PNG"
    detail = daemon.job(photo["id"])
    assert [e["state"] for e in detail["events"]][:5] == [
        "claiming", "queued", "optimising", "vectorised", "plotting"]
    assert detail["events"][-1]["state"] == "done"
    assert detail["plot"]["last_completed_stroke"] is not None
    svg = by_name["drawing.svg"]
    assert svg["state"] == "done", svg["error"]
    assert svg["kind"] == "svg" and "strokes" not in svg["artefacts"]
    for name in ("notes.png", "empty.jpg", "cut.png", "bomb.png", "escape.png"):
        assert by_name[name]["state"] == "failed", (name, by_name[name])
        assert by_name[name]["error"], name
    assert "symlink" in by_name["escape.png"]["error"]

    # originals: done/ or failed/ (+ reason), never deleted; only the ignored files remain
    assert sorted(p.name for p in (inbox / "done").iterdir()) == sorted(
        ["-leading dash ünïcødé photo.png", "drawing.svg"])
    failed = {p.name for p in (inbox / "failed").iterdir()}
    for name in ("notes.png", "empty.jpg", "cut.png", "bomb.png", "escape.png"):
        assert name in failed and f"{name}.reason.txt" in failed
    assert sorted(p.name for p in inbox.iterdir()) == [".hidden.png", "done", "failed",
                                                       "ignored.png.part"]
    assert daemon.http.get("/health").json()["status"] == "ok"


def test_api_upload_pause_resume_replot_cancel(daemon):
    http = daemon.http
    assert http.post("/plot/pause").json()["state"] == "paused"
    with open(DATA / "text_small.png", "rb") as f:
        job = http.post("/jobs", files={"file": ("text.png", f)},
                        data={"options": "iterations: 10"}).json()
    jid = job["id"]
    assert job["source"] == "upload" and job["options"] == {"iterations": 10}
    daemon.wait_job(jid, ["vectorised"])       # ready, but the plotter is paused
    assert http.get("/plotter").json()["state"] == "paused"
    http.post("/plot/resume")
    done = daemon.wait_job(jid, ["done"])
    assert done["plot"]["attempts"] == 1
    assert http.post(f"/jobs/{jid}/replot").status_code == 200
    again = daemon.wait_job(jid, ["done"], timeout=60)
    assert again["plot"]["attempts"] == 2
    # a queued job is cancelled before it runs
    http.post("/plot/pause")
    with open(DATA / "camera_small.png", "rb") as f:
        second = http.post("/jobs", files={"file": ("c.png", f)}).json()
    r = http.post(f"/jobs/{second['id']}/cancel").json()
    assert r["result"] in ("cancelled", "cancelling")
    assert daemon.wait_job(second["id"], ["cancelled"])["state"] == "cancelled"
    assert http.post("/camera/capture").status_code == 503  # no camera: an error, not a crash
    assert http.post("/jobs/12345/resume").status_code == 404


def test_bad_camera_cli_and_systemd_readiness(tmp_path):
    import socket
    import subprocess

    sock_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(sock_path)
    notify.settimeout(30)
    d = DaemonProc(tmp_path, camera={"source": str(tmp_path / "no-such-camera.avi"),
                                     "retry_s": 0.5})
    os.environ["NOTIFY_SOCKET"] = sock_path
    try:
        d.start()
    finally:
        del os.environ["NOTIFY_SOCKET"]
    try:
        assert notify.recv(1000).startswith(b"READY=1")  # Type=notify readiness
        r = d.http.post("/camera/capture")
        assert r.status_code == 503 and "cannot open camera" in r.json()["detail"]
        st = d.http.get("/plotter").json()["camera"]
        assert st["state"] == "error"
        assert d.http.get("/health").status_code == 200

        def cli(*args):
            return subprocess.run([PLOTTERD, *args,
                                   "--url", d.url], capture_output=True, text=True, timeout=60)

        out = cli("jobs")
        assert out.returncode == 0 and "no jobs" in out.stdout, out.stderr
        assert "paused" in cli("pause").stdout
        assert cli("resume").returncode == 0
        bad = cli("capture")
        assert bad.returncode == 2 and "cannot open camera" in bad.stderr
        # `plotterd submit` (called through click: registering it is the CLI shell's job)
        from click.testing import CliRunner

        from plotterd.cli.service_cmd import submit

        (tmp_path / "note.png").write_text("not an image")
        res = CliRunner().invoke(submit, [str(tmp_path / "note.png"), "--url", d.url,
                                          "--options", "iterations: 3"])
        assert res.exit_code == 0 and "queued note.png" in res.output, res.output
        [job] = d.jobs()
        assert job["source"] == "upload" and job["options"] == {"iterations": 3}
    finally:
        d.stop()
        notify.close()
    down = subprocess.run([PLOTTERD, "jobs", "--url", d.url], capture_output=True, text=True,
                          timeout=60)
    assert down.returncode == 2
    assert down.stderr.startswith("plotterd: error: no plotterd daemon answers at")


def test_refuses_to_listen_off_loopback_without_token(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.delenv("PLOTTERD_TOKEN", raising=False)
    (tmp_path / "c.yaml").write_text(f"state_dir: {tmp_path}\napi: {{bind: 0.0.0.0}}\n")
    r = subprocess.run([sys.executable, "-m", "plotterd.service", "--config",
                        str(tmp_path / "c.yaml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "api.token: required" in r.stderr


def test_camera_video_file_api_and_trigger(tmp_path):
    import cv2
    import numpy as np

    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (80, 60))
    for i in range(3):
        img = np.full((60, 80, 3), 200, np.uint8)
        cv2.circle(img, (40, 30), 10 + 5 * i, (0, 0, 0), 3)
        writer.write(img)
    writer.release()
    trigger = tmp_path / "shoot"
    d = DaemonProc(tmp_path, camera={"source": str(video), "crop": [0.1, 0.1, 0.8, 0.8],
                                     "warmup_frames": 0, "trigger_file": str(trigger)})
    d.start()
    try:
        r = d.http.post("/camera/capture")
        assert r.status_code == 201, r.text
        first = d.wait_job(r.json()["id"], ["done"], timeout=90)
        assert first["source"] == "camera"
        img = cv2.imread(first["files"]["input"], cv2.IMREAD_UNCHANGED)
        assert img.shape == (48, 64)  # cropped, grey
        trigger.write_text("")
        wait_for(lambda: len(d.jobs()) == 2, 20, what="the trigger file's capture")
        assert not trigger.exists()
        assert d.http.get("/plotter").json()["camera"]["captures"] == 2
    finally:
        d.stop()


def _children(pid: int) -> list[int]:
    out = []
    for f in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(x) for x in f.read_text().split()]
        except OSError:
            pass
    return out


def test_optimiser_crash_fails_only_that_job(tmp_path):
    import signal

    d = DaemonProc(tmp_path, optimiser={"iterations": 100000}).start()
    try:
        drop(DATA / "camera_small.png", d.inbox, "doomed.png")
        job = wait_for(lambda: [j for j in d.jobs() if j["state"] == "optimising"
                                and (j["progress"]["fraction"] or 0) > 0], 60,
                       what="optimisation under way")[0]
        [worker] = _children(d.proc.pid)
        os.kill(worker, signal.SIGKILL)  # what the OOM killer does
        failed = d.wait_job(job["id"], ["failed"])
        assert "killed by SIGKILL" in failed["error"]
        assert (d.inbox / "failed" / "doomed.png.reason.txt").exists()
        # the daemon carries on with a fresh worker (cancel the 100000-iteration job)
        drop(DATA / "text_small.png", d.inbox, "next.png")
        nxt = wait_for(lambda: [j for j in d.jobs() if j["name"] == "next.png"
                                and j["state"] == "optimising"], 60, what="next job")[0]
        assert d.http.post(f"/jobs/{nxt['id']}/cancel").json()["result"] == "cancelling"
        assert d.wait_job(nxt["id"], ["cancelled"])["error"] is None
        assert d.http.get("/health").json()["status"] == "ok"
    finally:
        d.stop()


def test_a_hung_optimiser_fails_its_job_and_the_daemon_carries_on(tmp_path):
    """A worker that stops reporting progress (here: SIGSTOPped, as a hang would look) is
    stopped after optimiser.stall_s and its job failed. (stall_s covers the worker's start-up
    too: importing torch takes seconds, hence not 1 s here.)"""
    import signal

    d = DaemonProc(tmp_path, optimiser={"iterations": 100000, "stall_s": 8}).start()
    try:
        drop(DATA / "camera_small.png", d.inbox, "hangs.png")
        job = wait_for(lambda: [j for j in d.jobs() if j["state"] == "optimising"
                                and (j["progress"]["fraction"] or 0) > 0], 60,
                       what="optimisation under way")[0]
        [worker] = _children(d.proc.pid)
        os.kill(worker, signal.SIGSTOP)
        failed = d.wait_job(job["id"], ["failed"])
        assert "no progress" in failed["error"]
        assert d.http.get("/health").json()["status"] == "ok"
    finally:
        d.stop()
