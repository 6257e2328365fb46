"""Where the bundled pipelines and firmware profiles live, editable or installed.

The source tree's top-level ``pipelines/`` and ``firmware_profiles/`` are the source of
truth. A wheel cannot hold files outside its packages, so ``setup.py`` copies them into
``plotterd/_bundled/<name>/`` at build time; a source checkout (editable install) has no
``_bundled`` folder and reads the top-level folders directly.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED = ("pipelines", "firmware_profiles")


def bundled_dir(name: str) -> Path:
    """The folder of the bundled ``name`` (``pipelines`` or ``firmware_profiles``)."""
    if name not in BUNDLED:
        raise ValueError(f"no bundled folder {name!r}")
    installed = PACKAGE_DIR / "_bundled" / name
    return installed if installed.is_dir() else PACKAGE_DIR.parent / name
