"""Page polylines -> G-code: firmware profiles, the bounds-checked writer, the time model.

Entry points (the daemon and the CLI use exactly these)::

    profile = load_profile("grbl-servo", search_dirs=())      # or a path to a YAML file
    program = write_program(document, profile)                # vpype Document -> Program
    result = make_gcode("strokes.json", profile=profile, page=PageSpec(), options=None)
    paths = result.save("out.gcode")   # out.gcode, out.svg, out.stats.json
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import vpype as vp

from plotterd import atomic
from plotterd.draw.strokes import Strokes
from plotterd.errors import PlotterdError
from plotterd.gcode.profile import (
    PenSpec,
    Profile,
    bundled_dir,
    list_profiles,
    load_profile,
    parse_profile,
    to_vpype_gcode_toml,
)
from plotterd.gcode.program import GLine, Program
from plotterd.gcode.writer import program_stats, to_machine, write_program
from plotterd.progress import Progress, ProgressCallback
from plotterd.vector import PX_PER_MM, PageSpec, VectorOptions, vectorise

__all__ = [
    "GLine",
    "GcodeResult",
    "PenSpec",
    "Profile",
    "Program",
    "bundled_dir",
    "list_profiles",
    "load_profile",
    "make_gcode",
    "parse_profile",
    "to_machine",
    "to_vpype_gcode_toml",
    "write_program",
]


@dataclass
class GcodeResult:
    program: Program
    document: vp.Document  # page px, in plotting order
    stats: dict[str, Any]
    profile: Profile | None = None  # what the program was written for (per-pen programs)

    def pen_programs(self) -> list[tuple[int, str, Program]]:
        """One complete program per pen (layer id, colour, Program): each draws only that
        pen's layer, in the same page placement, bounds-checked like the whole."""
        if self.profile is None:
            raise PlotterdError("per-pen programs need the profile the result was made for")
        out = []
        for lid in sorted(self.document.layers):
            layer = self.document.layers[lid]
            if not len(layer):
                continue
            doc = self.document.clone()
            doc.layers[lid] = layer
            color = layer.property(vp.METADATA_FIELD_COLOR)
            out.append((lid, color.as_rgb_hex() if color is not None else "#000000",
                        write_program(doc, self.profile)))
        return out

    def save_per_pen(self, out_gcode: str | Path) -> list[Path]:
        """Write OUT-penN-COLOUR.gcode (and its .json) per pen, as vpype-gcode and
        DrawingBotV3 users are used to (one file, one pen, no pen-change pause)."""
        out = Path(out_gcode)
        names = _pen_names(self.stats)
        paths = []
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            for lid, hex_color, program in self.pen_programs():
                colour = _slug(names.get(lid) or hex_color)
                path = out.with_name(f"{out.stem}-pen{lid}-{colour}{out.suffix or '.gcode'}")
                program.save(path)
                paths.append(path)
        except OSError as e:
            raise PlotterdError(f"{out}: cannot write the per-pen G-code: {e}") from e
        return paths

    def save(self, out_gcode: str | Path, travel_layer: bool = False) -> dict[str, Path]:
        """Write OUT.gcode, OUT.svg (plotting order, a layer per pen; pen-up travel in its own
        layer if ``travel_layer``), OUT.stats.json and OUT.gcode.json (the program's
        metadata, see Program.save). Returns {"gcode", "gcode_meta", "svg", "stats"}."""
        out = Path(out_gcode)
        try:
            return self._save(out, travel_layer)
        except OSError as e:
            raise PlotterdError(f"{out}: cannot write the G-code outputs: {e}") from e

    def _save(self, out: Path, travel_layer: bool) -> dict[str, Path]:
        svg = out.with_suffix(".svg")
        stats = out.with_suffix(".stats.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = self.program.save(out)
        doc = self.document
        if travel_layer:
            doc = doc.clone()
            for lid in self.document.layers:
                doc.layers[lid] = self.document.layers[lid]
            travel = _travel_lines(self.document)
            if travel:
                tid = max(doc.layers, default=0) + 1
                doc.add(vp.LineCollection(travel), tid)
                doc.layers[tid].set_property(vp.METADATA_FIELD_NAME, "pen-up travel")
                doc.layers[tid].set_property(vp.METADATA_FIELD_COLOR, vp.Color("#ff3030"))
                doc.layers[tid].set_property(vp.METADATA_FIELD_PEN_WIDTH, 0.1 * PX_PER_MM)
        with atomic.atomic_path(svg) as tmp, tmp.open("w") as f:
            vp.write_svg(f, doc, source_string="plotterd", set_date=False)
        atomic.write_text(stats, json.dumps(_jsonable(self.stats), indent=2, sort_keys=True) + "\n")
        return {"gcode": out, "gcode_meta": meta, "svg": svg, "stats": stats}


def _pen_names(stats: dict[str, Any]) -> dict[int, str]:
    """Layer id -> the colour the pen was given as (``black``, ``#777777``)."""
    out = {}
    for layer in stats.get("layers") or []:
        if isinstance(layer, dict) and isinstance(layer.get("layer"), int):
            out[layer["layer"]] = str(layer.get("color") or layer.get("colour") or "")
    return out


def _slug(text: str) -> str:
    """A colour as a file-name part: ``#FF0000`` -> ``ff0000``, ``dark blue`` -> ``dark_blue``."""
    s = re.sub(r"[^a-z0-9]+", "_", text.lower().lstrip("#")).strip("_")
    return s[:32] or "pen"


def _travel_lines(doc: vp.Document) -> list[np.ndarray]:
    """Pen-up moves in plotting order, from the paper's top-left corner (page px)."""
    out = []
    here = 0j
    for lid in sorted(doc.layers):
        for ln in doc.layers[lid].lines:
            if len(ln) and ln[0] != here:
                out.append(np.array([here, ln[0]]))
            if len(ln):
                here = ln[-1]
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return v


def make_gcode(
    source: Strokes | str | Path | vp.Document,
    *,
    profile: Profile | str | Path,
    page: PageSpec | None = None,
    options: VectorOptions | None = None,
    progress: ProgressCallback | None = None,
) -> GcodeResult:
    """strokes.json / Strokes / SVG (or an already laid-out Document) -> checked G-code.

    Raises OutOfBoundsError before writing anything if the drawing does not fit the machine.
    """
    t0 = time.perf_counter()
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    if isinstance(source, vp.Document):
        document = source
        stats: dict[str, Any] = {"source": "document"}
    else:
        vec = vectorise(source, page or PageSpec(), options, progress=progress)
        document, stats = vec.document, dict(vec.stats)
    if progress is not None:
        progress(Progress("gcode", 0, 1, time.perf_counter() - t0, info={"step": "write"}))
    program = write_program(document, prof)
    stats.update(program_stats(program))
    stats["total_s"] = time.perf_counter() - t0
    if progress is not None:
        progress(Progress("gcode", 1, 1, time.perf_counter() - t0, info={"step": "done"}))
    return GcodeResult(program=program, document=document, stats=_jsonable(stats),
                       profile=prof)
