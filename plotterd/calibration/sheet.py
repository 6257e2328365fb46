"""The calibration sheet: registration marks and, for each pen, swatches of known geometry.

Everything is laid out in page millimetres (origin at the paper's top-left corner, y down)
inside one box, the *sheet*, whose four corners hold ArUco markers (``cv2.aruco``'s 4x4
dictionary) drawn by the plotter itself: their black cells are filled by hatching 0.8 nib
apart, their quiet zone is left white. Between the marker bands each pen gets one row of two
strips::

    hatch 0 deg at 1 .. 6 nib spacing (7) | solid | single lines 0 deg
    hatch 90 deg at 1 .. 6 nib spacing (7) | dots  | single lines 90 deg

A swatch is ``SWATCH_MM`` square; its *window* (where a photo is read) keeps away from its
edges and spans a whole number of line periods across the lines, so a pen of any width
covers exactly ``min(1, w / s)`` of it (Murray-Davies coverage), whatever the lines' phase.
The gaps between swatches are bare paper, listed for the photo's flat-field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import vpype as vp

from plotterd import atomic
from plotterd.errors import ConfigError, InputError
from plotterd.pen import FittedPen, PenModel
from plotterd.vector.layout import PX_PER_MM

__all__ = ["LAYOUT_VERSION", "SPACINGS_NIB", "Sheet", "make_sheet", "read_layout",
           "sheet_paths", "write_sheet"]

LAYOUT_VERSION = 1
ARUCO_DICTIONARY = "DICT_4X4_50"
MARKER_IDS = (0, 1, 2, 3)  # top-left, top-right, bottom-right, bottom-left of the sheet
MARKER_CELLS = 6  # 4x4 data bits inside a one-cell black border
CELL_MM = 2.0
QUIET_MM = 2.0  # one cell of white around each marker, as ArUco needs
MARKER_MM = MARKER_CELLS * CELL_MM
MARKER_FILL_NIB = 0.8  # hatch spacing inside a marker's black cells, in nib widths

SPACINGS_NIB = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0)
SOLID_NIB = 0.4  # the solid patch's hatch spacing: far below a nib, so any pen closes it
SWATCH_MM = 10.0
GAP_MM = 4.0  # bare paper between swatches (the flat-field reads its middle)
ROW_GAP_MM = 6.0  # between pens' rows
WINDOW_MM = 6.0  # the swatch's read window, 2 mm inside its edges
LINES_PITCH_MM = 3.0  # the single lines' spacing
DOTS_PITCH_MM = 2.0
# a dot is a stroke this long: SVG readers drop zero-length paths; the fit counts its area
DOT_LENGTH_MM = 0.05
PAPER_INSET_MM = 1.0  # a flat-field region keeps this far from any ink
NIB_RANGE_MM = (0.1, 1.0)  # the widest spacing (6 nib) must fit the 6 mm window


@dataclass
class Sheet:
    """A calibration sheet: the ``document`` to plot (vpype px, one layer per pen) and its
    ``layout`` (JSON-able, page mm), which :func:`plotterd.calibration.fit_pen` reads."""

    document: vp.Document
    layout: dict[str, Any]


def make_sheet(pens: Sequence[PenModel], paper_mm: tuple[float, float] = (148.0, 210.0),
               margin_mm: float = 10.0, names: Sequence[str] | None = None) -> Sheet:
    """A sheet with one row per pen, at the paper's top-left margin.

    Raises ConfigError when a pen's nib is outside what the sheet can measure, or when the
    sheet does not fit the paper inside the margin (it says how big it is)."""
    pens = list(pens)
    if not pens:
        raise ConfigError("pens", "a calibration sheet needs at least one pen")
    names = list(names) if names is not None else [_pen_name(p, i) for i, p in enumerate(pens)]
    if len(names) != len(pens):
        raise ConfigError("names", f"{len(names)} names for {len(pens)} pens")
    for name, pen in zip(names, pens, strict=True):
        if not NIB_RANGE_MM[0] <= pen.nib_mm <= NIB_RANGE_MM[1]:
            raise ConfigError("pen.nib_mm", f"{name}: the sheet measures nibs of "
                              f"{NIB_RANGE_MM[0]}..{NIB_RANGE_MM[1]} mm, got {pen.nib_mm:g}")
    x0 = y0 = float(margin_mm)
    width, height = _sheet_size(len(pens))
    _check_fits(paper_mm, margin_mm, width, height)
    markers = _markers((x0, y0, x0 + width, y0 + height), pens[0].nib_mm)
    rows = []
    top = y0 + MARKER_MM + GAP_MM
    for r, (pen, name) in enumerate(zip(pens, names, strict=True)):
        rows.append(_pen_row(r, name, pen, x0, top))
        top += 2 * SWATCH_MM + GAP_MM + ROW_GAP_MM
    layout = {
        "version": LAYOUT_VERSION,
        "paper_mm": [float(paper_mm[0]), float(paper_mm[1])],
        "sheet_mm": [x0, y0, x0 + width, y0 + height],
        "markers": {"dictionary": ARUCO_DICTIONARY, "cell_mm": CELL_MM, "size_mm": MARKER_MM,
                    "quiet_mm": QUIET_MM, "items": markers},
        "paper_regions": _paper_regions(x0, y0, width, len(pens)),
        "rows": rows,
    }
    return Sheet(_document(layout, pens), layout)


def _pen_name(pen: PenModel, index: int) -> str:
    return pen.name if isinstance(pen, FittedPen) else f"pen{index + 1}"


def _pen_colour(pen: PenModel) -> str:
    return pen.colour if isinstance(pen, FittedPen) else "#000000"


def _columns() -> int:
    return len(SPACINGS_NIB) + 2


def _sheet_size(n_pens: int) -> tuple[float, float]:
    width = _columns() * SWATCH_MM + (_columns() - 1) * GAP_MM
    rows = n_pens * (2 * SWATCH_MM + GAP_MM) + (n_pens - 1) * ROW_GAP_MM
    return width, 2 * (MARKER_MM + GAP_MM) + rows


def _check_fits(paper_mm: tuple[float, float], margin_mm: float, width: float,
                height: float) -> None:
    room = (paper_mm[0] - 2 * margin_mm, paper_mm[1] - 2 * margin_mm)
    if width > room[0] + 1e-9 or height > room[1] + 1e-9:
        raise ConfigError("paper", f"the calibration sheet is {width:g} x {height:g} mm, the "
                          f"paper {paper_mm[0]:g} x {paper_mm[1]:g} mm leaves {room[0]:g} x "
                          f"{room[1]:g} mm inside {margin_mm:g} mm margins; use larger paper, "
                          "smaller margins or fewer pens")


# --- markers ---------------------------------------------------------------------------


def marker_cells(marker_id: int) -> np.ndarray:
    """The marker's 6x6 cells, True where black (border included)."""
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, ARUCO_DICTIONARY))
    img = cv2.aruco.generateImageMarker(dictionary, marker_id, MARKER_CELLS, borderBits=1)
    return img < 128


