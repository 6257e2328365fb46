"""Firmware profiles: YAML files describing a plotter's G-code dialect, speeds and bed.

A profile is parsed once into a frozen :class:`Profile`; a bad file is refused with a
:class:`ConfigError` naming the dotted key (``pen.down_dwell_s``), and unknown keys are
refused too (a typo must not silently fall back to a default). docs/gcode.md lists the keys.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plotterd import bundled
from plotterd.errors import ConfigError
from plotterd.gcode.tokens import gcode_words, xy_target

FIRMWARES = ("grbl", "marlin", "klipper")
DIALECTS = ("spindle", "z", "m280", "klipper-servo", "commands")
ORIGINS = ("bottom-left", "top-left", "top-right", "bottom-right")
# which firmwares understand each pen dialect
DIALECT_FIRMWARE = {
    "spindle": ("grbl",),
    "m280": ("marlin",),
    "klipper-servo": ("klipper",),
    "z": FIRMWARES,
    "commands": FIRMWARES,
}
# GRBL rejects longer lines (error:11); Marlin's command buffer holds 96 characters; Klipper
# reads whole lines, so only a sanity limit.
DEFAULT_MAX_LINE = {"grbl": 80, "marlin": 96, "klipper": 256}
PROFILE_SUFFIXES = (".yaml", ".yml")
ENV_VAR = "PLOTTERD_PROFILES"

# modes that would make the writer's absolute millimetre coordinates mean something else
_MODE_CHANGES = {91.0: "G91 (relative moves)", 20.0: "G20 (inches)",
                 92.0: "G92 (sets the position)", 10.0: "G10 (sets offsets)",
                 53.0: "G53 (machine coordinates)", 55.0: "G55", 56.0: "G56", 57.0: "G57",
                 58.0: "G58", 59.0: "G59"}


def bundled_dir() -> Path:
    """The shipped profiles: top-level firmware_profiles/, or its copy in a wheel."""
    return bundled.bundled_dir("firmware_profiles")


@dataclass(frozen=True)
class PenSpec:
    dialect: str
    up_commands: tuple[str, ...]
    down_commands: tuple[str, ...]
    up_dwell_s: float
    down_dwell_s: float
    up_move_s: float = 0.0  # time the pen mechanism itself moves (Z axis pens), for estimates
    down_move_s: float = 0.0
    summary: str = ""  # e.g. "M3 S30 / M5" for listings


@dataclass(frozen=True)
class Profile:
    name: str
    firmware: str
    draw_feed: float  # mm/min
    travel_feed: float  # mm/min
    acceleration: float  # mm/s^2
    junction_deviation: float  # mm (GRBL's $11 cornering model)
    pen: PenSpec
    x_min: float
    x_max: float
    y_min: float
    y_max: float
    origin: str = "bottom-left"  # the paper corner placed at `offset` on the bed
    offset_x: float = 0.0
    offset_y: float = 0.0
    invert_x: bool = False
    invert_y: bool = False
    start: tuple[str, ...] = ()
    end: tuple[str, ...] = ()
    pen_change: tuple[str, ...] = ()  # between pens; "{name}" and "{color}" are filled in
    max_line_length: int = 80
    decimals: int = 3
    description: str = ""
    units: str = "mm"
    absolute: bool = True
    send_allow: tuple[str, ...] = ()  # commands `send` may pass besides its own allow-list
    source: str | None = field(default=None, compare=False)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x_min, self.y_min, self.x_max, self.y_max)

    @property
    def dwell_unit(self) -> str:
        return "s" if self.firmware == "grbl" else "ms"

    def dwell(self, seconds: float) -> str:
        """``G4`` in the firmware's unit: GRBL's P is seconds, Marlin's and Klipper's ms."""
        if self.firmware == "grbl":
            return f"G4 P{_num(seconds, 3)}"
        return f"G4 P{_num(seconds * 1000.0, 0)}"

    def pen_up_lines(self) -> list[str]:
        out = list(self.pen.up_commands)
        if self.pen.up_dwell_s > 0:
            out.append(self.dwell(self.pen.up_dwell_s))
        return out

    def pen_down_lines(self) -> list[str]:
        out = list(self.pen.down_commands)
        if self.pen.down_dwell_s > 0:
            out.append(self.dwell(self.pen.down_dwell_s))
        return out

    def setup_lines(self) -> list[str]:
        """Units and distance mode (Klipper has no G21: it is always millimetres)."""
        return ["G90"] if self.firmware == "klipper" else ["G21", "G90"]


def _num(v: float, decimals: int) -> str:
    s = f"{v:.{decimals}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


class _Section:
    """Reads keys out of one mapping, remembering the dotted path for error messages and
    refusing keys that nobody asked for."""

    def __init__(self, data: Any, path: str, source: str):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(path or "profile", "must be a mapping", source)
        self.data = data
        self.path = path
        self.source = source
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = None) -> Any:
        self.used.add(name)
        return self.data.get(name, default)

    def section(self, name: str) -> _Section:
        return _Section(self.raw(name), self.key(name), self.source)

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.key(name), message, self.source)

    def number(self, name: str, default: float | None = None, *, positive: bool = False,
               minimum: float | None = None) -> float:
        v = self.raw(name, default)
        if v is None:
            raise self.error(name, "is required")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.error(name, f"must be a number, got {v!r}")
        if positive and v <= 0:
            raise self.error(name, f"must be > 0, got {v!r}")
        if minimum is not None and v < minimum:
            raise self.error(name, f"must be >= {minimum}, got {v!r}")
        return float(v)

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        v = self.raw(name, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.error(name, f"must be an integer in {lo}..{hi}, got {v!r}")
        return v

    def boolean(self, name: str, default: bool) -> bool:
        v = self.raw(name, default)
        if not isinstance(v, bool):
            raise self.error(name, f"must be true or false, got {v!r}")
        return v

    def string(self, name: str, default: str | None = None,
               choices: Sequence[str] | None = None) -> str:
        v = self.raw(name, default)
        if v is None:
            raise self.error(name, "is required")
        if not isinstance(v, str):
            raise self.error(name, f"must be a string, got {v!r}")
        if choices is not None and v not in choices:
            raise self.error(name, f"{v!r} is not one of {', '.join(choices)}")
        return v

    def commands(self, name: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        v = self.raw(name, list(default))
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
            raise self.error(name, "must be a list of G-code lines")
        out = []
        for i, c in enumerate(v):
            c = c.strip()
            if not c:
                raise self.error(f"{name}[{i}]", "is empty")
            if "\n" in c or "\r" in c:
                raise self.error(f"{name}[{i}]", "must be one line")
            if ";" in c or "(" in c:
                raise self.error(f"{name}[{i}]", f"{c!r}: no comments in commands")
            out.append(c)
        return tuple(out)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key" + (
                f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
            ))


def _pen(sec: _Section, firmware: str, travel_feed: float, accel: float) -> PenSpec:
    dialect = sec.string("dialect", choices=DIALECTS)
    if firmware not in DIALECT_FIRMWARE[dialect]:
        raise sec.error(
            "dialect",
            f"{dialect!r} pens are not understood by {firmware} "
            f"(use one of: {', '.join(d for d, f in DIALECT_FIRMWARE.items() if firmware in f)})",
        )
    up_dwell = sec.number("up_dwell_s", 0.15, minimum=0)
    down_dwell = sec.number("down_dwell_s", 0.15, minimum=0)
    up_move = down_move = 0.0
    if dialect == "spindle":
        down = sec.number("down", minimum=0)
        up = sec.raw("up", "M5")
        if isinstance(up, str) and up.strip().upper() == "M5":
            up_cmd = "M5"
        elif isinstance(up, (int, float)) and not isinstance(up, bool) and up >= 0:
            up_cmd = f"M3 S{_num(float(up), 3)}"
        else:
            raise sec.error("up", f"must be M5 or a spindle value >= 0, got {up!r}")
        down_cmd = f"M3 S{_num(down, 3)}"
        ups, downs = (up_cmd,), (down_cmd,)
    elif dialect == "z":
        up = sec.number("up")
        down = sec.number("down")
        z_feed = sec.number("z_feed", 1000.0, positive=True)
        if up <= down:
            raise sec.error("up", f"pen-up Z ({up}) must be above pen-down Z ({down})")
        ups = (f"G0 Z{_num(up, 3)}",)
        downs = (f"G1 Z{_num(down, 3)} F{_num(z_feed, 0)}",)
        dz = up - down
        up_move = trapezoid_time(dz, travel_feed / 60.0, accel)
        down_move = trapezoid_time(dz, z_feed / 60.0, accel)
    elif dialect == "m280":
        servo = sec.integer("servo", 0, 0, 15)
        up = sec.number("up", minimum=0)
        down = sec.number("down", minimum=0)
        # M280 is not synchronised with queued moves (Marlin #870, #19764): M400 first
        ups = ("M400", f"M280 P{servo} S{_num(up, 0)}")
        downs = ("M400", f"M280 P{servo} S{_num(down, 0)}")
    elif dialect == "klipper-servo":
        servo = sec.string("servo", "pen")
        if not re.fullmatch(r"[A-Za-z0-9_]+", servo):
            raise sec.error("servo", f"{servo!r} is not a Klipper servo name")
        up = sec.number("up", minimum=0)
        down = sec.number("down", minimum=0)
        ups = (f"SET_SERVO SERVO={servo} ANGLE={_num(up, 2)}",)
        downs = (f"SET_SERVO SERVO={servo} ANGLE={_num(down, 2)}",)
    else:  # commands
        ups = sec.commands("up")
        downs = sec.commands("down")
        if not ups:
            raise sec.error("up", "needs at least one command")
        if not downs:
            raise sec.error("down", "needs at least one command")
    for name, cmds in (("up", ups), ("down", downs)):
        for c in cmds:
            if xy_target(c) is not None:
                raise sec.error(name, f"{c!r}: pen commands must not move X or Y")
    if ups == downs:
        raise sec.error("up", "pen-up and pen-down commands are the same")
    sec.finish()
    summary = f"{' + '.join(downs)} / {' + '.join(ups)}"
    return PenSpec(dialect, ups, downs, up_dwell, down_dwell, up_move, down_move, summary)


def trapezoid_time(length: float, v_max: float, accel: float) -> float:
    """Seconds for a move of ``length`` mm from rest to rest (trapezoidal or triangular)."""
    if length <= 0:
        return 0.0
    d_acc = v_max * v_max / accel  # accelerate + decelerate
    if d_acc <= length:
        return 2 * v_max / accel + (length - d_acc) / v_max
    return 2 * math.sqrt(length / accel)


def parse_profile(data: Any, name: str, source: str | None = None) -> Profile:
    """Validate a profile mapping (from YAML) into a :class:`Profile`."""
    src = source or name
    top = _Section(data, "", src)
    name = top.string("name", name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise top.error("name", f"{name!r}: use letters, digits, '-', '_' and '.'")
    description = top.string("description", "")
    firmware = top.string("firmware", choices=FIRMWARES)
    units = top.string("units", "mm", choices=("mm",))
    absolute = top.boolean("absolute", True)
    if not absolute:
        raise top.error("absolute", "only absolute moves (G90) are written")

    feeds = top.section("feeds")
    draw = feeds.number("draw", positive=True)
    travel = feeds.number("travel", positive=True)
    feeds.finish()

    motion = top.section("motion")
    accel = motion.number("acceleration", 500.0, positive=True)
    jd = motion.number("junction_deviation", 0.01, minimum=0)
    motion.finish()

    pen = _pen(top.section("pen"), firmware, travel, accel)

    b = top.section("bounds")
    x_min, x_max = b.number("x_min"), b.number("x_max")
    y_min, y_max = b.number("y_min"), b.number("y_max")
    if x_max <= x_min:
        raise b.error("x_max", f"must be greater than x_min ({x_min})")
    if y_max <= y_min:
        raise b.error("y_max", f"must be greater than y_min ({y_min})")
    b.finish()

    paper = top.section("paper")
    origin = paper.string("origin", "bottom-left", choices=ORIGINS)
    off = paper.raw("offset", [0, 0])
    if (
        not isinstance(off, list)
        or len(off) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in off)
        or not all(math.isfinite(v) for v in off)
    ):
        raise paper.error("offset", f"must be [x, y] in mm, got {off!r}")
    invert_x = paper.boolean("invert_x", False)
    invert_y = paper.boolean("invert_y", False)
    paper.finish()

    g = top.section("gcode")
    max_line = g.integer("max_line_length", DEFAULT_MAX_LINE[firmware], 20, 1000)
    decimals = g.integer("decimals", 3, 0, 6)
    g.finish()

    start = top.commands("start")
    end = top.commands("end")
    pen_change = top.commands("pen_change")
    send_allow = _send_allow(top)
    top.finish()

    profile = Profile(
        name=name, firmware=firmware, draw_feed=draw, travel_feed=travel, acceleration=accel,
        junction_deviation=jd, pen=pen, x_min=x_min, x_max=x_max, y_min=y_min, y_max=y_max,
        origin=origin, offset_x=float(off[0]), offset_y=float(off[1]), invert_x=invert_x,
        invert_y=invert_y, start=start, end=end, pen_change=pen_change,
        max_line_length=max_line, decimals=decimals, description=description, units=units,
        absolute=absolute, send_allow=send_allow, source=source,
    )
    _check_lines(profile)
    return profile


def _send_allow(top: _Section) -> tuple[str, ...]:
    """Command names (M17, SET_FAN_SPEED...) a profile adds to send's allow-list."""
    v = top.raw("send_allow", [])
    if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
        raise top.error("send_allow", "must be a list of command names (M17, SET_SERVO...)")
    out = []
    for i, c in enumerate(v):
        name = c.strip().upper()
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*(\.[0-9]+)?", name):
            raise top.error(f"send_allow[{i}]", f"{c!r}: a command name, without parameters")
        out.append(name)
    return tuple(out)


