from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from plotterd.service.camera import Camera, CameraError, process_frame
from plotterd.service.config import CameraConfig, ClaheConfig

from .daemon_proc import DaemonProc, drop
from .helpers import DATA, SilentServer, wait_for


def _video(path, frames=4, w=64, h=48):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(frames):
        img = np.full((h, w, 3), 40 + 40 * i, np.uint8)
        img[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = rng.integers(0, 255, 3)
        writer.write(img)
    writer.release()
    return path


def test_video_file_source_crop_and_clahe(tmp_path):
    src = _video(tmp_path / "cam.avi")
    cam = Camera(CameraConfig(source=str(src), crop=[0.25, 0.25, 0.5, 0.5], warmup_frames=0))
    frames = [cam.grab() for _ in range(6)]  # more than the file holds: it loops
    assert all(f.shape == (24, 32) and f.dtype == np.uint8 for f in frames)
    assert cam.status()["state"] == "ok" and cam.status()["captures"] == 6
    out = cam.save(frames[0], tmp_path / "f.png")
    assert cv2.imread(str(out), cv2.IMREAD_GRAYSCALE).shape == (24, 32)


def test_clahe_spreads_a_dull_frame():
    rng = np.random.default_rng(1)
    dull = rng.integers(100, 120, (64, 64, 3)).astype(np.uint8)
    out = process_frame(dull, CameraConfig(clahe=ClaheConfig(clip_limit=4.0, tile=4)))
    assert out.ndim == 2 and np.ptp(out) > np.ptp(dull)
    colour = process_frame(dull, CameraConfig(grey=False, clahe=None))
    assert colour.shape == dull.shape


def test_bad_device_is_reported_not_fatal():
    cam = Camera(CameraConfig(source="/nonexistent/video0.avi", retry_s=60))
    with pytest.raises(CameraError, match="cannot open camera"):
        cam.grab()
    st = cam.status()
    assert st["state"] == "error" and "cannot open" in st["error"]
    assert cam.try_open() is False  # not due for a retry yet: no exception either
    index = Camera(CameraConfig(source=7, retry_s=0.01))  # no /dev/video7 here
    with pytest.raises(CameraError, match="cannot open camera 7"):
        index.grab()
    time.sleep(0.02)
    assert index.try_open() is False and index.status()["state"] == "error"
    off = Camera(CameraConfig(source=None))
    with pytest.raises(CameraError, match="no camera configured"):
        off.grab()


def test_a_camera_that_stays_away_is_warned_about_once(caplog):
    import logging

    cam = Camera(CameraConfig(source="/nonexistent/video0.avi", retry_s=0.0))
    with caplog.at_level(logging.DEBUG, logger="plotterd.camera"):
        for _ in range(4):
            assert cam.try_open() is False
    levels = [r.levelno for r in caplog.records if "cannot open camera" in r.getMessage()]
    assert levels == [logging.WARNING] + [logging.DEBUG] * 3


def test_a_hung_network_camera_is_given_up_after_the_timeout():
    server = SilentServer()
    try:
        cam = Camera(CameraConfig(source=server.url, timeout_s=0.5, retry_s=60))
        t0 = time.monotonic()
        with pytest.raises(CameraError, match="took more than 0.5 s"):
            cam.grab()
        assert time.monotonic() - t0 < 3
        assert cam.status()["state"] == "error"
        t0 = time.monotonic()  # the stuck open has not returned: refused at once
        with pytest.raises(CameraError, match="is hung"):
            cam.grab()
        assert time.monotonic() - t0 < 0.5
    finally:
        server.close()


def test_a_hung_camera_does_not_hold_up_the_inbox(tmp_path):
    server = SilentServer()
    d = DaemonProc(tmp_path, camera={"source": server.url, "interval_s": 0.2,
                                     "timeout_s": 60, "retry_s": 0.1})
    try:
        d.start()
        time.sleep(1.0)  # the camera's first open is now stuck (for up to 60 s)
        drop(DATA / "camera_small.png", d.inbox, "while-hung.png")
        wait_for(lambda: any(j["name"] == "while-hung.png" for j in d.jobs()), 10,
                 what="the inbox file taken while the camera hangs")
        assert d.http.get("/plotter").json()["camera"]["state"] != "ok"
    finally:
        d.stop()
        server.close()


def test_the_status_does_not_show_the_cameras_password():
    url = "rtsp://admin:s3cret@127.0.0.1:9/stream"
    cam = Camera(CameraConfig(source=url, timeout_s=5, retry_s=60))
    with pytest.raises(CameraError):
        cam.grab()  # nothing listens on port 9: the error names the source
    st = cam.status()
    assert "s3cret" not in str(st) and "s3cret" not in st["error"] and st["source"] == "rtsp://admin:***@127.0.0.1:9/stream"
    assert Camera(CameraConfig(source=0)).status()["source"] == 0