def _markers(box: tuple[float, float, float, float], nib_mm: float) -> list[dict[str, Any]]:
    x0, y0, x1, y1 = box
    origins = [(x0, y0), (x1 - MARKER_MM, y0), (x1 - MARKER_MM, y1 - MARKER_MM),
               (x0, y1 - MARKER_MM)]
    out = []
    for marker_id, (mx, my) in zip(MARKER_IDS, origins, strict=True):
        corners = [[mx, my], [mx + MARKER_MM, my], [mx + MARKER_MM, my + MARKER_MM],
                   [mx, my + MARKER_MM]]  # ArUco's order: clockwise from the top-left
        out.append({"id": marker_id, "corners_mm": corners,
                    "paths": _marker_paths(marker_cells(marker_id), mx, my, nib_mm)})
    return out


def _marker_paths(cells: np.ndarray, mx: float, my: float, nib_mm: float) -> list[list]:
    """Each run of black cells along a cell row, filled by one zigzag of horizontal lines
    whose ink reaches the cells' edges (centre lines half a nib inside)."""
    paths = []
    for r, row in enumerate(cells):
        c = 0
        while c < len(row):
            if not row[c]:
                c += 1
                continue
            end = c
            while end < len(row) and row[end]:
                end += 1
            rect = (mx + c * CELL_MM, my + r * CELL_MM, mx + end * CELL_MM,
                    my + (r + 1) * CELL_MM)
            paths.append(_zigzag(rect, MARKER_FILL_NIB * nib_mm, nib_mm))
            c = end
    return paths


def _offsets(length: float, spacing: float, nib_mm: float) -> list[float]:
    """Centre-line offsets from half a nib to ``length`` - half a nib, at most ``spacing``
    apart, the last one on the far edge (so the ink fills the band exactly)."""
    span = max(0.0, length - nib_mm)
    n = max(1, math.ceil(span / spacing - 1e-9))
    return [nib_mm / 2 + span * k / n for k in range(n + 1)]


def _exact_offsets(length: float, spacing: float, nib_mm: float) -> list[float]:
    """Centre-line offsets exactly ``spacing`` apart, as many as fit between half a nib from
    either edge, centred in ``length``."""
    n = math.floor((length - nib_mm) / spacing + 1e-9)
    first = (length - n * spacing) / 2
    return [first + k * spacing for k in range(n + 1)]


