"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half.

Every stage writes its outputs this way; the temporary name is unique and hidden, so two
writers of one path cannot trample each other's temporary file and the inbox watcher
ignores it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is renamed over
    ``path``, on an exception it is removed. ``suffix`` ends the temporary name, for writers
    that choose the format by extension (``cv2.imwrite``)."""
    path = Path(path)
    # not mkstemp: its 0600 mode would outlive the rename; the writer creates the file with
    # the usual umask-derived mode instead
    tmp = path.with_name(f".{path.name[:100]}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
