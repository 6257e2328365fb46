"""Retention: old finished jobs' folders, inbox/done and rotated logs are pruned by age and
by total size; job records, unfinished jobs and inbox/failed are kept."""

from __future__ import annotations

import os
import time

import pytest

from plotterd.service.retention import prune, rotate_logs
from plotterd.service.store import JobStore

DAY = 86400.0


@pytest.fixture
def store(cfg):
    s = JobStore(cfg.db_path)
    yield s
    s.close()


def _job(cfg, store, state: str, age_days: float, size: int = 1000) -> dict:
    job = store.create(source="upload", name=f"{state}.png", kind="image",
                       jobs_dir=cfg.jobs_dir, state="queued")
    folder = cfg.jobs_dir / str(job["id"])
    folder.mkdir(parents=True)
    (folder / "render.png").write_bytes(b"x" * size)
    store.update(job["id"], artefacts={"render": "render.png"})
    if state != "queued":
        store.transition(job["id"], state)
        store.update(job["id"], finished=time.time() - age_days * DAY)
    return store.get(job["id"])


def _file(path, age_days: float, size: int = 1000):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"y" * size)
    t = time.time() - age_days * DAY
    os.utime(path, (t, t))
    return path


def test_days_prune_old_finished_jobs_and_files_only(cfg, store):
    cfg.retention.days = 30
    old = {s: _job(cfg, store, s, 40) for s in ("done", "failed", "cancelled", "interrupted")}
    queued = _job(cfg, store, "queued", 0)
    store.update(queued["id"], created=time.time() - 40 * DAY)
    recent = _job(cfg, store, "done", 5)
    old_done = _file(cfg.inbox / "done" / "sub" / "a.png", 40)
    new_done = _file(cfg.inbox / "done" / "b.png", 1)
    failed = _file(cfg.inbox / "failed" / "c.png", 400)
    old_log = _file(cfg.state_dir / "optimiser.log.20200101-000000", 40)
    pruned = prune(cfg, store)
    assert sorted(pruned.jobs) == sorted(old[s]["id"] for s in ("done", "failed", "cancelled"))
    assert set(pruned.files) == {old_done, old_log}
    for s in ("done", "failed", "cancelled"):
        job = store.get(old[s]["id"])  # the record stays, says what happened
        assert job["state"] == s and job["artefacts"] == {}
        assert not os.path.exists(job["dir"])
        assert "folder was removed" in store.events(job["id"])[-1]["message"]
    for job in (old["interrupted"], queued, recent):
        assert os.path.exists(job["dir"]) and store.get(job["id"])["artefacts"]
    assert new_done.exists() and failed.exists()
    assert prune(cfg, store).jobs == []  # nothing left to do


def test_max_gb_prunes_the_oldest_until_under(cfg, store):
    cfg.retention.max_gb = 0.0035  # 3.5 MB
    jobs = [_job(cfg, store, "done", age, size=1_000_000) for age in (9, 3, 1)]
    active = _job(cfg, store, "queued", 0, size=1_000_000)  # counts, never removed
    older = _file(cfg.inbox / "done" / "old.png", 20, size=500_000)
    pruned = prune(cfg, store)
    # 4.5 MB in all: the done file (oldest) and then the oldest job go
    assert pruned.files == [older] and pruned.jobs == [jobs[0]["id"]]
    assert all(os.path.exists(j["dir"]) for j in (*jobs[1:], active))


def test_the_optimiser_log_is_rotated_and_its_copies_bounded(cfg, store):
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    log = cfg.state_dir / "optimiser.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # as the worker holds it
    os.write(fd, b"z" * 2000)
    [copy] = rotate_logs(cfg.state_dir, max_bytes=1000)
    assert copy.read_bytes() == b"z" * 2000 and log.stat().st_size == 0
    os.write(fd, b"after")  # the worker goes on writing at the new end
    os.close(fd)
    assert log.read_bytes() == b"after"
    for i in range(8):
        _file(cfg.state_dir / f"optimiser.log.2020010{i}-000000", 100 - i)
    prune(cfg, store)  # no retention set: the newest 5 copies kept
    assert len(list(cfg.state_dir.glob("optimiser.log.*"))) == 5
