"""Stroke sequences as input: QuickDraw's simplified ``.ndjson`` and Sketch-RNN's stroke-3
``.npz``. They are drawings already, so they skip the optimiser and go to the vector stage
as polylines, like an SVG (``vectorise`` reads them through :func:`sequence_document`).

- **QuickDraw** (simplified, one JSON drawing per line): ``{"word": "cat", "countrycode":
  "US", "timestamp": "...", "recognized": true, "key_id": "...", "drawing": [[[x0, x1, ...],
  [y0, y1, ...]], ...]}`` - one ``[xs, ys]`` pair per stroke, 0..255, y down (the raw
  format's third list, times, is accepted and ignored).
- **Sketch-RNN** (``np.savez`` of ``train``/``valid``/``test``): object arrays of int16
  ``(N, 3)`` stroke-3 arrays, rows ``(dx, dy, pen_lifted)``: the pen moves by (dx, dy) from
  the previous point, and ``pen_lifted == 1`` ends the stroke after that point.

``SequenceSource(path, index=k)`` picks drawing k; ``grid=n`` lays drawings k..k+n-1 out in
a grid of equal cells (each scaled to its cell, keeping its aspect). A bad or truncated
file is an InputError naming the file and what is wrong, in one line.

The ``.npz`` object arrays are pickles. ``np.load(allow_pickle=True)`` would run whatever a
file's pickle names, so they are read here with an unpickler that only rebuilds numpy
arrays (an inbox file must not be able to run code).
"""

from __future__ import annotations

import io
import json
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import vpype as vp

from plotterd.errors import ConfigError, InputError

SUFFIXES = (".ndjson", ".npz")
SPLITS = ("train", "valid", "test")
GAP = 0.1  # of a grid cell, on every side


@dataclass(frozen=True)
class SequenceSource:
    path: Path
    index: int = 0
    grid: int | None = None  # lay out this many drawings, from ``index`` on
    split: str = "test"  # Sketch-RNN: which of train / valid / test


Drawing = list[np.ndarray]  # strokes, each (n, 2) float: x right, y down


def is_sequence_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


def source_with_options(path: str | Path, options: dict[str, Any] | None) -> SequenceSource:
    """A sequence file with the choices a job's options (a daemon sidecar) make: ``index``,
    ``grid`` and ``split``; anything else is refused naming the key."""
    opts = dict(options or {})
    for key in sorted(set(opts) - {"index", "grid", "split"}):
        raise ConfigError(key, "not a stroke-sequence option (index, grid, split)")

    def count(key: str, lo: int) -> int | None:
        v = opts.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(key, f"must be an integer >= {lo}, got {v!r}")
        return v

    split = opts.get("split", "test")
    if split not in SPLITS:
        raise ConfigError("split", f"{split!r} is not one of {', '.join(SPLITS)}")
    return SequenceSource(Path(path), index=count("index", 0) or 0, grid=count("grid", 1),
                          split=split)


# ---- QuickDraw ----

def _quickdraw_drawing(obj: Any, where: str) -> Drawing:
    if not isinstance(obj, dict) or "drawing" not in obj:
        raise InputError(f"{where}: not a QuickDraw drawing (no 'drawing' key)")
    strokes = obj["drawing"]
    if not isinstance(strokes, list) or not strokes:
        raise InputError(f"{where}: 'drawing' must be a non-empty list of strokes")
    out = []
    for i, s in enumerate(strokes):
        if not (isinstance(s, list) and len(s) in (2, 3) and all(isinstance(a, list) for a in s)):
            raise InputError(f"{where}: stroke {i} must be [xs, ys] (or [xs, ys, ts])")
        xs, ys = s[0], s[1]
        if len(xs) != len(ys) or not xs:
            raise InputError(f"{where}: stroke {i} has {len(xs)} x and {len(ys)} y values")
        try:
            xy = np.array([xs, ys], dtype=np.float64).T
        except (TypeError, ValueError) as e:
            raise InputError(f"{where}: stroke {i} has values that are not numbers") from e
        if not np.isfinite(xy).all():
            raise InputError(f"{where}: stroke {i} has values that are not finite")
        out.append(xy)
    return out


