from __future__ import annotations

import pytest

from plotterd.service.config import parse_config

from .helpers import free_port


@pytest.fixture
def cfg(tmp_path):
    return parse_config({
        "state_dir": str(tmp_path / "state"),
        "pipeline": "tiny",
        "intake": {"stable_s": 0.0, "scan_interval_s": 0.2},
        "api": {"port": free_port()},
    })
