"""Retention: what a daemon running for months keeps on disk.

Three things grow with every job: the finished jobs' folders (``state_dir/jobs/<id>``), the
originals moved to ``inbox/done`` and the optimiser's log. With ``retention: {days,
max_gb}`` a pass (at start, then hourly) removes whatever of them is older than ``days``,
then the oldest of them while they take more than ``max_gb``. A job whose folder goes keeps
its record (state, error, stats, history) with an event saying so; only finished jobs
(done, failed, cancelled) are touched, never one queued, plotting or interrupted, and
never ``inbox/failed`` (files a person should look at).

The optimiser's log is the worker process's stderr, so no logging handler can rotate it:
each pass copies a log past ``LOG_ROTATE_BYTES`` aside and truncates it in place (the
worker appends, so it goes on writing at the new end). Without retention settings the
newest ``KEEP_ROTATED`` copies are kept.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plotterd.service.config import Config
from plotterd.service.store import TERMINAL, JobStore

log = logging.getLogger("plotterd.retention")

LOG_ROTATE_BYTES = 16 * 1024 * 1024
KEEP_ROTATED = 5
LOGS = ("optimiser.log",)
EVERY_S = 3600.0


LOW_DISK_BYTES = 1024 * 1024


def out_of_disk(e: BaseException, folder: Path | str | None = None) -> bool:
    """``e`` is a write that found the disk (or the user's quota) full. Libraries that wrap
    the OSError keep its text at best (torch's checkpoint writer only says "iostream
    error"), so a ``folder`` whose file system has (almost) no space left counts too."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left on device" in str(e) or "database or disk is full" in str(e):
        return True
    return folder is not None and disk_low(folder)


def disk_low(folder: Path | str) -> bool:
    """Less than ``LOW_DISK_BYTES`` free where ``folder`` is (False if it cannot be told)."""
    try:
        return shutil.disk_usage(folder).free < LOW_DISK_BYTES
    except OSError:
        return False


def disk_full_message(where: Path | str) -> str:
    return (f"out of disk space writing to {where}: free some space, or set "
            "retention: {days, max_gb} in the config so old jobs are pruned")


@dataclass
class Pruned:
    jobs: list[int] = field(default_factory=list)  # whose folders were removed
    files: list[Path] = field(default_factory=list)  # inbox/done files and old logs
    freed: int = 0  # bytes


@dataclass
class _Item:
    when: float  # finished (a job) or modified (a file)
    size: int
    path: Path
    job: dict[str, Any] | None = None


def rotate_logs(state_dir: Path, max_bytes: int = LOG_ROTATE_BYTES) -> list[Path]:
    """Copy each log past ``max_bytes`` to ``NAME.YYYYmmdd-HHMMSS`` and empty it."""
    rotated = []
    for name in LOGS:
        path = state_dir / name
        try:
            if path.stat().st_size <= max_bytes:
                continue
            dst = path.with_name(f"{name}.{time.strftime('%Y%m%d-%H%M%S')}")
            shutil.copyfile(path, dst)
            os.truncate(path, 0)
        except FileNotFoundError:
            continue
        rotated.append(dst)
    return rotated


def prune(cfg: Config, store: JobStore, now: float | None = None) -> Pruned:
    """One retention pass (see the module doc); returns what it removed."""
    now = time.time() if now is None else now
    rotate_logs(cfg.state_dir)
    ret = cfg.retention
    items = sorted(_candidates(cfg, store), key=lambda i: i.when)
    doomed: list[_Item] = []
    if ret.days is not None:
        doomed = [i for i in items if i.when < now - ret.days * 86400]
    if ret.max_gb is not None:
        total = sum(i.size for i in items) + _active_size(cfg, store)
        total -= sum(i.size for i in doomed)
        for item in items:
            if total <= ret.max_gb * 1e9:
                break
            if item not in doomed:
                doomed.append(item)
                total -= item.size
    if ret.days is None and ret.max_gb is None:  # only keep the log copies bounded
        copies = [i for i in items if i.job is None and _is_rotated_log(i.path)]
        doomed = copies[:max(0, len(copies) - KEEP_ROTATED)]
    out = Pruned()
    for item in doomed:
        if _remove(item, store):
            out.freed += item.size
            (out.jobs.append(item.job["id"]) if item.job else out.files.append(item.path))
    if doomed:
        log.info("retention: removed %d job folder(s) and %d file(s), %.1f MB",
                 len(out.jobs), len(out.files), out.freed / 1e6)
    return out


def _candidates(cfg: Config, store: JobStore) -> list[_Item]:
    items = []
    for job in store.list(states=TERMINAL, newest_first=False):
        folder = Path(job["dir"])
        if job["dir"] and folder.is_dir():
            items.append(_Item(job["finished"] or job["updated"], _size(folder), folder, job))
    done = cfg.inbox / "done"
    files = [p for p in done.rglob("*") if p.is_file()] if done.is_dir() else []
    files += [p for p in cfg.state_dir.glob("*.log.*") if _is_rotated_log(p)]
    for path in files:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        items.append(_Item(st.st_mtime, st.st_size, path))
    return items


def _active_size(cfg: Config, store: JobStore) -> int:
    """What the jobs not finished yet take: counted towards max_gb, never removed."""
    return sum(_size(Path(j["dir"])) for j in store.list()
               if j["state"] not in TERMINAL and j["dir"] and Path(j["dir"]).is_dir())


def _is_rotated_log(path: Path) -> bool:
    return any(path.name.startswith(name + ".") for name in LOGS)


def _size(folder: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def _remove(item: _Item, store: JobStore) -> bool:
    if item.job is None:
        try:
            item.path.unlink()
        except FileNotFoundError:
            return False
        return True
    job = store.get(item.job["id"])
    if job is None or job["state"] not in TERMINAL:  # replotted since it was listed
        return False
    shutil.rmtree(item.path, ignore_errors=True)
    store.note(job["id"], "retention: the job's folder was removed (its record is kept)",
               artefacts={})
    return True