def read_quickdraw(path: str | Path) -> list[Drawing]:
    """Every drawing of a QuickDraw ``.ndjson`` file (all lines are checked)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read QuickDraw .ndjson: {e}") from e
    drawings = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            cut = " (truncated?)" if n == len(text.splitlines()) else ""
            raise InputError(f"{path}: line {n} is not JSON{cut}: {e.msg}") from e
        drawings.append(_quickdraw_drawing(obj, f"{path}: line {n}"))
    if not drawings:
        raise InputError(f"{path}: no drawings in the file")
    return drawings


# ---- Sketch-RNN ----

def stroke3_to_lines(s3: np.ndarray) -> Drawing:
    """Stroke-3 rows (dx, dy, pen_lifted) -> absolute polylines (Sketch-RNN's own
    ``strokes_to_lines``: a point ends its stroke when its pen_lifted is 1)."""
    pts = np.cumsum(np.asarray(s3[:, :2], dtype=np.float64), axis=0)
    ends = np.flatnonzero(np.asarray(s3[:, 2]) == 1)
    out, start = [], 0
    for e in [*ends.tolist(), len(s3) - 1]:
        if e >= start:
            out.append(pts[start:e + 1])
        start = e + 1
    return out


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _NumpyOnly(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):]
        import importlib

        return getattr(importlib.import_module(module), name)


def _read_npy(data: bytes) -> np.ndarray:
    f = io.BytesIO(data)
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = fmt.read_array_header_2_0(f)
    if dtype.hasobject:
        arr = _NumpyOnly(f, encoding="latin1").load()
        if not isinstance(arr, np.ndarray):
            raise ValueError("the pickle is not an array")
        return arr
    arr = np.frombuffer(f.read(), dtype=dtype, count=math.prod(shape))
    return arr.reshape(shape, order="F" if fortran else "C")


def read_sketchrnn(path: str | Path, split: str = "test") -> list[Drawing]:
    """The drawings of one split of a Sketch-RNN ``.npz``."""
    path = Path(path)
    if split not in SPLITS:
        raise InputError(f"{path}: split {split!r} is not one of {', '.join(SPLITS)}")
    try:
        with zipfile.ZipFile(path) as z:
            names = {n[:-4] if n.endswith(".npy") else n: n for n in z.namelist()}
            if split not in names:
                raise InputError(f"{path}: no {split!r} array (has: "
                                 f"{', '.join(sorted(names)) or 'nothing'})")
            arr = _read_npy(z.read(names[split]))
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file") from e
    except (zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{path}: not a readable .npz (truncated?): {e}") from e
    except (ValueError, pickle.UnpicklingError, OSError, zipfile.LargeZipFile) as e:
        raise InputError(f"{path}: {split}: not Sketch-RNN stroke-3 arrays: {e}") from e
    items = list(arr) if arr.dtype.hasobject else [arr]
    drawings = []
    for i, s3 in enumerate(items):
        s3 = np.asarray(s3)
        if s3.ndim != 2 or s3.shape[1] != 3 or not len(s3) or s3.dtype.kind not in "iuf":
            raise InputError(f"{path}: {split}[{i}] is not an (N, 3) stroke-3 array "
                             f"(shape {s3.shape}, {s3.dtype})")
        if not np.isfinite(s3.astype(np.float64)).all():
            raise InputError(f"{path}: {split}[{i}] has values that are not finite")
        drawings.append(stroke3_to_lines(s3))
    if not drawings:
        raise InputError(f"{path}: {split} holds no drawings")
    return drawings


# ---- selection and layout ----

def select(source: SequenceSource) -> list[Drawing]:
    path = Path(source.path)
    if path.suffix.lower() == ".npz":
        drawings = read_sketchrnn(path, source.split)
    elif path.suffix.lower() == ".ndjson":
        drawings = read_quickdraw(path)
    else:
        raise InputError(f"{path}: expected a QuickDraw .ndjson or a Sketch-RNN .npz")
    n = len(drawings)
    count = 1 if source.grid is None else source.grid
    if count < 1:
        raise InputError(f"{path}: grid must be at least 1, got {count}")
    if not 0 <= source.index < n:
        raise InputError(f"{path}: no drawing {source.index} (the file has {n}: 0..{n - 1})")
    return drawings[source.index:source.index + count]


def _bounds(d: Drawing) -> tuple[float, float, float, float]:
    pts = np.concatenate(d)
    return (*pts.min(axis=0), *pts.max(axis=0))


def sequence_document(source: SequenceSource) -> vp.Document:
    """The selected drawing(s) as one vpype layer of polylines, in the drawing's units
    (one drawing: its own bounds are the extent; a grid: the page is the grid of cells)."""
    drawings = select(source)
    lines: list[np.ndarray] = []
    if source.grid is None:
        for s in drawings[0]:
            lines.append(_complex(s))
        doc = vp.Document(vp.LineCollection(lines))
        return doc
    cols = math.ceil(math.sqrt(len(drawings)))
    rows = math.ceil(len(drawings) / cols)
    cell = 1.0
    for k, d in enumerate(drawings):
        x0, y0, x1, y1 = _bounds(d)
        w, h = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
        scale = cell * (1 - 2 * GAP) / max(w, h)
        r, c = divmod(k, cols)
        ox = c * cell + (cell - w * scale) / 2 - x0 * scale
        oy = r * cell + (cell - h * scale) / 2 - y0 * scale
        for s in d:
            lines.append(_complex(s * scale + (ox, oy)))
    doc = vp.Document(vp.LineCollection(lines))
    doc.page_size = (cols * cell, rows * cell)
    return doc


def _complex(xy: np.ndarray) -> np.ndarray:
    if len(xy) == 1:  # a one-point stroke is a dot: down and up at that spot
        xy = np.repeat(xy, 2, axis=0)
    return xy[:, 0] + 1j * xy[:, 1]