def _check_lines(p: Profile) -> None:
    """Every fixed line must fit the line limit, keep absolute millimetres and, for GRBL, not
    hold real-time bytes."""
    groups = {
        "pen.up": p.pen_up_lines(),
        "pen.down": p.pen_down_lines(),
        "start": list(p.start),
        "end": list(p.end),
        "pen_change": [c.replace("{name}", "x" * 12).replace("{color}", "#000000")
                       for c in p.pen_change],
    }
    for key, lines in groups.items():
        for c in lines:
            for k, v in gcode_words(c):
                if k == "G" and v in _MODE_CHANGES:
                    raise ConfigError(
                        key, f"{c!r}: {_MODE_CHANGES[v]} would break the bounds checks", p.source
                    )
            if len(c) > p.max_line_length:
                raise ConfigError(
                    key, f"{c!r} is longer than gcode.max_line_length ({p.max_line_length})",
                    p.source,
                )
            if p.firmware == "grbl" and any(ch in c for ch in "?!~"):
                raise ConfigError(key, f"{c!r}: GRBL acts on '?', '!' and '~' anywhere",
                                  p.source)
    _check_followable(p, groups)


def _check_followable(p: Profile, groups: dict[str, list[str]]) -> None:
    """Every fixed line must be one the plot-time interpreter follows (G-code it does not
    know, G28 with axis words, ...), so a program that could be written can be plotted."""
    from plotterd.errors import InputError, OutOfBoundsError
    from plotterd.gcode.interpret import Interpreter, PenModel

    for key, lines in groups.items():
        interp = Interpreter(p.bounds, p.firmware, PenModel("none"), f"profile {p.name!r}")
        for i, c in enumerate(lines):
            try:
                interp.run(i + 1, c)
            except OutOfBoundsError:
                pass  # moves: the writer checks them with the paper placement
            except InputError as e:
                reason = str(e).split("): ", 1)[-1]
                raise ConfigError(key, f"{c!r}: {reason}", p.source) from e


