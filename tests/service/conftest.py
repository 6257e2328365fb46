from __future__ import annotations

import pytest

from plotterd.service.config import parse_config

from .daemon_proc import DaemonProc
from .helpers import free_port


@pytest.fixture
def cfg(tmp_path):
    return parse_config({
        "state_dir": str(tmp_path / "state"),
        "pipeline": "tiny",
        "intake": {"stable_s": 0.0, "scan_interval_s": 0.2},
        "api": {"port": free_port()},
    })


@pytest.fixture
def daemon(tmp_path):
    """The real daemon process in dry-run, with its inbox and API (see daemon_proc)."""
    d = DaemonProc(tmp_path).start()
    yield d
    d.stop()
