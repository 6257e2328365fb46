"""Shared helpers of the service tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
LOCAL = "http://127.0.0.1:8765"  # a test client's base URL: a Host the daemon answers to
PLOTTERD = str(Path(sys.executable).with_name("plotterd"))  # the installed console script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class SimPort:
    """`plotterd sim` on a pty behind a /dev/serial/by-id-like link (what udev makes):
    ``plug`` starts it, ``unplug`` pulls the cable (the link goes, the simulator stops)."""

    def __init__(self, link: Path, speed: str = "instant"):
        self.link, self.speed = link, speed
        self.proc: subprocess.Popen | None = None

    def plug(self) -> None:
        self.proc = subprocess.Popen([PLOTTERD, "sim", "--speed", self.speed],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        pty = self.proc.stdout.readline().strip()
        assert pty.startswith("/dev/"), pty
        self.link.symlink_to(pty)

    def unplug(self) -> None:
        self.link.unlink(missing_ok=True)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


class SilentServer:
    """A TCP server that accepts connections and never answers: a network camera that hung
    (``url`` is the stream address to give ``camera.source``)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/stream.mjpg"
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()
