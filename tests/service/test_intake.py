from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plotterd.service import stages
from plotterd.service.intake import (
    Inbox,
    StabilityTracker,
    fit_name,
    is_ignored,
    move_file,
    safe_suffix,
)
from plotterd.service.store import JobStore

from .helpers import DATA


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def inbox(cfg):
    clock = Clock()
    store = JobStore(cfg.db_path)
    ib = Inbox(cfg, store, folder_pipeline=lambda n: stages.pipeline_for_folder(n),
               clock=clock)
    ib.cfg.intake.stable_s = 1.0
    ib.tracker.stable_s = 1.0
    ib.clock_ = clock
    return ib


def _drop(inbox, name, src=DATA / "camera_small.png", sub=None):
    folder = inbox.root / sub if sub else inbox.root
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / name
    shutil.copy(src, dst)
    return dst


@pytest.mark.parametrize("name, ignored", [
    (".hidden.png", True), ("a.png.tmp", True), ("a.part", True), ("a.crdownload", True),
    ("a.png~", True), (".a.png.swp", True), ("a.swp", True), ("a.png", False),
    ("-leading dash.png", False), ("ünïcødé.jpg", False),
])
def test_ignored_names(name, ignored):
    assert is_ignored(name) is ignored


def test_stability_needs_two_equal_checks_apart():
    tr = StabilityTracker(1.0)
    st = os.stat(DATA / "camera_small.png")
    p = Path("x")
    assert not tr.check(p, st, 0.0)     # first sight
    assert not tr.check(p, st, 0.5)     # same, too soon
    assert tr.check(p, st, 1.0)         # same, 1 s later
    grown = os.stat_result((*st[:6], st.st_size + 1, *st[7:]))
    assert not tr.check(p, grown, 2.0)  # changed: the clock restarts
    assert not tr.check(p, grown, 2.5)
    assert tr.check(p, grown, 3.1)


def test_file_taken_once_stable(inbox):
    f = _drop(inbox, "photo one.png")
    assert inbox.scan() == []              # first sight
    inbox.clock_.t += 0.5
    assert inbox.scan() == []              # not yet stable_s
    with open(f, "ab") as fh:              # still being written
        fh.write(b"\0")
    inbox.clock_.t += 1.0
    assert inbox.scan() == []
    inbox.clock_.t += 1.0
    [jid] = inbox.scan()
    job = inbox.store.get(jid)
    assert job["state"] == "queued" and job["name"] == "photo one.png"
    assert job["pipeline"] == "tiny" and job["claim"] is None
    assert not f.exists()
    assert (Path(job["dir"]) / "input.png").stat().st_size == (DATA / "camera_small.png"
                                                              ).stat().st_size + 1
    inbox.clock_.t += 5
    assert inbox.scan() == []              # nothing twice


def _take(inbox):
    inbox.scan()
    inbox.clock_.t += 2
    return inbox.scan()


def test_ignores_temporaries_and_reserved(inbox):
    _drop(inbox, ".x.png")
    _drop(inbox, "x.png.part")
    _drop(inbox, "a.png", sub="done")
    _drop(inbox, "deep.png", sub="sub/deeper")
    assert _take(inbox) == []


def test_subfolders_and_sidecar(inbox):
    inbox.cfg.pipelines["mine"] = "lines-mse"
    _drop(inbox, "a.png", sub="mine")
    _drop(inbox, "b.png", sub="points-ssmse")     # named like a pipeline
    _drop(inbox, "c.png", sub="whatever")         # neither: the default
    _drop(inbox, "p.png", sub="points")           # the one pipeline points-*
    _drop(inbox, "d.png")
    (inbox.root / "d.yaml").write_text("pipeline: points-ssmse\niterations: 5\n")
    ids = _take(inbox)
    jobs = {inbox.store.get(i)["name"]: inbox.store.get(i) for i in ids}
    assert jobs["a.png"]["pipeline"] == "lines-mse"
    assert jobs["b.png"]["pipeline"] == "points-ssmse"
    assert jobs["c.png"]["pipeline"] == "tiny"
    assert jobs["p.png"]["pipeline"] == "points-ssmse"
    assert jobs["d.png"]["pipeline"] == "points-ssmse"
    assert jobs["d.png"]["options"] == {"iterations": 5}
    assert (Path(jobs["d.png"]["dir"]) / "options.yaml").exists()
    assert not (inbox.root / "d.yaml").exists()


def test_bad_sidecar_fails_the_job(inbox):
    _drop(inbox, "e.png")
    (inbox.root / "e.png.yaml").write_text("[1, 2")
    [jid] = _take(inbox)
    job = inbox.store.get(jid)
    assert job["state"] == "failed" and "sidecar e.png.yaml" in job["error"]
    assert (inbox.root / "failed" / "e.png").exists()
    assert "sidecar" in (inbox.root / "failed" / "e.png.reason.txt").read_text()


