from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from plotterd.service.api import make_app
from plotterd.service.daemon import Daemon

from .helpers import DATA, LOCAL

TOKEN = "a-long-enough-token"


@pytest.fixture
def daemon(cfg):
    d = Daemon(cfg)  # not started: the API works on the store alone
    yield d
    d.store.close()


def test_token_required_when_set(daemon):
    daemon.cfg.api.token = TOKEN
    c = TestClient(make_app(daemon), base_url=LOCAL)
    assert c.get("/health").status_code == 200
    assert c.get("/jobs").status_code == 401
    assert c.get("/jobs", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert c.get("/jobs", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    ok = c.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json() == []
    assert c.post("/plot/pause").status_code == 401
    assert "/jobs/{job_id}/resume" in c.get("/openapi.json").json()["paths"]


def test_upload_and_job_views(daemon):
    c = TestClient(make_app(daemon), base_url=LOCAL)
    with open(DATA / "camera_small.png", "rb") as f:
        r = c.post("/jobs", files={"file": ("my photo.png", f)},
                   data={"pipeline": "tiny", "options": '{"iterations": 3}'})
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["state"], job["source"], job["name"], job["options"]) == (
        "queued", "upload", "my photo.png", {"iterations": 3})
    jid = job["id"]
    detail = c.get(f"/jobs/{jid}").json()
    assert [e["state"] for e in detail["events"]] == ["claiming", "queued"]
    # register the input as an artefact and fetch it
    daemon.store.update(jid, artefacts={"input": "input.png", "evil": "../../jobs.db"})
    got = c.get(f"/jobs/{jid}/artefacts/input")
    assert got.status_code == 200 and got.content == (DATA / "camera_small.png").read_bytes()
    assert c.get(f"/jobs/{jid}/artefacts/evil").status_code == 404
    assert c.get(f"/jobs/{jid}/artefacts/nope").status_code == 404
    assert c.get("/jobs/999").status_code == 404
    assert c.get("/jobs/" + "9" * 40).status_code == 404  # past SQLite's integers (was a 500)
    long = "ü" * 200 + ".png"  # 400 bytes of name: kept in the job, not in a path
    r = c.post("/jobs", files={"file": (long, b"not an image")})
    assert r.status_code == 201 and r.json()["name"] == long
    bad = c.post("/jobs", files={"file": ("x.png", b"123")}, data={"options": "[1, 2]"})
    assert bad.status_code == 400
    # cancel a queued job; resume needs an interrupted one
    assert c.post(f"/jobs/{jid}/resume").status_code == 409
    assert c.post(f"/jobs/{jid}/cancel").json()["result"] == "cancelled"
    assert c.get(f"/jobs/{jid}").json()["state"] == "cancelled"
    assert c.post("/plot/cancel").status_code == 409  # nothing plotting


def test_upload_size_limit_and_status(daemon):
    daemon.cfg.api.max_upload_mb = 0.001
    c = TestClient(make_app(daemon), base_url=LOCAL)
    r = c.post("/jobs", files={"file": ("big.png", b"x" * 5000)})
    assert r.status_code == 413
    assert not any(daemon.staging.iterdir())
    st = c.get("/plotter").json()
    assert st["dry_run"] and st["state"] == "idle" and st["camera"]["state"] == "off"
    assert c.post("/camera/capture").status_code == 503
    assert c.post("/plot/pause").json()["state"] == "paused"
    assert c.post("/plot/resume").json()["state"] == "idle"


def _post_upload(app, size: int, headers: dict[str, str], declared: int | None = None):
    """POST a multipart upload of ``size`` bytes straight into the ASGI app in 64 KiB
    pieces; the status and how many body bytes the app pulled before answering."""
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n").encode()
    body = head + b"x" * size + f"\r\n--{boundary}--\r\n".encode()
    hdrs = [(b"host", b"127.0.0.1:8765"),
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            *[(k.lower().encode(), v.encode()) for k, v in headers.items()]]
    if declared is not None:
        hdrs.append((b"content-length", str(declared).encode()))
    scope = {"type": "http", "method": "POST", "path": "/jobs", "raw_path": b"/jobs",
             "query_string": b"", "headers": hdrs, "scheme": "http", "http_version": "1.1",
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8765), "root_path": ""}
    pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    pulled, status = 0, []

    async def receive():
        nonlocal pulled
        if not pieces:
            return {"type": "http.request", "body": b"", "more_body": False}
        piece = pieces.pop(0)
        pulled += len(piece)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    asyncio.run(app(scope, receive, send))
    return status[0], pulled


def test_upload_limit_comes_before_the_body_is_stored(daemon):
    daemon.cfg.api.max_upload_mb = 1
    app = make_app(daemon)
    size = 8 * 1024 * 1024
    # a declared length over the limit: refused before a byte is read
    assert _post_upload(app, size, {}, declared=size + 200) == (413, 0)
    # no length (chunked): the counter stops it just past the limit, not at 8 MB
    status, pulled = _post_upload(app, size, {})
    assert status == 413 and pulled <= 1024 * 1024 + 2 * 65536 + 64 * 1024, pulled
    assert not daemon.staging.exists() or not any(daemon.staging.iterdir())
    assert _post_upload(app, 1000, {})[0] == 201  # within the limit: a job


def test_auth_comes_before_the_form_is_parsed(daemon):
    daemon.cfg.api.token = TOKEN
    app = make_app(daemon)
    assert _post_upload(app, 4 * 1024 * 1024, {}) == (401, 0)
    assert _post_upload(app, 1000, {"Authorization": "Bearer wrong-token"}) == (401, 0)
    assert _post_upload(app, 1000, {"Authorization": f"Bearer {TOKEN}"})[0] == 201


@pytest.mark.parametrize("data, why", [
    ({"pipeline": "/etc/hosts"}, "not a path"),
    ({"pipeline": "../pipelines/tiny"}, "not a path"),
    ({"pipeline": "tiny.yaml"}, "not a path"),
    ({"pipeline": "tiny", "options": '{"iterations": 31}'}, "iterations may only be lowered"),
    ({"options": '{"max_input_megapixels": 500}'}, "may only be lowered"),
    ({"options": '{"max_input_megapixels": .nan}'}, "may only be lowered"),
    ({"options": '{"allow_random_weights": true}'}, "cannot be turned on"),
])
def test_upload_gives_pipeline_names_and_only_lowers_limits(daemon, data, why):
    c = TestClient(make_app(daemon), base_url=LOCAL)
    r = c.post("/jobs", files={"file": ("x.png", b"123")}, data=data)
    assert r.status_code == 400 and why in r.json()["detail"], r.text
    ok = c.post("/jobs", files={"file": ("x.png", b"123")},
                data={"pipeline": "tiny",
                      "options": '{"iterations": 5, "max_input_megapixels": 1}'})
    assert ok.status_code == 201, ok.text
