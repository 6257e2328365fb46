from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading

import pytest

from plotterd.service.store import SCHEMA_VERSION, JobStore, StoreError


def _new(store, tmp_path, **kw):
    args = dict(source="inbox", name="a.png", kind="image", jobs_dir=tmp_path / "jobs",
                pipeline="tiny", state="queued")
    args.update(kw)
    return store.create(**args)


def test_schema_and_wal(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    c = sqlite3.connect(tmp_path / "jobs.db")
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.commit()
    c.close()
    store.close()
    with pytest.raises(StoreError, match="newer"):
        JobStore(tmp_path / "jobs.db")


def test_create_transition_and_events(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    job = _new(store, tmp_path, state="claiming", claim=[("/in/a.png", "{dir}/input.png")])
    assert job["dir"] == str(tmp_path / "jobs" / str(job["id"]))
    assert job["claim"] == [["/in/a.png", f"{job['dir']}/input.png"]]
    assert store.transition(job["id"], "queued", expect=["claiming"], claim=None)
    assert not store.transition(job["id"], "optimising", expect=["claiming"])  # CAS fails
    store.progress(job["id"], "optimise", 1.7, {"loss": 0.5})
    j = store.get(job["id"])
    assert (j["state"], j["progress"], j["info"], j["claim"]) == ("queued", 1.0,
                                                                  {"loss": 0.5}, None)
    assert store.transition(job["id"], "failed", message="boom")
    j = store.get(job["id"])
    assert j["error"] == "boom" and j["finished"] is not None
    assert [e["state"] for e in store.events(job["id"])] == ["claiming", "queued", "failed"]
    assert store.counts() == {"failed": 1}
    assert store.get(999) is None


def test_claim_next_is_exclusive_across_threads(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    ids = [_new(store, tmp_path)["id"] for _ in range(30)]
    taken: list[int] = []
    lock = threading.Lock()

    def worker():
        while (job := store.claim_next("queued", "optimising")) is not None:
            with lock:
                taken.append(job["id"])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == ids  # every job once, none twice
    assert store.counts() == {"optimising": 30}


def test_another_process_writes_progress(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    job = _new(store, tmp_path)
    code = (
        "import sys; from plotterd.service.store import JobStore; "
        "s = JobStore(sys.argv[1]); s.progress(int(sys.argv[2]), 'optimise', 0.25, {'loss': 1})"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "jobs.db"), str(job["id"])],
                   check=True)
    j = store.get(job["id"])
    assert (j["stage"], j["progress"], j["info"]) == ("optimise", 0.25, {"loss": 1})


def test_rollback_on_error(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    job = _new(store, tmp_path)
    with pytest.raises(RuntimeError):
        with store.transaction() as c:
            c.execute("UPDATE jobs SET state = 'done' WHERE id = ?", (job["id"],))
            raise RuntimeError("midway")
    assert store.get(job["id"])["state"] == "queued"


def test_connections_of_finished_threads_are_closed(tmp_path):
    # the API's thread pool retires idle threads and starts new ones: over months each
    # must not leave its connection (three open files in WAL mode) behind
    import os

    store = JobStore(tmp_path / "jobs.db")
    _new(store, tmp_path)

    def read():
        assert store.counts() == {"queued": 1}

    read()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(40):
        t = threading.Thread(target=read)
        t.start()
        t.join()
    assert len(os.listdir("/proc/self/fd")) - before < 10
    store.close()