@pytest.mark.parametrize("sidecar, why", [
    ("pipeline: {secret}\n", "not a path"),
    ("pipeline: ../../secret\n", "not a path"),
    ("pipeline: tiny.yaml\n", "not a path"),
    ("iterations: 31\n", "iterations may only be lowered"),
    ("max_input_megapixels: 1000\n", "max_input_megapixels may only be lowered"),
    ("allow_random_weights: true\n", "allow_random_weights cannot be turned on"),
])
def test_sidecar_gives_pipeline_names_and_only_lowers_limits(inbox, tmp_path, sidecar, why):
    secret = tmp_path / "secret.yaml"
    secret.write_text("password: hunter2\n: {broken")
    _drop(inbox, "e.png")
    (inbox.root / "e.png.yaml").write_text(sidecar.format(secret=secret))
    [jid] = _take(inbox)
    job = inbox.store.get(jid)
    assert job["state"] == "failed" and why in job["error"], job["error"]
    assert "hunter2" not in job["error"]


def test_sidecar_may_lower_the_limits(inbox):
    _drop(inbox, "e.png")
    (inbox.root / "e.png.yaml").write_text(
        "pipeline: tiny\niterations: 30\nmax_input_megapixels: 2\nallow_random_weights: false\n")
    [jid] = _take(inbox)
    job = inbox.store.get(jid)
    assert job["state"] == "queued", job["error"]
    assert job["options"]["iterations"] == 30


def test_svg_kind_and_odd_names(inbox):
    long = "x" * 250 + ".svg"
    _drop(inbox, long, src=DATA / "camera_small.png")
    _drop(inbox, "--rm -rf ünï cødé.png")
    ids = _take(inbox)
    jobs = [inbox.store.get(i) for i in ids]
    kinds = {j["name"]: (j["kind"], j["input"], j["pipeline"]) for j in jobs}
    assert kinds[long] == ("svg", "input.svg", None)
    assert kinds["--rm -rf ünï cødé.png"] == ("image", "input.png", "tiny")
    # a long name still gets its reason file beside it
    job = next(j for j in jobs if j["name"] == long)
    inbox.store.transition(job["id"], "failed", message="bad svg")
    inbox.archive(inbox.store.get(job["id"]))
    reasons = list((inbox.root / "failed").glob("*.reason.txt"))
    assert len(reasons) == 1 and len(reasons[0].name.encode()) <= 255
    assert fit_name("a.png", ".reason.txt") == "a.png.reason.txt"


def test_symlink_out_of_inbox_fails(inbox, tmp_path):
    outside = tmp_path / "secret.png"
    shutil.copy(DATA / "camera_small.png", outside)
    (inbox.root / "link.png").symlink_to(outside)
    [jid] = _take(inbox)
    job = inbox.store.get(jid)
    assert job["state"] == "failed" and "symlink pointing out of the inbox" in job["error"]
    assert (inbox.root / "failed" / "link.png").is_symlink()
    assert "symlink" in (inbox.root / "failed" / "link.png.reason.txt").read_text()
    assert outside.exists()


def test_archive_done_and_failed(inbox):
    _drop(inbox, "a.png")
    _drop(inbox, "b.png")
    a, b = (inbox.store.get(i) for i in _take(inbox))
    inbox.store.transition(a["id"], "done")
    inbox.store.transition(b["id"], "failed", message="not an image: b.png")
    inbox.archive_pending()
    assert (inbox.root / "done" / "a.png").read_bytes() == (DATA / "camera_small.png"
                                                            ).read_bytes()
    assert (inbox.root / "failed" / "b.png.reason.txt").read_text() == "not an image: b.png\n"
    assert inbox.store.get(a["id"])["archived"] == 1
    # the same name again does not overwrite the first original
    _drop(inbox, "a.png")
    [c] = _take(inbox)
    inbox.store.transition(c, "done")
    inbox.archive_pending()
    assert (inbox.root / "done" / f"a-job{c}.png").exists()


def test_reconcile_replays_interrupted_claims(inbox):
    # crash after the row was committed, before the rename
    f1 = _drop(inbox, "one.png")
    j1 = inbox.store.create(source="inbox", name="one.png", kind="image",
                            jobs_dir=inbox.cfg.jobs_dir, pipeline="tiny",
                            claim=[(str(f1), "{dir}/input.png")], input_name="input.png")
    # crash after the rename, before the state change
    f2 = _drop(inbox, "two.png")
    j2 = inbox.store.create(source="inbox", name="two.png", kind="image",
                            jobs_dir=inbox.cfg.jobs_dir, pipeline="tiny",
                            claim=[(str(f2), "{dir}/input.png")], input_name="input.png")
    move_file(f2, Path(j2["dir"]) / "input.png")
    # a claim whose file is gone entirely
    j3 = inbox.store.create(source="inbox", name="three.png", kind="image",
                            jobs_dir=inbox.cfg.jobs_dir, pipeline="tiny",
                            claim=[(str(inbox.root / "three.png"), "{dir}/input.png")],
                            input_name="input.png")
    inbox.reconcile()
    for j in (j1, j2):
        job = inbox.store.get(j["id"])
        assert job["state"] == "queued" and (Path(job["dir"]) / "input.png").exists()
    assert inbox.store.get(j3["id"])["state"] == "failed"
    assert not f1.exists() and not f2.exists()
    assert _take(inbox) == []  # nothing left to take twice
    assert len(inbox.store.list()) == 3


