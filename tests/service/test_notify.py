from __future__ import annotations

import io
import logging
import socket

import pytest

from plotterd.service.logs import setup_logging
from plotterd.service.notify import sd_notify, watchdog_interval


def test_sd_notify_datagram(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sd_notify("READY=1")
        assert s.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sd_notify("READY=1")


def test_watchdog_interval(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None


@pytest.fixture
def restore_logging():
    root = logging.getLogger("plotterd")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    root.propagate = saved[2]


def test_journal_and_human_log_formats(monkeypatch, restore_logging):
    buf = io.StringIO()
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    setup_logging("info", buf)
    log = logging.getLogger("plotterd.test")
    log.warning("two\nlines")
    log.debug("hidden")
    assert buf.getvalue() == "<4>plotterd.test: two\n<4>lines\n"
    monkeypatch.delenv("JOURNAL_STREAM")
    buf = io.StringIO()
    setup_logging("debug", buf)
    log.error("boom")
    line = buf.getvalue()
    assert line[:2] == "20" and "ERROR" in line and line.endswith("plotterd.test: boom\n")
