"""A pen fitted through the daemon's API, end to end: the daemon in dry-run plots the
calibration sheet, the simulated camera photographs it, the fit is saved as a profile."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import yaml

from plotterd.calibration import make_sheet
from plotterd.calibration.render import render_sheet
from plotterd.machine.sim.camera import photograph
from plotterd.pen import RoundNib, load_pen_profile

from .daemon_proc import DaemonProc


def _video(frame_rgb, path: Path) -> Path:
    """A one-frame MJPG video (the camera source a file can stand in for)."""
    h, w = frame_rgb.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
    writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_a_pen_is_fitted_from_a_photo_of_its_plotted_sheet(tmp_path):
    """The daemon in dry-run plots the sheet; the simulated camera photographs the sheet as
    a pen wider and paler than its nominal nib lays it; the fit (of an upload, and of a
    frame from the configured camera) finds that pen and saves it; the list shows it."""
    true_pen = RoundNib(nib_mm=0.38, darkness=0.85)
    # the sheet the daemon will make (A4 portrait at a 10 mm margin), photographed ahead so
    # the camera's source can hold the photo from the start
    expected = make_sheet([RoundNib(0.3)], (210.0, 297.0), 10.0, ["sakura-03"]).layout
    photo = photograph(render_sheet(expected, true_pen, px_per_mm=10.0), 10.0, seed=3)
    camera = _video(photo.image, tmp_path / "camera.avi")
    d = DaemonProc(tmp_path, pens_dir=str(tmp_path / "pens"),
                   camera={"source": str(camera), "warmup_frames": 0}).start()
    try:
        r = d.http.post("/api/pens/sheet", json={"pens": ["sakura-03"], "nib_mm": 0.3})
        assert r.status_code == 201, r.text
        job = d.wait_job(r.json()["id"], ("done", "failed"), timeout=120)
        assert job["state"] == "done", job["error"]
        layout = json.loads((Path(job["dir"]) / "sheet.json").read_text())
        assert layout == json.loads(json.dumps(expected))
        r = d.http.post("/api/pens/fit", data={"job": str(job["id"]), "name": "sakura-03"},
                        files={"photo": ("sheet.jpg", photo.jpeg)}, timeout=300)
        assert r.status_code == 201, r.text
        r = d.http.post("/api/pens/fit", data={"job": str(job["id"]), "name": "from-camera",
                                               "capture": "true"}, timeout=300)
        assert r.status_code == 201, r.text
        listed = d.http.get("/api/pens").json()
    finally:
        d.stop()
    for name in ("sakura-03", "from-camera"):
        saved = load_pen_profile(name, tmp_path / "pens")
        assert saved.nib_mm == pytest.approx(true_pen.nib_mm, abs=0.03)
        assert saved.darkness == pytest.approx(true_pen.darkness, abs=0.05)
        assert saved.nominal_nib_mm == 0.3 and saved.fitted_at
    assert [p["name"] for p in listed] == ["from-camera", "sakura-03"]
    evidence = list(Path(job["dir"]).glob("photo-*.fit.json"))
    assert len(evidence) == 2 and all(yaml.safe_load(e.read_text())["swatches"]
                                      for e in evidence)