def _read(path: Path) -> Profile:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError("profile", f"{path}: no such file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("profile", f"cannot read: {e}", str(path)) from e
    except yaml.YAMLError as e:
        raise ConfigError("profile", f"not valid YAML: {e}", str(path)) from e
    profile = parse_profile(data, path.stem, str(path))
    if profile.name != path.stem:  # profiles are found by file name
        raise ConfigError("name", f"{profile.name!r} must match the file name {path.stem!r}",
                          str(path))
    return profile


def search_path(search_dirs: Sequence[str | Path] = ()) -> list[Path]:
    """Directories searched for profiles, first match wins: ``search_dirs``, then the
    ``PLOTTERD_PROFILES`` directories (os.pathsep-separated), then the bundled ones."""
    dirs = [Path(d) for d in search_dirs]
    env = os.environ.get(ENV_VAR, "")
    dirs += [Path(d) for d in env.split(os.pathsep) if d]
    dirs.append(bundled_dir())
    return dirs


def _files(d: Path) -> list[Path]:
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix in PROFILE_SUFFIXES and p.is_file())


def load_profile(name_or_path: str | Path, search_dirs: Sequence[str | Path] = ()) -> Profile:
    """A profile by name (``grbl-servo``) from the search path, or from a YAML file path."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    p = Path(name_or_path)
    if p.suffix in PROFILE_SUFFIXES or p.is_file() or os.sep in str(name_or_path):
        return _read(p)
    name = str(name_or_path)
    dirs = search_path(search_dirs)
    for d in dirs:
        for suffix in PROFILE_SUFFIXES:
            f = d / f"{name}{suffix}"
            if f.is_file():
                return _read(f)
    available = sorted({f.stem for d in dirs for f in _files(d)})
    raise ConfigError(
        "profile", f"unknown profile {name!r} (available: {', '.join(available) or 'none'})"
    )


def list_profiles(
    search_dirs: Sequence[str | Path] = (), errors: list[ConfigError] | None = None
) -> list[Profile]:
    """Every profile on the search path, one per name (first match wins), sorted by name.

    A bad profile raises its ConfigError, unless ``errors`` is given: then it is appended
    there and skipped.
    """
    seen: dict[str, Profile] = {}
    for d in search_path(search_dirs):
        for f in _files(d):
            if f.stem in seen:
                continue
            try:
                seen[f.stem] = _read(f)
            except ConfigError as e:
                if errors is None:
                    raise
                errors.append(e)
    return [seen[k] for k in sorted(seen)]


def to_vpype_gcode_toml(profile: Profile, paper_mm: tuple[float, float]) -> str:
    """The profile as a vpype-gcode ``[gwrite.<name>]`` section (vpype-gcode 0.13's keys),
    for use with ``vpype ... gwrite -p <name>`` outside plotterd.

    The paper placement is expressed with ``scale_x/scale_y`` = +-1 and offsets (in mm),
    which vpype-gcode applies about the page origin; its ``invert_x/invert_y`` mirror about
    the drawing's own bounding box (vpype-gcode #25, #37) and are not used. gwrite does no
    bounds checking: plotterd's safety checks do not apply to what it writes.
    """
    w, h = paper_mm
    sx = -1.0 if profile.invert_x else 1.0
    sy = -1.0 if profile.invert_y else 1.0
    # machine = offset + s * a, a = u (left origin) or W - u (right origin); same for y
    if profile.origin.endswith("right"):
        scale_x, offset_x = -sx, profile.offset_x + sx * w
    else:
        scale_x, offset_x = sx, profile.offset_x
    if profile.origin.startswith("bottom"):
        scale_y, offset_y = -sy, profile.offset_y + sy * h
    else:
        scale_y, offset_y = sy, profile.offset_y
    d = profile.decimals
    travel, draw = _num(profile.travel_feed, 0), _num(profile.draw_feed, 0)

    def block(lines: Sequence[str]) -> str:
        # literal text: braces doubled for str.format, one command per line
        return "".join(c.replace("{", "{{").replace("}", "}}") + "\n" for c in lines)

    def toml_str(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    up, down = profile.pen_up_lines(), profile.pen_down_lines()
    change = [c.replace("{name}", "next pen").replace("{color}", "") for c in profile.pen_change]
    fields = {
        "unit": "mm",
        "document_start": block(profile.setup_lines() + up + list(profile.start)),
        "segment_first": f"G0 X{{x:.{d}f}} Y{{y:.{d}f}} F{travel}\n" + block(down),
        "segment": f"G1 X{{x:.{d}f}} Y{{y:.{d}f}} F{draw}\n",
        "line_end": block(up),
        # layer_join is written as is (not formatted): single braces
        "layer_join": "".join(c + "\n" for c in change),
        "document_end": block(up + list(profile.end)),
        "info": f"plotterd profile {profile.name} ({profile.firmware}), paper "
                f"{w:g} x {h:g} mm; no bounds checks",
    }
    out = [f"[gwrite.{profile.name}]"]
    out += [f"{k} = {toml_str(v)}" for k, v in fields.items()]
    out += [f"scale_x = {scale_x:g}", f"scale_y = {scale_y:g}",
            f"offset_x = {offset_x:g}", f"offset_y = {offset_y:g}"]
    return "\n".join(out) + "\n"