def _zigzag(rect: tuple[float, float, float, float], spacing: float, nib_mm: float,
            exact: bool = False) -> list:
    """One boustrophedon polyline of horizontal lines filling ``rect`` (page mm): lines
    exactly ``spacing`` apart if ``exact``, else at most ``spacing`` apart and reaching both
    edges."""
    x0, y0, x1, y1 = rect
    a, b = x0 + nib_mm / 2, x1 - nib_mm / 2
    offsets = (_exact_offsets if exact else _offsets)(y1 - y0, spacing, nib_mm)
    pts = []
    for k, dy in enumerate(offsets):
        ends = [[a, y0 + dy], [b, y0 + dy]]
        pts.extend(ends if k % 2 == 0 else ends[::-1])
    return pts


# --- swatches --------------------------------------------------------------------------


def _pen_row(row: int, name: str, pen: PenModel, x0: float, top: float) -> dict[str, Any]:
    nib = float(pen.nib_mm)
    swatches = []
    for strip, direction in enumerate((0.0, 90.0)):
        y = top + strip * (SWATCH_MM + GAP_MM)
        for col, k in enumerate(SPACINGS_NIB):
            swatches.append(_hatch(row, "hatch", _rect(x0, y, col), k * nib, direction, nib))
        extra = _rect(x0, y, len(SPACINGS_NIB))
        if direction == 0.0:
            swatches.append(_hatch(row, "solid", extra, SOLID_NIB * nib, 0.0, nib))
        else:
            swatches.append(_dots(row, extra, nib))
        swatches.append(_hatch(row, "lines", _rect(x0, y, len(SPACINGS_NIB) + 1),
                               LINES_PITCH_MM, direction, nib))
    return {"row": row, "pen": name, "layer": row + 1, "nib_mm": nib,
            "colour": _pen_colour(pen), "swatches": swatches}


def _rect(x0: float, y: float, col: int) -> tuple[float, float, float, float]:
    x = x0 + col * (SWATCH_MM + GAP_MM)
    return (x, y, x + SWATCH_MM, y + SWATCH_MM)


def _centred(lo: float, hi: float, length: float) -> tuple[float, float]:
    mid = (lo + hi) / 2
    return (mid - length / 2, mid + length / 2)


def _periods(spacing: float) -> float:
    """The longest whole number of periods that fits the window."""
    return max(1, math.floor(WINDOW_MM / spacing + 1e-9)) * spacing


def _hatch(row: int, kind: str, rect: tuple[float, float, float, float], spacing: float,
           direction: float, nib: float) -> dict[str, Any]:
    """Parallel lines ``spacing`` apart, along x (0 deg) or y (90 deg)."""
    x0, y0, x1, y1 = rect
    if kind == "lines":  # single lines, each its own stroke, centred in the swatch
        offsets = [SWATCH_MM / 2 + d * spacing for d in (-1, 0, 1)]
        along = (nib / 2, SWATCH_MM - nib / 2)
        paths = [[[x0 + along[0], y0 + o], [x0 + along[1], y0 + o]] for o in offsets]
    else:
        paths = [_zigzag(rect, spacing, nib, exact=True)]
    across = _centred(y0, y1, _periods(spacing))
    window_along = _centred(x0, x1, WINDOW_MM)
    window = [window_along[0], across[0], window_along[1], across[1]]
    if direction == 90.0:
        paths = [_transpose(p, rect) for p in paths]
        window = _transpose([window[:2], window[2:]], rect)
        window = [window[0][0], window[0][1], window[1][0], window[1][1]]
    return {"id": f"{row}:{kind}:{direction:g}:{spacing / nib:.3g}", "kind": kind,
            "rect_mm": list(rect), "window_mm": window, "spacing_mm": spacing,
            "direction_deg": direction, "nib_mm": nib,
            "lines": [[*p[0], *p[-1]] for p in paths] if kind == "lines" else [],
            "paths": paths}


def _transpose(points: list, rect: tuple[float, float, float, float]) -> list:
    """Mirror about the swatch's diagonal: lines along x become lines along y."""
    x0, y0 = rect[0], rect[1]
    return [[x0 + (y - y0), y0 + (x - x0)] for x, y in points]


