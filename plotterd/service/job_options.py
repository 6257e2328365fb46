"""What a job may ask for by itself (an upload's form, a sidecar file), as opposed to what
the daemon's own config sets.

* Its pipeline is a *name*, looked up in the pipeline folders: a path (anything with a
  ``/`` or a ``.yaml`` suffix, which ``resolve_pipeline`` would open as a file) is refused,
  so no job can make the daemon read a file of its choosing.
* Its overrides may lower the pipeline's safety limits but never raise them:
  ``max_input_megapixels`` and ``iterations`` at most the pipeline's own (with the folder's
  ``set`` keys), and ``allow_random_weights`` not turned on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from plotterd.errors import ConfigError
from plotterd.pipeline import load_pipeline

PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
AT_MOST = ("max_input_megapixels", "iterations")  # a job may lower these, never raise them


def pipeline_name_error(name: Any) -> str | None:
    """Why ``name`` is not a pipeline name a job may give, or None."""
    if not isinstance(name, str) or not PIPELINE_NAME.fullmatch(name):
        return ("pipeline: must be a pipeline's name (letters, digits, '-' and '_'), "
                "not a path")
    return None


def override_error(pipeline: str, overrides: dict[str, Any], base: dict[str, Any] | None,
                   dirs: list[Path]) -> str | None:
    """Why a job's ``overrides`` raise a limit of ``pipeline`` (with the folder's ``base``
    overrides merged), or None. An unknown pipeline is reported as such."""
    asked = [k for k in (*AT_MOST, "allow_random_weights") if k in overrides]
    if not asked:
        return None
    try:
        limits = load_pipeline(pipeline, overrides=base or None, search_dirs=tuple(dirs))
    except ConfigError as e:
        return f"pipeline {pipeline!r}: {e.message}"
    for key in AT_MOST:
        value, cap = overrides.get(key), getattr(limits, key)
        if key in overrides and not (_is_num(value) and value <= cap):
            return f"options: {key} may only be lowered (the pipeline's is {cap}, got {value!r})"
    if overrides.get("allow_random_weights", False) is not False and not \
            limits.allow_random_weights:
        return "options: allow_random_weights cannot be turned on by a job"
    return None


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x
