"""Logging to stderr: journald-friendly under systemd, human-readable otherwise.

Under systemd (``JOURNAL_STREAM`` set) each line starts with an ``<N>`` syslog priority,
which journald turns into the entry's priority, and carries no timestamp (journald adds
its own). Otherwise lines carry a local timestamp.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        # every line of a multi-line message keeps the priority
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def under_journal() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM"))


def setup_logging(level: str = "info", stream=None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    if under_journal():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("plotterd")
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    return handler