def _dots(row: int, rect: tuple[float, float, float, float], nib: float) -> dict[str, Any]:
    """A grid of dots (``DOT_LENGTH_MM`` strokes along x) ``DOTS_PITCH_MM`` apart."""
    x0, y0, x1, y1 = rect
    n = round(SWATCH_MM / DOTS_PITCH_MM)
    centres = [(k + 0.5) * DOTS_PITCH_MM for k in range(n)]
    dots = [[x0 + cx, y0 + cy] for cy in centres for cx in centres]
    wx, wy = _centred(x0, x1, _periods(DOTS_PITCH_MM)), _centred(y0, y1, _periods(DOTS_PITCH_MM))
    return {"id": f"{row}:dots:0:{DOTS_PITCH_MM / nib:.3g}", "kind": "dots",
            "rect_mm": list(rect), "window_mm": [wx[0], wy[0], wx[1], wy[1]],
            "spacing_mm": DOTS_PITCH_MM, "direction_deg": 0.0, "nib_mm": nib,
            "dot_length_mm": DOT_LENGTH_MM, "dots": dots,
            "paths": [[[x - DOT_LENGTH_MM / 2, y], [x + DOT_LENGTH_MM / 2, y]] for x, y in dots]}


def _paper_regions(x0: float, y0: float, width: float, n_pens: int) -> list[list[float]]:
    """Bare paper, each region ``PAPER_INSET_MM`` away from any ink: the gaps between the
    swatches, between strips and rows, and between the markers."""
    regions = []
    inset = PAPER_INSET_MM
    regions.append([x0 + MARKER_MM + inset, y0 + inset, x0 + width - MARKER_MM - inset,
                    y0 + MARKER_MM + GAP_MM - inset])
    top = y0 + MARKER_MM + GAP_MM
    for _ in range(n_pens):
        for strip in range(2):
            y = top + strip * (SWATCH_MM + GAP_MM)
            for col in range(_columns() - 1):
                gx = _rect(x0, y, col)[2]
                regions.append([gx + inset, y, gx + GAP_MM - inset, y + SWATCH_MM])
        mid = top + SWATCH_MM
        regions.append([x0, mid + inset, x0 + width, mid + GAP_MM - inset])
        top += 2 * SWATCH_MM + GAP_MM + ROW_GAP_MM
    bottom = top - ROW_GAP_MM
    regions.append([x0 + MARKER_MM + inset, bottom + inset, x0 + width - MARKER_MM - inset,
                    bottom + GAP_MM + MARKER_MM - inset])
    return regions


# --- output ----------------------------------------------------------------------------


def sheet_paths(layout: dict[str, Any], row: int) -> list[np.ndarray]:
    """Every polyline (page mm, (n, 2)) the pen of ``row`` draws; row 0 draws the markers."""
    paths = [p for s in layout["rows"][row]["swatches"] for p in s["paths"]]
    if row == 0:
        paths += [p for m in layout["markers"]["items"] for p in m["paths"]]
    return [np.asarray(p, dtype=np.float64) for p in paths]


def _document(layout: dict[str, Any], pens: Sequence[PenModel]) -> vp.Document:
    w, h = layout["paper_mm"]
    doc = vp.Document(page_size=(w * PX_PER_MM, h * PX_PER_MM))
    for row in layout["rows"]:
        r = row["row"]
        lines = [(p[:, 0] + 1j * p[:, 1]) * PX_PER_MM for p in sheet_paths(layout, r)]
        layer_id = row["layer"]
        doc.add(vp.LineCollection(lines), layer_id)
        layer = doc.layers[layer_id]
        layer.set_property(vp.METADATA_FIELD_NAME, row["pen"])
        layer.set_property(vp.METADATA_FIELD_COLOR, vp.Color(row["colour"]))
        layer.set_property(vp.METADATA_FIELD_PEN_WIDTH, pens[r].nib_mm * PX_PER_MM)
    return doc


def write_sheet(sheet: Sheet, out_dir: str | Path) -> dict[str, Path]:
    """Write ``sheet.svg`` (mm, one layer per pen) and ``sheet.json`` (the layout) into
    ``out_dir``; returns {"svg", "json"}."""
    out = Path(out_dir)
    svg, layout = out / "sheet.svg", out / "sheet.json"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(svg) as tmp, tmp.open("w") as f:
            vp.write_svg(f, sheet.document, source_string="plotterd calibration sheet",
                         set_date=False)
        atomic.write_text(layout, json.dumps(sheet.layout, indent=1) + "\n")
    except OSError as e:
        raise InputError(f"{out}: cannot write the calibration sheet: {e}") from e
    return {"svg": svg, "json": layout}


def read_layout(path: str | Path) -> dict[str, Any]:
    """A ``sheet.json`` (or the folder holding it), checked for its version."""
    p = Path(path)
    if p.is_dir():
        p = p / "sheet.json"
    try:
        layout = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: no calibration sheet layout here (write one with "
                         "`plotterd pens sheet`)") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: unreadable sheet layout: {e}") from None
    if not isinstance(layout, dict) or layout.get("version") != LAYOUT_VERSION:
        raise InputError(f"{p}: not a version-{LAYOUT_VERSION} calibration sheet layout")
    return layout
