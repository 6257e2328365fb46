"""The web page's server side without a browser: the cross-site guard, the page's files,
its endpoints (pipelines, live status, plan, thumbnails) and the token rule on them."""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
import pytest
from fastapi.datastructures import Headers
from fastapi.testclient import TestClient
from PIL import Image

from plotterd.service.api import make_app
from plotterd.service.daemon import Daemon
from plotterd.service.web import routes
from plotterd.service.web.csrf import HEADER, is_loopback_host, refusal
from plotterd.service.web.hosts import host_allowed
from plotterd.service.web.plan import job_plan

from .helpers import DATA

OWN = "http://127.0.0.1:8765"
PAGE = {"Origin": OWN, "Sec-Fetch-Site": "same-origin", HEADER: "1"}
SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="100mm" height="80mm" '
       'viewBox="0 0 100 80"><path d="M10 10 L90 10 L90 70" fill="none" stroke="black"/>'
       '<path d="M20 60 L50 20" fill="none" stroke="black"/>'
       '<circle cx="60" cy="50" r="10" fill="none" stroke="black"/></svg>')


@pytest.fixture
def daemon(cfg):
    d = Daemon(cfg)  # not started: the API works on the store alone
    yield d
    d.store.close()


@pytest.fixture
def client(daemon):
    return TestClient(make_app(daemon), base_url=OWN)


# -- the cross-site guard --------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", HEADER: "1"},
    {"Sec-Fetch-Site": "same-site", HEADER: "1"},  # another port of the same host
    {"Origin": "http://127.0.0.1:9999", HEADER: "1"},  # an older browser: Origin only
    {"Origin": "null", HEADER: "1"},  # a sandboxed frame or a file:// page
    {"Referer": "http://evil.example/page", HEADER: "1"},
    {"Origin": OWN},  # an old browser (no Fetch Metadata) and not the page's own call
])
def test_cross_site_posts_are_refused(client, daemon, headers):
    r = client.post("/plot/pause", headers=headers)
    assert r.status_code == 403, r.text
    assert "refused" in r.json()["detail"]
    assert not daemon.plotter.paused


