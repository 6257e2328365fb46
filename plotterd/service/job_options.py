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
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from plotterd.errors import ConfigError
from plotterd.pipeline import Pipeline, resolve_pipeline

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
        limits = _limits(pipeline, base or {}, dirs)
    except ConfigError as e:
        return f"pipeline {pipeline!r}: {e.message}"
    for key in AT_MOST:
        value, cap = overrides.get(key), limits[key]
        if key in overrides and not (_is_num(value) and _is_num(cap) and value <= cap):
            return f"options: {key} may only be lowered (the pipeline's is {cap}, got {value!r})"
    if overrides.get("allow_random_weights", False) is not False and \
            limits["allow_random_weights"] is not True:
        return "options: allow_random_weights cannot be turned on by a job"
    return None


def _limits(pipeline: str, base: dict[str, Any], dirs: list[Path]) -> dict[str, Any]:
    """The pipeline's own limits with the folder's ``base`` keys over them (read from its
    file, not a full load: a full load would also need the pens folder for its pen)."""
    path = resolve_pipeline(pipeline, tuple(dirs))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError("pipeline", f"cannot read it: {type(e).__name__}") from e
    if not isinstance(raw, dict):
        raise ConfigError("pipeline", "must be a mapping of keys")
    defaults = {f.name: f.default for f in fields(Pipeline)}
    return {k: base.get(k, raw.get(k, defaults[k]))
            for k in (*AT_MOST, "allow_random_weights")}


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x
