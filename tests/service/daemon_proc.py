"""Start and stop the real daemon process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from .helpers import free_port, wait_for


class DaemonProc:
    def __init__(self, root: Path, **overrides):
        self.root = root
        self.port = free_port()
        self.state = root / "state"
        self.inbox = self.state / "inbox"
        cfg = {
            "state_dir": str(self.state),
            "pipeline": "tiny",
            "plotter": {"port": None, "sim_speed": "instant"},
            "optimiser": {"threads": 1, "checkpoint_every": 5},
            "intake": {"stable_s": 0.2, "scan_interval_s": 0.2},
            "api": {"port": self.port},
        }
        if "plotters" in overrides:  # several plotters: no single `plotter:` section
            del cfg["plotter"]
        for k, v in overrides.items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k] = {**cfg[k], **v}
            else:
                cfg[k] = v
        self.config = root / "plotterd.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = root / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=10, trust_env=False)

    def start(self, timeout: float = 60) -> DaemonProc:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("JOURNAL_STREAM", None)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "plotterd.service", "--config", str(self.config)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
            )

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.logs()}")
            try:
                return self.http.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout, 0.1, "the daemon to answer /health")
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def jobs(self) -> list[dict]:
        return self.http.get("/jobs", params={"limit": 1000}).json()

    def job(self, jid: int) -> dict:
        return self.http.get(f"/jobs/{jid}").json()

    def wait_states(self, n: int, states=("done", "failed", "cancelled"), timeout=90.0):
        """Wait until at least n jobs exist and all of them are in ``states``."""
        def ready():
            js = self.jobs()
            return js if len(js) >= n and all(j["state"] in states for j in js) else None

        try:
            return wait_for(ready, timeout, 0.2, f"{n} jobs in {states}")
        except AssertionError:
            print(self.logs()[-5000:])
            print([(j["id"], j["name"], j["state"], j["error"]) for j in self.jobs()])
            raise

    def wait_job(self, jid: int, states, timeout=60.0) -> dict:
        try:
            return wait_for(lambda: (j := self.job(jid))["state"] in states and j, timeout,
                            0.1, f"job {jid} in {states}")
        except AssertionError:
            print(self.logs()[-5000:])
            raise


def drop(src: Path, inbox: Path, name: str | None = None) -> Path:
    """Copy like a careful client: write a temporary name, then rename into place."""
    inbox.mkdir(parents=True, exist_ok=True)
    dst = inbox / (name or src.name)
    tmp = inbox / (dst.name[:200] + ".part")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)
    return dst


def now() -> float:
    return time.monotonic()