def test_form_encoded_cross_origin_post_is_refused(client, daemon):
    with open(DATA / "camera_small.png", "rb") as f:
        r = client.post("/jobs", files={"file": ("x.png", f)},
                        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = client.post("/plot/pause", data={"a": "1"},
                    headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert daemon.store.list() == [] and not daemon.plotter.paused


def test_same_origin_page_and_non_browser_clients_are_accepted(client, daemon):
    assert client.post("/plot/pause", headers=PAGE).json()["state"] == "paused"
    assert client.post("/plot/resume").json()["state"] == "idle"  # the CLI sends no markers
    typed = {"Sec-Fetch-Site": "none", HEADER: "1"}  # the user typed it: not a site's doing
    assert client.post("/plot/pause", headers=typed).status_code == 200
    docs = {"Origin": OWN, "Sec-Fetch-Site": "same-origin"}  # e.g. /docs' "try it out"
    assert client.post("/plot/resume", headers=docs).status_code == 200
    # reading is not guarded: another site cannot read the answer anyway (no CORS)
    assert client.get("/jobs", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


def test_dns_rebinding_host_is_refused_on_loopback(daemon):
    evil = TestClient(make_app(daemon), base_url="http://evil.example:8765")
    same = {"Origin": "http://evil.example:8765", "Sec-Fetch-Site": "same-origin", HEADER: "1"}
    r = evil.post("/plot/pause", headers=same)
    assert r.status_code == 400 and "evil.example" in r.json()["detail"]
    # bound beyond loopback (with a token, as required) the names in api.hosts reach it
    daemon.cfg.api.bind, daemon.cfg.api.token = "0.0.0.0", "a-long-enough-token"
    daemon.cfg.api.hosts = ["plotter.lan"]
    lan = TestClient(make_app(daemon), base_url="http://plotter.lan:8765")
    r = lan.post("/plot/pause", headers={**same, "Origin": "http://plotter.lan:8765",
                                         "Authorization": "Bearer a-long-enough-token"})
    assert r.status_code == 200, r.text


def test_reads_with_a_foreign_host_are_refused(daemon, tmp_path):
    """A rebinding page cannot read the job list, the status, artefacts or camera frames."""
    job, _ = _svg_job(daemon, tmp_path)
    jid = job["id"]
    Image.new("L", (40, 40), 128).save(tmp_path / "jobs" / str(jid) / "render.png")
    daemon.store.update(jid, artefacts={"gcode": "plot.gcode", "render": "render.png"})
    assert TestClient(make_app(daemon), base_url=OWN).get(
        f"/api/jobs/{jid}/thumbnail/render").status_code == 200
    paths = ["/jobs", "/api/status", "/api/live", f"/jobs/{jid}", f"/jobs/{jid}/artefacts/gcode",
             f"/api/jobs/{jid}/thumbnail/render", f"/api/jobs/{jid}/plan", "/plotter", "/"]
    evil = TestClient(make_app(daemon), base_url="http://evil.example:8765")
    for path in paths:
        r = evil.get(path)
        assert r.status_code == 400, (path, r.status_code)
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "192.168.1.20:8765"):
        assert TestClient(make_app(daemon), base_url=f"http://{host}").get(
            "/jobs").status_code == 200, host
    assert not host_allowed("", set()) and not host_allowed("plotter.lan", set())
    assert host_allowed("Plotter.LAN.:8765", {"plotter.lan"})


def test_refusal_rules():
    def why(method="POST", **h):
        return refusal(method, "http", Headers({"host": "127.0.0.1:8765", **h}), True)

    assert why() is None and why("GET", origin="http://evil.example") is None
    assert why(origin="http://127.0.0.1:8765", **{HEADER: "1"}) is None
    assert why(origin="http://127.0.0.1:8765") is not None  # an old browser, no header
    assert why(origin="http://127.0.0.1:8765", **{"sec-fetch-site": "same-origin"}) is None
    assert why(referer="http://127.0.0.1:8765/", **{HEADER: "1"}) is None
    assert why("DELETE", **{"sec-fetch-site": "cross-site"}) is not None
    assert all(map(is_loopback_host, ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"]))
    assert not any(map(is_loopback_host, ["evil.example", "10.0.0.1", "0.0.0.0", ""]))


# -- the page's files and endpoints ------------------------------------------------------------
def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    html = r.text
    assert "/static/app.js" in html and "/static/style.css" in html
    assert "http://" not in html and "https://" not in html  # nothing from the internet
    for name, kind in (("app.js", "javascript"), ("style.css", "css"), ("icon.svg", "svg")):
        got = client.get(f"/static/{name}")
        assert got.status_code == 200 and kind in got.headers["content-type"]
        assert "https://" not in got.text
    assert client.get("/static/routes.py").status_code == 404
    assert client.get("/static/..%2F__init__.py").status_code == 404
    assert client.get("/static/../web/__init__.py").status_code == 404


def test_page_has_a_pens_section(client):
    html = client.get("/").text
    assert 'id="pens"' in html and 'id="pen-rows"' in html
    js = client.get("/static/app.js").text
    assert '"/api/pens"' in js


def test_pipelines_endpoint(client, daemon):
    got = {p["name"]: p for p in client.get("/api/pipelines").json()}
    assert got["tiny"]["default"] and not got["lines-blurmse"]["default"]
    assert "60 lines" in got["tiny"]["description"]


def test_token_rule_covers_the_page_endpoints(daemon):
    daemon.cfg.api.token = "a-long-enough-token"
    c = TestClient(make_app(daemon), base_url=OWN)
    assert c.get("/").status_code == 200  # the page holds no data
    assert c.get("/static/app.js").status_code == 200
    for path in ("/api/live", "/api/pipelines", "/api/jobs/1/plan",
                 "/api/jobs/1/thumbnail/preview"):
        assert c.get(path).status_code == 401, path
    ok = c.get("/api/live", headers={"Authorization": "Bearer a-long-enough-token"})
    assert ok.status_code == 200


def _svg_job(daemon, tmp_path, profile: str = "grbl-servo"):
    from plotterd.gcode import make_gcode
    from plotterd.vector import PageSpec

    src = tmp_path / "in.svg"
    src.write_text(SVG)
    job = daemon.store.create(source="upload", name="in.svg", kind="svg", state="done",
                              jobs_dir=tmp_path / "jobs")
    res = make_gcode(src, profile=profile, page=PageSpec(paper="a5"))
    res.save(tmp_path / "jobs" / str(job["id"]) / "plot.gcode")
    daemon.store.update(job["id"], artefacts={"gcode": "plot.gcode"},
                        plot_attempts=1, stage="plot", progress=1.0,
                        info={"executed": len(res.program.lines)})
    return daemon.store.get(job["id"]), res


@pytest.mark.parametrize("profile", ["grbl-servo", "grbl-z", "klipper", "marlin-servo"])
def test_plan_is_the_drawing_on_the_paper(daemon, tmp_path, profile):
    """The plan's strokes are the laid-out page's lines in paper millimetres, whatever the
    machine's origin corner and axis directions."""
    from plotterd.vector import PX_PER_MM

    job, res = _svg_job(daemon, tmp_path, profile)
    plan = job_plan(tmp_path / "jobs" / str(job["id"]) / "plot.gcode", [profile])
    assert plan["frame"] == "paper" and plan["view"][2:] in ([210, 148], [148, 210])
    lines = [ln for layer in res.document.layers.values() for ln in layer]
    assert len(plan["strokes"]) == len(lines) == res.program.header["strokes"]
    for stroke, line in zip(plan["strokes"], lines, strict=True):
        pts = np.array([p[1:] for p in plan["track"][stroke["start"]:stroke["end"]]])
        want = np.stack([line.real, line.imag], -1) / PX_PER_MM
        assert pts.shape == want.shape and np.abs(pts - want).max() < 0.02
    seen = [p[0] for p in plan["track"]]
    assert seen == sorted(seen) and seen[-1] < plan["lines"]
    # the machine's own coordinates map onto the same points (the page places the pen so)
    from plotterd.gcode.profile import xy_target

    ku, cu, kv, cv = plan["machine_to_view"]
    moves = {i: xy_target(ln.text) for i, ln in enumerate(res.program.lines)}
    for line, u, v in plan["track"]:
        x, y = moves[line]
        if x is not None and y is not None:
            assert abs(ku * x + cu - u) < 0.02 and abs(kv * y + cv - v) < 0.02


def test_plan_pen_colours_are_checked():
    from plotterd.service.web.plan import _pens

    got = _pens({"pens": [{"first_stroke": 0, "strokes": 2, "color": "#ff0000"},
                          {"first_stroke": 2, "strokes": 1, "color": 'red" onload="x'}]},
                [], 0.3)
    assert [p["color"] for p in got] == ["#ff0000", "#000000"]
    assert _pens({}, [{}, {}], 0.5)[0] == {"name": "", "first_stroke": 0, "strokes": 2,
                                           "color": "#000000", "width_mm": 0.5}


def test_plan_strokes_are_as_wide_as_the_pen(client, daemon, tmp_path):
    """The live view draws each pen at its own nib (mm), not a width made up for the view:
    the program's recorded width, else the job's pen, else the plotter's."""
    from plotterd.pen import RoundNib
    from plotterd.service.web.plan import _pens
    from plotterd.service.web.routes import _pen_mm

    job, res = _svg_job(daemon, tmp_path)  # the SVG's stroke-width: 1 user unit = 1 mm
    plan = client.get(f"/api/jobs/{job['id']}/plan").json()
    assert [p["width_mm"] for p in plan["pens"]] == [res.program.header["pens"][0]["width_mm"]]
    pc = daemon.cfg.plotter
    assert _pen_mm({"options": {}}, pc) == 0.3  # no pen anywhere: the default nib
    pc.pen = RoundNib(0.5)
    assert _pen_mm({"options": {}}, pc) == 0.5
    assert _pen_mm({"options": {"pen": {"nib_mm": 0.7, "darkness": 1.0}}}, pc) == 0.7
    recorded = _pens({"pens": [{"first_stroke": 0, "strokes": 1, "width_mm": 0.25},
                               {"first_stroke": 1, "strokes": 1, "width_mm": float("nan")}]},
                     [], 0.4)
    assert [p["width_mm"] for p in recorded] == [0.25, 0.4]


def test_plan_and_live_endpoints(client, daemon, tmp_path):
    job, _ = _svg_job(daemon, tmp_path)
    plan = client.get(f"/api/jobs/{job['id']}/plan").json()
    assert len(plan["strokes"]) == 3
    assert [(p["first_stroke"], p["strokes"], p["color"]) for p in plan["pens"]] == [
        (0, 3, "#000000")]
    live = client.get("/api/live").json()
    assert live["plotter"]["state"] == "idle"
    assert live["job"]["id"] == job["id"] and not live["job"]["current"]
    assert live["job"]["plan"] == f"/api/jobs/{job['id']}/plan"
    assert live["job"]["executed"] == plan["lines"]
    assert client.get("/api/jobs/999/plan").status_code == 404
    daemon.store.update(job["id"], artefacts={"gcode": "../../../jobs.db"})
    assert client.get(f"/api/jobs/{job['id']}/plan").status_code == 404


def test_thumbnails(client, daemon, tmp_path):
    job, _ = _svg_job(daemon, tmp_path)
    job_dir = tmp_path / "jobs" / str(job["id"])
    big = Image.new("L", (1200, 1200), 255)
    big.paste(0, (600, 0, 601, 1200))  # a one-pixel pen line
    big.save(job_dir / "render.png")
    (job_dir / "preview.png").write_bytes((DATA / "camera_small.png").read_bytes())
    daemon.store.update(job["id"], artefacts={"gcode": "plot.gcode", "render": "render.png",
                                              "preview": "preview.png", "input": "../../x",
                                              "loss_png": "plot.gcode"})
    r = client.get(f"/api/jobs/{job['id']}/thumbnail/render")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    small = Image.open(io.BytesIO(r.content))
    assert max(small.size) == 320
    assert np.asarray(small.convert("L")).min() < 128, "the pen line vanished in the thumbnail"
    assert client.get(f"/api/jobs/{job['id']}/thumbnail/preview").status_code == 200
    assert client.get(f"/api/jobs/{job['id']}/thumbnail/input").status_code == 404  # outside
    assert client.get(f"/api/jobs/{job['id']}/thumbnail/loss_png").status_code == 404  # not PNG
    assert client.get(f"/api/jobs/{job['id']}/thumbnail/gcode").status_code == 404


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` grey pixels and holds none (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_thumbnails_of_huge_images_are_refused_not_decoded(client, daemon, tmp_path,
                                                           monkeypatch):
    job, _ = _svg_job(daemon, tmp_path)
    jid, job_dir = job["id"], tmp_path / "jobs" / str(job["id"])
    (job_dir / "bomb.png").write_bytes(_png_header_only(30_000, 30_000))  # 900 MP
    Image.new("L", (2000, 1000), 200).save(job_dir / "wide.png")
    Image.new("RGB", (4000, 3000), (200, 50, 50)).save(job_dir / "photo.jpg", quality=80)
    daemon.store.update(jid, artefacts={"gcode": "plot.gcode", "render": "bomb.png",
                                        "preview": "wide.png", "input": "photo.jpg"})
    r = client.get(f"/api/jobs/{jid}/thumbnail/render")
    assert r.status_code == 413 and "too many pixels" in r.json()["detail"]
    monkeypatch.setattr(routes, "THUMB_MAX_PIXELS", 1_000_000)  # the cap, made small
    r = client.get(f"/api/jobs/{jid}/thumbnail/preview")  # 2 MP PNG: over it
    assert r.status_code == 413 and "2000 x 1000" in r.json()["detail"]
    # a 12 MP JPEG is decoded at 1/8 scale (500 x 375), under the cap: a thumbnail
    r = client.get(f"/api/jobs/{jid}/thumbnail/input")
    assert r.status_code == 200
    small = Image.open(io.BytesIO(r.content))
    assert max(small.size) == 320 and small.getpixel((10, 10))[0] > 150


def test_docs_page_loads_only_the_daemons_own_files(client):
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)""", page.text)
    urls += re.findall(r"""url:\s*['"]([^'"]+)""", page.text)
    assert urls and not [u for u in urls if "//" in u], urls  # nothing from another host
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200 and len(r.content) > 100, url
    assert "SwaggerUIBundle" in client.get("/docs-assets/swagger-ui-bundle.js").text
    assert client.get("/docs-assets/index.html").status_code == 404  # only the files named
    assert client.get("/redoc").status_code == 404  # ReDoc needs a CDN: not offered
