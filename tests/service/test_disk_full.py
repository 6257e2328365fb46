"""A full disk fails the job that hit it with a clear error; its record and the daemon stay.

The jobs' folder is a small file system of its own (tmpfs, mounted for the test: needs
root, skipped otherwise), filled until the job's outputs no longer fit."""

from __future__ import annotations

import os
import subprocess

import pytest

from .daemon_proc import DaemonProc, drop
from .helpers import DATA


@pytest.fixture
def small_jobs_disk(tmp_path):
    jobs = tmp_path / "state" / "jobs"
    jobs.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(jobs)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")
    yield jobs
    subprocess.run(["umount", "-l", str(jobs)], check=False)


def _fill(folder, leave: int):
    """A file taking all but ``leave`` bytes of ``folder``'s file system."""
    st = os.statvfs(folder)
    filler = folder / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


@pytest.mark.slow
def test_a_full_disk_fails_the_job_with_a_clear_error(tmp_path, small_jobs_disk):
    d = DaemonProc(tmp_path).start()
    try:
        filler = _fill(small_jobs_disk, leave=24 * 1024)  # the input fits, its outputs do not
        drop(DATA / "camera_small.png", d.inbox, "full.png")
        job = d.wait_states(1, timeout=120)[0]
        assert job["state"] == "failed" and "out of disk space" in job["error"], job["error"]
        assert d.http.get("/health").status_code == 200  # the daemon is still there
        filler.unlink()  # space again: the next job goes through
        drop(DATA / "camera_small.png", d.inbox, "after.png")
        jobs = d.wait_states(2, timeout=180)
        assert {j["name"]: j["state"] for j in jobs} == {"full.png": "failed",
                                                         "after.png": "done"}
    finally:
        d.stop()