def test_cross_device_move_is_idempotent(tmp_path):
    src = tmp_path / "a.png"
    shutil.copy(DATA / "camera_small.png", src)
    dst = tmp_path / "job" / "input.png"
    dst.parent.mkdir()
    shutil.copy(src, dst)  # as if the copy finished and the unlink did not
    move_file(src, dst)
    assert dst.exists() and not src.exists()
    other = tmp_path / "b.png"
    other.write_bytes(b"a different new file with the same name")
    move_file(other, dst)  # different content: left alone for a new job
    assert other.exists()


def _watch(tmp_path, mode):
    import threading

    from plotterd.service.intake import InboxWatcher

    wake = threading.Event()
    w = InboxWatcher(tmp_path, wake, mode)
    kind = w.start()
    try:
        (tmp_path / "new.png").write_bytes(b"x")
        assert wake.wait(5), f"{kind} watcher did not wake"
    finally:
        w.stop()
    return kind


def test_watchers_wake_the_scan(tmp_path):
    assert _watch(tmp_path, "polling") == "polling"
    (tmp_path / "new.png").unlink()
    assert _watch(tmp_path, "auto") == "inotify"


def test_inotify_failure_falls_back_to_polling(tmp_path, monkeypatch):
    import errno

    from watchdog.observers import Observer

    def no_watches(self, *a, **kw):  # what an exhausted fs.inotify.max_user_watches gives
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(Observer, "schedule", no_watches)
    assert _watch(tmp_path, "auto") == "polling"


_names = st.text(
    alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)),
    min_size=1, max_size=120,
).filter(lambda n: len(n.encode()) <= 255 and n not in (".", ".."))


@settings(max_examples=200, deadline=None)
@given(_names)
def test_any_file_name_gets_a_safe_job_input_and_reason_file(name):
    assert len(fit_name(name, ".reason.txt").encode()) <= 255
    assert len(fit_name(name * 3, ".reason.txt").encode()) <= 255
    suf = safe_suffix(name)
    assert suf == "" or (suf.startswith(".") and suf[1:].isascii() and suf[1:].isalnum())


def test_a_file_that_cannot_be_moved_keeps_one_claim_and_does_not_stop_a_restart(inbox,
                                                                                 caplog):
    # the job folder cannot be made (a read-only or full disk does the same): the claim
    # is retried on later scans with the same row, not a new row every scan
    f = _drop(inbox, "stuck.png")
    jobs = inbox.cfg.jobs_dir
    shutil.rmtree(jobs)
    jobs.write_text("not a folder")
    with caplog.at_level(logging.DEBUG, logger="plotterd.intake"):
        for _ in range(3):
            assert _take(inbox) == []
            inbox.clock_.t += 2
    errors = [r for r in caplog.records if r.getMessage().startswith("cannot take")]
    assert [r.levelno for r in errors] == [logging.ERROR] + [logging.DEBUG] * 2  # once
    [row] = inbox.store.list()
    assert row["state"] == "claiming" and f.exists()
    inbox.reconcile()  # a restart while it still fails logs it and goes on
    assert len(inbox.store.list()) == 1
    jobs.unlink()
    jobs.mkdir()
    assert _take(inbox) == [row["id"]]
    job = inbox.store.get(row["id"])
    assert job["state"] == "queued" and (Path(job["dir"]) / "input.png").exists()
    assert not f.exists() and len(inbox.store.list()) == 1


def test_a_failing_inbox_scan_is_logged_once_until_it_works_again(cfg, caplog):
    import threading

    from plotterd.service.daemon import Daemon

    from .helpers import wait_for

    d = Daemon(cfg)
    shutil.rmtree(cfg.inbox)
    cfg.inbox.write_text("not a folder")  # every scan fails the same way
    loop = threading.Thread(target=d._intake_loop)
    with caplog.at_level(logging.INFO, logger="plotterd.daemon"):
        loop.start()
        try:
            time.sleep(1.5)  # several scans (scan_interval_s 0.2)
            cfg.inbox.unlink()
            cfg.inbox.mkdir()
            wait_for(lambda: any("works again" in r.getMessage() for r in caplog.records), 10)
        finally:
            d.stopping.set()
            d.wake_intake.set()
            loop.join(10)
            d.store.close()
    failed = [r for r in caplog.records if r.getMessage() == "inbox scan failed"]
    assert len(failed) == 1
