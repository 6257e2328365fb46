"""The durable job store: one SQLite database (WAL), one connection per thread.

Job life::

    claiming -> queued -> optimising -> vectorised -> plotting -> done
                   \\__________\\_____________\\___________\\-> failed | cancelled | interrupted

``claiming`` is the crash-safe intake step: the row (with the file moves it intends) is
committed *before* any file is renamed, so a restart can finish or undo every claim
(:mod:`plotterd.service.intake`). ``interrupted`` is a plot that stopped part-way (daemon
restart, lost port); it keeps the last acknowledged / completed stroke and can be resumed.

The optimiser subprocess writes its progress here directly (SQLite handles the two
processes; WAL keeps readers from blocking the writer).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from plotterd.errors import PlotterdError

# 2: the ``settings`` table (daemon state that outlives a restart: the paper)
# 3: several plotters: ``plotter_request`` (what the job asked for), ``plotter`` (assigned)
SCHEMA_VERSION = 3

STATES = (
    "claiming", "queued", "optimising", "vectorised", "plotting",
    "done", "failed", "cancelled", "interrupted",
)
TERMINAL = ("done", "failed", "cancelled")
SOURCES = ("inbox", "upload", "camera")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    name TEXT NOT NULL,             -- original file name
    kind TEXT NOT NULL,             -- image | svg
    pipeline TEXT,                  -- pipeline name or path (images only)
    options TEXT NOT NULL DEFAULT '{}',   -- pipeline overrides (sidecar / upload), JSON
    state TEXT NOT NULL,
    stage TEXT,                     -- stage of the progress below
    progress REAL NOT NULL DEFAULT 0,
    info TEXT NOT NULL DEFAULT '{}',      -- progress info, JSON
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL,
    error TEXT,
    dir TEXT NOT NULL,              -- the job's directory
    input TEXT,                     -- input file name inside dir
    artefacts TEXT NOT NULL DEFAULT '{}', -- name -> file name inside dir, JSON
    stats TEXT NOT NULL DEFAULT '{}',     -- JSON
    claim TEXT,                     -- pending file moves [[src, dst], ...], JSON, NULL = none
    origin TEXT,                    -- where the original came from (inbox path)
    archive TEXT,                   -- where the original goes (inbox/done|failed/...)
    archived INTEGER NOT NULL DEFAULT 0,
    last_acked_stroke INTEGER,
    last_completed_stroke INTEGER,
    resume_stroke INTEGER,          -- start stroke of the next plot (resume), NULL = start
    plot_attempts INTEGER NOT NULL DEFAULT 0,
    optimise_attempts INTEGER NOT NULL DEFAULT 0,
    plotter_request TEXT,           -- what the job asked for: {"plotter": NAME} | {"tags": [..]}
    plotter TEXT                    -- the plotter that took it (plots / plotted it)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job INTEGER NOT NULL,
    at REAL NOT NULL,
    state TEXT NOT NULL,
    message TEXT
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,            -- JSON
    updated REAL NOT NULL
);
"""

_JSON_FIELDS = ("options", "info", "artefacts", "stats", "claim", "plotter_request")
# columns added after schema 1, with their type: added to older databases on opening
_ADDED_COLUMNS = (("plotter_request", "TEXT"), ("plotter", "TEXT"))


class StoreError(PlotterdError):
    pass


