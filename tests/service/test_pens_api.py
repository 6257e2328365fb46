"""Fitted pens over HTTP: the list, one pen, a calibration sheet queued as a plot job, and
what a fit refuses (the fit itself, end to end: test_pens_fit.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from plotterd.pen import FittedPen, save_pen_profile
from plotterd.service.api import make_app
from plotterd.service.config import parse_config
from plotterd.service.daemon import Daemon
from plotterd.service.web.csrf import HEADER

from .helpers import free_port

OWN = "http://127.0.0.1:8765"
PAGE = {HEADER: "1"}
FINE = FittedPen("fine-liner", nib_mm=0.42, darkness=0.8, colour="#202838",
                 nominal_nib_mm=0.3, fitted_at="2026-12-07", photo="/home/me/sheet.jpg",
                 residual=0.012)


@pytest.fixture
def daemon(tmp_path):
    save_pen_profile(FINE, tmp_path / "pens")
    d = Daemon(parse_config({"state_dir": str(tmp_path / "state"), "pipeline": "tiny",
                             "pens_dir": str(tmp_path / "pens"),
                             "plotter": {"pen": {"profile": "fine-liner"}},
                             "api": {"port": free_port()}}))
    yield d  # not started: the API works on the store alone
    d.store.close()


@pytest.fixture
def client(daemon):
    return TestClient(make_app(daemon), base_url=OWN)


def test_pens_are_listed_by_name_with_their_figures(client):
    (listed,) = client.get("/api/pens").json()
    assert listed == {"name": "fine-liner", "fitted_at": "2026-12-07", "nib_mm": 0.42,
                      "darkness": 0.8, "colour": "#202838", "nominal_nib_mm": 0.3,
                      "residual": 0.012, "photo": "sheet.jpg", "plotters": ["plotter"]}
    assert client.get("/api/pens/fine-liner").json() == listed
    assert client.get("/api/plotters").json()[0]["pen"] == FINE.to_dict()  # the mounted pen
    for name in ("missing", "..%2Fpens%2Ffine-liner", ".hidden"):
        assert client.get(f"/api/pens/{name}").status_code == 404


def test_pens_need_the_token_like_every_route(tmp_path):
    d = Daemon(parse_config({"state_dir": str(tmp_path / "s"), "pipeline": "tiny",
                             "api": {"token": "a-long-token", "port": free_port()}}))
    try:
        c = TestClient(make_app(d), base_url=OWN)
        assert c.get("/api/pens").status_code == 401
        assert c.post("/api/pens/sheet", json={"nib_mm": 0.3}, headers=PAGE).status_code == 401
        auth = {"Authorization": "Bearer a-long-token"}
        assert c.get("/api/pens", headers=auth).json() == []
    finally:
        d.store.close()


def test_a_sheet_is_queued_as_a_plot_job_with_its_layout(client, daemon):
    r = client.post("/api/pens/sheet", json={"pens": ["fine-liner", "new-pen"], "nib_mm": 0.5},
                    headers=PAGE)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["kind"] == "svg" and job["state"] == "queued"
    assert job["plotter_request"] == {"plotter": "plotter"}
    assert [(row["pen"], row["nib_mm"]) for row in job["sheet"]["rows"]] == [
        ("fine-liner", 0.42), ("new-pen", 0.5)]
    job_dir = Path(job["dir"])
    layout = json.loads((job_dir / "sheet.json").read_text())
    assert layout["paper_mm"] == [210.0, 297.0]  # the plotter's paper (a4)
    assert layout["sheet_mm"][:2] == [10.0, 10.0]  # at its margin
    gcode = (job_dir / "input.gcode").read_text()
    assert gcode.count("\n") > 100
    # the plotter's pen alone: one row at its fitted nib
    alone = client.post("/api/pens/sheet", json={}, headers=PAGE).json()
    assert [(row["pen"], row["nib_mm"]) for row in alone["sheet"]["rows"]] == [
        ("fine-liner", 0.42)]


@pytest.mark.parametrize("body, status, words", [
    ({"pens": ["unfitted"]}, 400, "give its nominal nib"),
    ({"pens": ["../x"], "nib_mm": 0.3}, 400, "bad pen name"),
    ({"pens": ["../x"]}, 400, "bad pen name"),
    ({"nib_mm": 5.0}, 400, "the sheet measures nibs of"),
    ({"nib_mm": -1}, 422, "greater than 0"),
    ({"nib_mm": 0.3, "plotter": "nope"}, 404, "no plotter is named"),
])
def test_bad_sheet_requests_say_why(client, daemon, body, status, words):
    r = client.post("/api/pens/sheet", json=body, headers=PAGE)
    assert r.status_code == status and words in r.text, r.text
    assert daemon.store.list() == []  # nothing queued


def test_fit_refuses_what_it_cannot_measure_and_saves_nothing(client, daemon, tmp_path):
    job = client.post("/api/pens/sheet", json={"nib_mm": 0.3}, headers=PAGE).json()
    blank = io.BytesIO(cv2.imencode(".png", np.full((600, 800, 3), 235, np.uint8))[1])
    cases = [
        ({"job": "999", "name": "x"}, {"photo": ("a.png", b"x")}, 404, "no job 999"),
        ({"job": str(job["id"]), "name": "x"}, None, 400, "give a photo"),
        ({"job": str(job["id"]), "name": "x", "capture": "true"}, {"photo": ("a.png", b"x")},
         400, "not both"),
        ({"job": str(job["id"]), "name": "a/b"}, {"photo": ("a.png", b"x")}, 400,
         "bad pen name"),
        ({"job": str(job["id"]), "name": "x"}, {"photo": ("a.txt", b"x")}, 422,
         "must be an image"),
        ({"job": str(job["id"]), "name": "x", "capture": "true"}, None, 503,
         "no camera configured"),
        ({"job": str(job["id"]), "name": "x"}, {"photo": ("a.png", b"not a png")}, 422,
         "a.png: cannot read the photo"),
        ({"job": str(job["id"]), "name": "x"}, {"photo": ("blank.png", blank)}, 422,
         "marks"),
    ]
    for data, files, status, words in cases:
        r = client.post("/api/pens/fit", data=data, files=files, headers=PAGE)
        assert r.status_code == status and words in r.text, (data, r.text)
        assert str(tmp_path) not in r.text  # folders never shown
    assert [p.name for p in (tmp_path / "pens").iterdir()] == ["fine-liner.yaml"]
