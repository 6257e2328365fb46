"""Several plotters in one daemon: the config, routing (by name, tags, inbox folder and
sidecar; G-code per plotter), atomic claims, a plotter that is gone (wait / same_tags), and
the real daemon with two plotters, one of them unplugged mid-plot while the other carries
on."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from plotterd.errors import ConfigError
from plotterd.service import routing, stages
from plotterd.service.config import parse_config
from plotterd.service.daemon import Daemon
from plotterd.service.plotter_worker import POSITION_LOST
from plotterd.service.store import JobStore

from .daemon_proc import DaemonProc, drop
from .helpers import LOCAL, PLOTTERD, SimPort, free_port, wait_for
from .test_plotter import square_program


def _svg(n: int, width: float = 60.0) -> str:
    """``n`` horizontal lines, each its own stroke."""
    lines = "".join(f'<path d="M2 {2 + 1.5 * i} L{width - 2} {2 + 1.5 * i}" stroke="black" '
                    'fill="none"/>' for i in range(n))
    h = 4 + 1.5 * n
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}mm" height="{h}mm" '
            f'viewBox="0 0 {width} {h}">{lines}</svg>')


# -- config ------------------------------------------------------------------------------
def test_plotters_config_and_the_single_plotter_form():
    one = parse_config({"plotter": {"port": "/dev/ttyUSB0", "paper": "roll"}})
    assert [p.name for p in one.plotters] == ["plotter"] and one.plotter.port == "/dev/ttyUSB0"
    assert one.paper_trigger.name == "paper-changed" and not one.dry_run
    cfg = parse_config({
        "vector": {"pens": [{"color": "black", "width_mm": 0.3}], "two_opt": True},
        "page": {"paper": "a4", "margin_mm": 12},
        "plotters": [
            {"name": "big", "port": "/dev/serial/by-id/usb-a", "tags": ["a3", "black"],
             "page": {"paper": "a3"}, "profile": "grbl-z"},
            {"name": "red-1", "tags": "red", "pens": [{"color": "red", "width_mm": 0.5}]},
        ],
        "folders": {"posters": {"tags": ["a3"]}, "reds": {"plotter": "red-1"}},
        "routing": {"when_gone": "same_tags", "gone_after_s": 5},
    })
    big, red = cfg.plotters
    assert big.dry_run is False and red.dry_run and not cfg.dry_run
    assert cfg.page_of(big).paper == "a3" and cfg.page_of(big).margin_mm == 12  # merged
    assert cfg.page_of(red).paper == "a4"
    assert red.tags == ["red"] and cfg.vector_of(red, None).pens == [{"color": "red",
                                                                     "width_mm": 0.5}]
    assert cfg.vector_of(red, None).two_opt is True  # the rest from the top-level vector
    assert cfg.vector_of(big, None).pens[0]["color"] == "black"
    assert cfg.paper_trigger_of(red).name == "paper-changed.red-1"
    assert big.paper_mode == "manual" and red.paper_mode == "auto"
    assert cfg.folders["posters"].tags == ["a3"] and cfg.folders["reds"].plotter == "red-1"
    assert cfg.routing.when_gone == "same_tags"


@pytest.mark.parametrize("data, key", [
    ({"plotter": {}, "plotters": [{"name": "a"}]}, "plotters"),
    ({"plotters": []}, "plotters"),
    ({"plotters": [{"port": None}]}, "plotters[0].name"),
    ({"plotters": [{"name": "A"}]}, "plotters[0].name"),
    ({"plotters": [{"name": "a"}, {"name": "a"}]}, "plotters[1].name"),
    ({"plotters": [{"name": "a", "port": "/dev/x"}, {"name": "b", "port": "/dev/x"}]},
     "plotters[1].port"),
    ({"plotters": [{"name": "a"}, {"name": "b", "prot": "/dev/x"}]}, "plotters[1].prot"),
    ({"plotters": [{"name": "a"}, {"name": "b", "port": 3}]}, "plotters[1].port"),
    ({"plotters": [{"name": "a", "sim_speed": "fast"}]}, "plotters[0].sim_speed"),
    ({"plotters": [{"name": "a", "timeouts": {"ok": 0}}]}, "plotters[0].timeouts.ok"),
    ({"plotters": [{"name": "a", "page": {"orientation": "up"}}]},
     "plotters[0].page.orientation"),
    ({"plotters": [{"name": "a", "pens": [{"color": "red", "width_mm": 0}]}]},
     "plotters[0].pens[0].width_mm"),
    ({"plotters": [{"name": "a", "tags": [""]}]}, "plotters[0].tags[0]"),
    ({"plotters": [{"name": "a", "paper": "layout"}]}, "plotters[0].paper"),
    ({"plotters": [{"name": "a"}], "folders": {"x": {"plotter": "b"}}}, "folders.x.plotter"),
    ({"plotters": [{"name": "a", "tags": ["red"]}], "folders": {"x": {"tags": ["blue"]}}},
     "folders.x.tags"),
    ({"routing": {"when_gone": "reroute"}}, "routing.when_gone"),
    ({"routing": {"gone_after_s": 0}}, "routing.gone_after_s"),
])
def test_bad_plotters_config_names_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert e.value.key == key, str(e.value)


# -- routing -----------------------------------------------------------------------------
def _cfg(**routing_cfg):
    return parse_config({"plotters": [{"name": "a", "tags": ["black"]},
                                      {"name": "b", "tags": ["red", "a3"]},
                                      {"name": "c", "tags": ["red", "a3", "fine"]}],
                         "routing": routing_cfg or None})


def test_requests_and_which_plotter_may_draw():
    cfg = _cfg()
    a, b, c = cfg.plotters
    never = lambda name: False  # noqa: E731 - no plotter gone
    assert routing.parse_request(None, "red, a3", "x") == {"tags": ["a3", "red"]}
    with pytest.raises(routing.RoutingError, match="not both"):
        routing.parse_request("a", ["red"], "sidecar x.yaml")
    assert "no plotter is named 'z'" in routing.unsatisfiable({"plotter": "z"}, cfg)
    assert "no plotter has the tags blue" in routing.unsatisfiable({"tags": ["blue"]}, cfg)
    job = {"plotter_request": {"tags": ["red"]}, "resume_stroke": None, "stats": {}}
    assert [p.name for p in routing.candidates(job["plotter_request"], cfg)] == ["b", "c"]
    assert [routing.may_draw(job, p, cfg, never) for p in (a, b, c)] == [False, True, True]
    named = {"plotter_request": {"plotter": "b"}, "resume_stroke": None, "stats": {}}
    assert [routing.may_draw(named, p, cfg, lambda n: True) for p in (a, b, c)] == \
        [False, True, False]  # when_gone: wait
    # a started plot stays with its plotter, whatever it asked for
    started = {"plotter_request": None, "plotter": "c", "resume_stroke": 4, "stats": {}}
    assert [routing.may_draw(started, p, cfg, never) for p in (a, b, c)] == [False, False, True]
    # the G-code of a plotter whose page the drawing does not fit: another one takes it
    made = {"a": {"files": {}, "fits": False, "error": None},
            "b": {"files": {}, "fits": True, "error": None},
            "c": {"error": "out of bounds"}}
    free = {"plotter_request": None, "resume_stroke": None, "stats": {"gcode_for": made}}
    assert [routing.may_draw(free, p, cfg, never) for p in (a, b, c)] == [False, True, False]
    made["b"]["fits"] = False  # fits none unclipped: any that has G-code may
    assert [routing.may_draw(free, p, cfg, never) for p in (a, b, c)] == [True, True, False]


def test_same_tags_stand_in_for_a_gone_plotter():
    cfg = _cfg(when_gone="same_tags")
    a, b, c = cfg.plotters
    named = {"plotter_request": {"plotter": "b"}, "resume_stroke": None, "stats": {}}
    assert [p.name for p in routing.candidates(named["plotter_request"], cfg)] == ["b", "c"]
    assert [routing.may_draw(named, p, cfg, lambda n: False) for p in (a, b, c)] == \
        [False, True, False]
    assert [routing.may_draw(named, p, cfg, lambda n: n == "b") for p in (a, b, c)] == \
        [False, True, True]  # c carries all of b's tags; a does not


def test_gcode_made_per_plotter(tmp_path):
    """One SVG laid out for each plotter's page and profile; a page larger than the
    machine fails for that plotter only."""
    cfg = parse_config({"plotters": [{"name": "huge", "page": {"paper": "a3"}},
                                     {"name": "a4"},
                                     {"name": "a5", "page": {"paper": "a5"}},
                                     {"name": "a5b", "page": {"paper": "a5"}}]})
    svg = tmp_path / "input.svg"
    svg.write_text(_svg(5))
    job = {"origin": None, "plotter_request": None}
    spec = {"overrides": {}, "plotters": routing.gcode_targets(cfg, job),
            **{k: v for k, v in routing.gcode_targets(cfg, job)[0].items()
               if k in ("profile", "page", "vector")}}
    paths, stats = stages.make_gcodes(str(svg), spec, tmp_path)
    made = stats["gcode_for"]
    assert "does not fit profile" in made["huge"]["error"] and "files" not in made["huge"]
    assert made["a4"]["files"]["gcode"] == "plot-a4.gcode" and made["a4"]["fits"]
    assert made["a5"]["files"]["gcode"] == "plot-a5.gcode"
    assert made["a5b"]["files"] == made["a5"]["files"]  # same settings: made once
    assert not (tmp_path / "plot-a5b.gcode").exists()
    assert paths["gcode"].name == "plot-a4.gcode"  # the first plotter that has G-code
    a4 = (tmp_path / "plot-a4.gcode").read_text()
    a5 = (tmp_path / "plot-a5.gcode").read_text()
    assert a4 != a5 and "page" in made["a4"]["files"] and "gcode_stats" in made["a5"]["files"]
    only = parse_config({})  # one plotter: plot.gcode, as before
    target = routing.gcode_targets(only, job)
    assert [t["out"] for t in target] == ["plot.gcode"]


def test_two_workers_never_take_one_job(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    ids = []
    for k in range(40):
        job = store.create(source="upload", name=f"{k}.svg", kind="svg",
                           jobs_dir=tmp_path / "jobs", state="vectorised")
        ids.append(job["id"])
    taken: dict[str, list[int]] = {"a": [], "b": []}

    def worker(name: str) -> None:
        for jid in ids:
            if store.transition(jid, "plotting", expect=["vectorised"], plotter=name):
                taken[name].append(jid)

    threads = [threading.Thread(target=worker, args=(n,)) for n in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken["a"] + taken["b"]) == ids  # every job once, none twice
    assert all(store.get(j)["plotter"] == n for n, js in taken.items() for j in js)


def test_schema_2_database_gains_the_plotter_columns(tmp_path):
    import sqlite3

    db = tmp_path / "jobs.db"
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, "
              "name TEXT NOT NULL, kind TEXT NOT NULL, pipeline TEXT, options TEXT NOT NULL "
              "DEFAULT '{}', state TEXT NOT NULL, stage TEXT, progress REAL NOT NULL DEFAULT 0, "
              "info TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, updated REAL NOT NULL, "
              "finished REAL, error TEXT, dir TEXT NOT NULL, input TEXT, artefacts TEXT NOT "
              "NULL DEFAULT '{}', stats TEXT NOT NULL DEFAULT '{}', claim TEXT, origin TEXT, "
              "archive TEXT, archived INTEGER NOT NULL DEFAULT 0, last_acked_stroke INTEGER, "
              "last_completed_stroke INTEGER, resume_stroke INTEGER, plot_attempts INTEGER "
              "NOT NULL DEFAULT 0, optimise_attempts INTEGER NOT NULL DEFAULT 0)")
    c.execute("INSERT INTO jobs (source, name, kind, state, created, updated, dir) VALUES "
              "('inbox', 'old.png', 'image', 'done', 1, 1, '/x')")
    c.execute("PRAGMA user_version = 2")
    c.commit()
    c.close()
    store = JobStore(db)
    old = store.get(1)
    assert old["name"] == "old.png" and old["plotter"] is None and old["plotter_request"] is None
    new = store.create(source="upload", name="n.svg", kind="svg", jobs_dir=tmp_path,
                       plotter_request={"tags": ["red"]})
    assert store.get(new["id"])["plotter_request"] == {"tags": ["red"]}


# -- in-process: a plotter that is gone --------------------------------------------------
def _ready(d: Daemon, n: int, request: dict | None) -> dict:
    job = d.store.create(source="upload", name="squares.gcode", kind="svg",
                         jobs_dir=d.cfg.jobs_dir, state="queued", plotter_request=request)
    Path(job["dir"]).mkdir(parents=True)
    square_program(n).save(Path(job["dir"]) / "plot.gcode")
    d.store.transition(job["id"], "vectorised", artefacts={"gcode": "plot.gcode"})
    return job


@pytest.mark.parametrize("when_gone", ["wait", "same_tags"])
def test_a_job_bound_to_a_gone_plotter(tmp_path, when_gone):
    cfg = parse_config({
        "state_dir": str(tmp_path / "state"),
        "plotters": [{"name": "a", "sim_speed": "instant"},
                     {"name": "b", "port": str(tmp_path / "no-such-port"), "tags": ["red"],
                      "reconnect_s": 0.1},
                     {"name": "c", "sim_speed": "instant", "tags": ["red", "wide"]}],
        "routing": {"when_gone": when_gone, "gone_after_s": 0.5},
        "api": {"port": free_port()},
    })
    d = Daemon(cfg)
    job = _ready(d, 2, {"plotter": "b"})
    other = _ready(d, 2, None)
    for w in d.plotters.values():
        w.start()
    try:
        done = wait_for(lambda: (j := d.store.get(other["id"]))["state"] == "done" and j, 30)
        assert done["plotter"] == "a"  # the first free plotter; b's absence holds up nothing
        if when_gone == "wait":
            time.sleep(1.5)
            assert d.store.get(job["id"])["state"] == "vectorised"
            st = d.plotters["b"].status()
            assert st["state"] == "waiting_for_plotter" and st["gone"], st
            assert d.plotters["a"].status()["state"] == "idle"
        else:
            got = wait_for(lambda: (j := d.store.get(job["id"]))["state"] == "done" and j, 30)
            assert got["plotter"] == "c"  # it carries all of b's tags; a does not
    finally:
        d.stopping.set()
        for w in d.plotters.values():
            w.join(10)


def test_a_restart_with_other_plotters_reroutes_ready_jobs(tmp_path):
    base = {"state_dir": str(tmp_path / "state"), "api": {"port": free_port()}}
    d = Daemon(parse_config({**base, "plotters": [{"name": "a"}, {"name": "b",
                                                                  "tags": ["red"]}]}))
    red = _ready(d, 1, {"tags": ["red"]})
    old = _ready(d, 1, None)
    d.store.update(old["id"], stats={"gcode_for": {"a": {"files": {}, "error": None}}})
    d.store.close()
    d2 = Daemon(parse_config({**base, "plotters": [{"name": "c"}, {"name": "d"}]}))
    d2.recover()
    failed = d2.store.get(red["id"])
    assert failed["state"] == "failed" and "no plotter has the tags red" in failed["error"]
    assert d2.store.get(old["id"])["state"] == "queued"  # G-code for c and d made anew


def test_ambiguous_and_named_commands(tmp_path):
    from fastapi.testclient import TestClient

    from plotterd.service.api import make_app

    cfg = parse_config({"state_dir": str(tmp_path / "state"), "api": {"port": free_port()},
                        "plotters": [{"name": "a"}, {"name": "b", "tags": ["red"]}]})
    d = Daemon(cfg)
    api = TestClient(make_app(d), base_url=LOCAL)
    try:
        r = api.post("/api/machine/jog", json={"dx": 1, "dy": 1})
        assert r.status_code == 400 and "2 plotters (a, b)" in r.json()["detail"], r.text
        assert api.post("/api/machine/home", params={"plotter": "z"}).status_code == 404
        r = api.post("/api/machine/origin", params={"plotter": "b"})
        assert r.status_code == 200 and r.json()["plotter"]["name"] == "b", r.text
        r = api.post("/api/machine/jog", json={"dx": 10, "dy": 5}, params={"plotter": "b"})
        assert r.json()["plotter"]["position"] == [10, 5]
        assert api.post("/api/pen/continue").status_code == 400  # none waits: which one?
        r = api.post("/plot/pause", params={"plotter": "b"})
        assert r.status_code == 200 and r.json()["name"] == "b"
        st = {p["name"]: p for p in api.get("/api/plotters").json()}
        assert st["b"]["state"] == "paused" and st["a"]["state"] == "idle", st
        assert st["b"]["tags"] == ["red"]
        r = api.post("/jobs", files={"file": ("x.svg", _svg(2).encode())},
                     data={"tags": "blue"})
        assert r.status_code == 400 and "no plotter has the tags blue" in r.text, r.text
        r = api.post("/jobs", files={"file": ("x.svg", _svg(2).encode())},
                     data={"plotter": "b"})
        assert r.status_code == 201 and r.json()["plotter_request"] == {"plotter": "b"}
    finally:
        for w in d.plotters.values():
            if w._sim_link is not None:
                w._sim_link.close()


# -- the real daemon: two plotters, one unplugged mid-plot -------------------------------
def test_two_plotters_one_unplugged_mid_plot_the_other_carries_on(tmp_path):
    port = SimPort(tmp_path / "usb-GRBL_b-if00", "scaled:3")
    port.plug()
    d = DaemonProc(tmp_path, plotters=[
        # b first: the first free plotter gets a job that asks for none
        {"name": "b", "port": str(port.link), "tags": ["red"], "paper": "auto",
         "reconnect_s": 0.2, "page": {"paper": "a5"},
         "timeouts": {"reconnect_attempts": 2, "reconnect_backoff": 0.1, "status": 0.5}},
        {"name": "a", "sim_speed": "instant", "tags": ["black"]},
    ], folders={"reds": {"tags": ["red"]}, "blacks": {"plotter": "a"}})
    d.start()

    def cli(*args):
        return subprocess.run([PLOTTERD, *args, "--url", d.url], capture_output=True,
                              text=True, timeout=60)

    def by_name(name):
        return wait_for(lambda: next((j for j in d.jobs() if j["name"] == name), None), 30)

    def plotters():
        return {p["name"]: p for p in d.http.get("/api/plotters").json()}

    try:
        wait_for(lambda: plotters()["b"]["connected"], 20, what="plotter b to connect")
        assert cli("origin", "--plotter", "b").returncode == 0
        (tmp_path / "long.svg").write_text(_svg(60))
        drop(tmp_path / "long.svg", d.inbox)
        long = by_name("long.svg")
        wait_for(lambda: d.job(long["id"])["state"] == "plotting", 60, what="b plotting")
        (tmp_path / "short.svg").write_text(_svg(3))
        drop(tmp_path / "short.svg", d.inbox)  # b is busy: a takes it
        short = d.wait_job(by_name("short.svg")["id"], ["done"], 60)
        assert short["plotter"] == "a" and d.job(long["id"])["state"] == "plotting"
        assert d.job(long["id"])["plotter"] == "b"
        # each plots the G-code made for it (b's page is A5)
        assert d.job(long["id"])["files"]["gcode"].endswith("plot-b.gcode")
        assert short["files"]["gcode"].endswith("plot-a.gcode")
        wait_for(lambda: (d.job(long["id"])["plot"]["last_completed_stroke"] or -1) >= 2, 60,
                 what="b to draw three strokes")
        port.unplug()  # the cable of b is pulled mid-plot
        cut = d.wait_job(long["id"], ["interrupted"], 30)
        assert POSITION_LOST in cut["error"] and cut["plot"]["resume_stroke"] >= 2, cut
        wait_for(lambda: plotters()["b"]["state"] == "disconnected", 20)
        # a carries on: a job named for it, one for any plotter, and routing by folder
        (tmp_path / "c.svg").write_text(_svg(2))
        (tmp_path / "c.svg.yaml").write_text("plotter: a\n")
        drop(tmp_path / "c.svg.yaml", d.inbox)
        drop(tmp_path / "c.svg", d.inbox)
        drop(tmp_path / "short.svg", d.inbox, "any.svg")
        drop(tmp_path / "short.svg", d.inbox / "blacks", "black.svg")
        drop(tmp_path / "short.svg", d.inbox / "reds", "red.svg")
        (tmp_path / "g.svg").write_text(_svg(2))
        (tmp_path / "g.svg.yaml").write_text("tags: [green]\n")
        drop(tmp_path / "g.svg.yaml", d.inbox)
        drop(tmp_path / "g.svg", d.inbox)
        for name in ("c.svg", "any.svg", "black.svg"):
            job = d.wait_job(by_name(name)["id"], ["done"], 60)
            assert job["plotter"] == "a", job
        green = d.wait_job(by_name("g.svg")["id"], ["failed"], 30)
        assert "no plotter has the tags green" in green["error"], green
        red = wait_for(lambda: (j := by_name("red.svg"))["state"] == "vectorised" and j, 60)
        assert red["plotter_request"] == {"tags": ["red"]}
        time.sleep(1.0)
        assert d.job(red["id"])["state"] == "vectorised"  # waits for b, not drawn on a
        assert d.job(long["id"])["state"] == "interrupted"  # kept, not lost, not moved to a
        out = cli("status")
        assert out.returncode == 0, out.stderr
        assert "plotter b: waiting_for_plotter" in out.stdout, out.stdout  # the red job
        assert "plotter a: idle" in out.stdout, out.stdout
        amb = cli("origin")
        assert amb.returncode == 2 and "say which" in amb.stderr, amb.stderr
        # plugged back: the origin is confirmed on b, its job resumes there, then the red one
        port.speed = "instant"
        port.plug()
        wait_for(lambda: plotters()["b"]["connected"], 20, what="plotter b back")
        assert cli("origin", "--plotter", "b").returncode == 0
        done = d.wait_job(long["id"], ["done"], 60)
        assert done["plotter"] == "b" and done["plot"]["last_completed_stroke"] == 59
        assert d.wait_job(red["id"], ["done"], 60)["plotter"] == "b"
    finally:
        port.unplug()
        d.stop()