class JobStore:
    """Thread-safe access to the job database (each thread gets its own connection)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: dict[threading.Thread, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        with self.transaction() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: database schema {version} is newer than this plotterd "
                    f"({SCHEMA_VERSION})"
                )
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            have = {r[1] for r in c.execute("PRAGMA table_info(jobs)").fetchall()}
            for col, kind in _ADDED_COLUMNS:  # an older database: same rows, new columns
                if col not in have:
                    c.execute(f"ALTER TABLE jobs ADD COLUMN {col} {kind}")
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- connections -------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL is durable across an application crash (kill -9) in WAL mode;
                # only an OS crash can lose the last transactions.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: cannot open job database: {e}") from e
            self._local.conn = conn
            with self._lock:
                # the API's thread pool retires idle threads: close what they left behind,
                # or a daemon running for months runs out of file handles
                for t in [t for t in self._all if not t.is_alive()]:
                    self._all.pop(t).close()
                self._all[threading.current_thread()] = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        else:
            c.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for c in self._all.values():
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()

    # -- rows --------------------------------------------------------------------------
    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        d = dict(row)
        for k in _JSON_FIELDS:
            if d.get(k) is not None:
                d[k] = json.loads(d[k])
        return d

    def get(self, job_id: int) -> dict[str, Any] | None:
        if not -(2**63) <= job_id < 2**63:  # no such row, and SQLite cannot take the number
            return None
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._row(row)

    def list(self, states: Iterable[str] | None = None, limit: int | None = None,
             newest_first: bool = True) -> list[dict[str, Any]]:
        q = "SELECT * FROM jobs"
        args: list[Any] = []
        if states is not None:
            states = list(states)
            q += f" WHERE state IN ({','.join('?' * len(states))})"
            args += states
        q += " ORDER BY id " + ("DESC" if newest_first else "ASC")
        if limit is not None:
            q += " LIMIT ?"
            args.append(int(limit))
        return [self._row(r) for r in self._conn().execute(q, args).fetchall()]

    def events(self, job_id: int) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT at, state, message FROM events WHERE job = ? ORDER BY id", (job_id,)
        ).fetchall()
        return [dict(r) for r in rows]

    def setting(self, key: str, default: Any = None) -> Any:
        """A daemon setting kept across restarts (JSON value), ``default`` when unset."""
        row = self._conn().execute("SELECT value FROM settings WHERE key = ?",
                                   (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_setting(self, key: str, value: Any) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO settings (key, value, updated) VALUES (?, ?, ?) "
                      "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                      "updated = excluded.updated", (key, json.dumps(value), time.time()))

    def counts(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {r[0]: r[1] for r in rows.fetchall()}

    # -- writes ------------------------------------------------------------------------
    def create(self, *, source: str, name: str, kind: str, jobs_dir: str | Path,
               pipeline: str | None = None, options: dict | None = None,
               claim: list[tuple[str, str]] | None = None, origin: str | None = None,
               input_name: str | None = None, state: str = "claiming",
               error: str | None = None, archive: str | None = None,
               plotter_request: dict | None = None) -> dict[str, Any]:
        """Insert a job. Its directory is ``jobs_dir/<id>`` (not created here)."""
        if source not in SOURCES:
            raise ValueError(f"bad source {source!r}")
        if state not in STATES:
            raise ValueError(f"bad state {state!r}")
        now = time.time()
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO jobs (source, name, kind, pipeline, options, state, created, "
                "updated, dir, input, claim, origin, error, archive, finished, "
                "plotter_request) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?)",
                (source, name, kind, pipeline, json.dumps(options or {}), state, now, now,
                 input_name, None if claim is None else json.dumps(claim), origin, error,
                 archive, now if state in TERMINAL else None,
                 None if not plotter_request else json.dumps(plotter_request)),
            )
            job_id = cur.lastrowid
            job_dir = str(Path(jobs_dir) / str(job_id))
            if claim is not None:
                # the moves were planned before the id was known: put the id in
                claim = [(s, d.replace("{dir}", job_dir)) for s, d in claim]
                c.execute("UPDATE jobs SET claim = ? WHERE id = ?", (json.dumps(claim), job_id))
            c.execute("UPDATE jobs SET dir = ? WHERE id = ?", (job_dir, job_id))
            c.execute("INSERT INTO events (job, at, state, message) VALUES (?, ?, ?, ?)",
                      (job_id, now, state, error))
        return self.get(job_id)  # type: ignore[return-value]

    def update(self, job_id: int, **fields: Any) -> None:
        if not fields:
            return
        with self.transaction() as c:
            self._update(c, job_id, fields)

    def _update(self, c: sqlite3.Connection, job_id: int, fields: dict[str, Any]) -> None:
        fields = dict(fields)
        fields["updated"] = time.time()
        for k in _JSON_FIELDS:
            if k in fields and fields[k] is not None:
                fields[k] = json.dumps(fields[k])
        cols = ", ".join(f"{k} = ?" for k in fields)
        c.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def transition(self, job_id: int, to: str, *, expect: Iterable[str] | None = None,
                   message: str | None = None, **fields: Any) -> bool:
        """Move a job to state ``to`` if it is in one of ``expect`` (compare-and-set);
        returns whether it moved. Terminal states stamp ``finished``."""
        if to not in STATES:
            raise ValueError(f"bad state {to!r}")
        with self.transaction() as c:
            row = c.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return False
            if expect is not None and row[0] not in tuple(expect):
                return False
            fields["state"] = to
            if to in TERMINAL:
                fields.setdefault("finished", time.time())
            if to == "failed" and message and "error" not in fields:
                fields["error"] = message
            self._update(c, job_id, fields)
            c.execute("INSERT INTO events (job, at, state, message) VALUES (?, ?, ?, ?)",
                      (job_id, time.time(), to, message))
        return True

    def note(self, job_id: int, message: str, **fields: Any) -> None:
        """An event in the job's history (its state unchanged), with ``fields`` updated."""
        with self.transaction() as c:
            row = c.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return
            if fields:
                self._update(c, job_id, fields)
            c.execute("INSERT INTO events (job, at, state, message) VALUES (?, ?, ?, ?)",
                      (job_id, time.time(), row[0], message))

    def progress(self, job_id: int, stage: str, fraction: float,
                 info: dict[str, Any] | None = None, **fields: Any) -> None:
        self.update(job_id, stage=stage, progress=float(max(0.0, min(1.0, fraction))),
                    info=info or {}, **fields)

    def claim_next(self, from_state: str, to_state: str) -> dict[str, Any] | None:
        """Atomically take the oldest job in ``from_state`` and move it to ``to_state``."""
        with self.transaction() as c:
            row = c.execute("SELECT id FROM jobs WHERE state = ? ORDER BY id LIMIT 1",
                            (from_state,)).fetchone()
            if row is None:
                return None
            now = time.time()
            c.execute("UPDATE jobs SET state = ?, updated = ? WHERE id = ?",
                      (to_state, now, row[0]))
            c.execute("INSERT INTO events (job, at, state, message) VALUES (?, ?, ?, NULL)",
                      (row[0], now, to_state))
        return self.get(row[0])
