"""What the GRBL and Marlin drivers share: timeouts, the exceptions that steer recovery, and
the records of lines in flight and acknowledged."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from plotterd.errors import PlotterdError
from plotterd.gcode.tokens import command, frame, gcode_words, grbl_line, strip_comment

log = logging.getLogger("plotterd.machine")


@dataclass
class Timeouts:
    """Every wait has one (seconds, wall clock). Long commands get longer ones."""

    banner: float = 5.0  # after opening a port, for the reset banner
    ok: float = 10.0  # for an ok, beyond any dwell in the line; extended while the machine moves
    status: float = 2.0  # for the answer to a GRBL '?' (a miss is asked again)
    silence: float = 10.0  # nothing at all from the board for this long: the link is lost
    command: float = 10.0  # for send-and-wait commands ($I, $X, settings, M110 ...)
    homing: float = 120.0  # for $H / G28
    idle: float = 600.0  # for the machine to finish once everything is acknowledged
    poll: float = 0.2  # status polling interval (GRBL: at most 5 Hz)
    reconnect_attempts: int = 5
    reconnect_backoff: float = 0.5  # first wait; doubles, capped at 8 s
    max_resumes: int = 5  # automatic resumes (reset / reconnect) within one stream() call
    garbled_run: int = 3  # garbled replies in a row that stop a job (fewer are forgiven)

    @classmethod
    def fast(cls) -> Timeouts:
        """Short timeouts for tests on an instant simulator."""
        return cls(banner=0.5, ok=0.4, status=0.3, silence=0.6, command=1.0, homing=5.0,
                   idle=10.0, poll=0.05, reconnect_attempts=3, reconnect_backoff=0.05)


class LinkLost(PlotterdError):
    """The serial link failed (device gone, or the board stopped answering)."""


class BoardReset(PlotterdError):
    """The board reset mid-job (banner, ``start``, ALARM:3): what it buffered is lost."""


class FirmwareError(PlotterdError):
    """The firmware refused a line or stopped (GRBL error:N / ALARM:N, Marlin halted...)."""

    def __init__(self, message: str, *, needs_reset: bool = False, alarm: int | None = None):
        super().__init__(message)
        self.needs_reset = needs_reset
        self.alarm = alarm


class GarbledReply(PlotterdError):
    """A reply from the board that cannot be read (line noise, a truncated or corrupted
    line), or one that says the board no longer knows where it is."""

    def __init__(self, raw: str, why: str, *, position: bool = False, count: int = 1):
        self.raw = raw
        self.why = why
        self.position = position
        self.count = count
        seen = f" ({count} in a row)" if count > 1 else ""
        super().__init__(f"garbled reply{seen} {raw_bytes(raw)!r}: {why}")


def raw_bytes(text: str) -> bytes:
    """The bytes a received line was decoded from (the transport decodes latin-1)."""
    return text.encode("latin-1", "backslashreplace")


@dataclass(frozen=True)
class Garbled:
    """A line from the board that no reply parser could read; ``position``: it was a
    position report whose coordinates are not finite numbers."""

    raw: str
    why: str
    position: bool = False

    def error(self, count: int = 1) -> GarbledReply:
        return GarbledReply(self.raw, self.why, position=self.position, count=count)


_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)", re.ASCII)
_NON_FINITE = re.compile(r"[-+]?(?:nan|inf|infinity)", re.ASCII | re.IGNORECASE)
_INTEGER = re.compile(r"[0-9]{1,9}", re.ASCII)


def reply_number(text: str) -> float | None:
    """A decimal number as firmware prints it ("-12.500"), else None. Not float(): that
    also takes "nan", "1e999", "1_0" and non-ASCII digits, none of which a board sends."""
    s = text.strip()
    if len(s) > 24 or not _NUMBER.fullmatch(s):
        return None
    return float(s)


def non_finite(text: str) -> bool:
    """NaN or infinity spelt out: the board's own arithmetic lost the value."""
    return bool(_NON_FINITE.fullmatch(text.strip()))


def reply_int(text: str) -> int | None:
    s = text.strip()
    return int(s) if _INTEGER.fullmatch(s) else None


def readable(text: str) -> bool:
    """Printable ASCII only: what GRBL and Marlin send."""
    return text.isascii() and text.isprintable()


class GarbledWatch:
    """Garbled replies: each is logged and counted; ``run`` in a row, or one that loses the
    position, raises GarbledReply (the job's safe stop). Not ``strict`` while stopping."""

    def __init__(self, run: int = 3):
        self.run = max(1, run)
        self.in_row = 0
        self.total = 0
        self.strict = True

    def good(self) -> None:
        self.in_row = 0

    def garbled(self, ev: Garbled, port: str) -> None:
        self.total += 1
        self.in_row += 1
        log.warning("%s: garbled reply %r (%s; %d in a row, %d in all)", port,
                    raw_bytes(ev.raw), ev.why, self.in_row, self.total)
        if self.strict and (ev.position or self.in_row >= self.run):
            raise ev.error(self.in_row)


def finite(values: tuple[float, ...] | None) -> bool:
    return values is None or all(math.isfinite(v) for v in values)


@dataclass
class Item:
    """One line to send, with what the streamer knows about it."""

    text: str  # as sent (GRBL: stripped of comments and whitespace)
    tag: int | None = None  # index in the Program, None for injected lines
    kind: str = "setup"
    motion: bool = False  # a planner block (G0/G1 with an axis word)
    wait: float = 0.0  # seconds the firmware may legitimately take (dwell); -1: homing
    seq: int = 0  # set by the driver when sent: the order of sending
    sync: bool = False  # answered only once everything before it has run (G4, M400)


@dataclass
class Ack:
    item: Item
    error: str | None = None  # firmware's refusal, None when ok
    lost: bool = False  # the ok never came; inferred from the machine state


def _number(words: list[tuple[str, float]], letter: str) -> float | None:
    return next((v for k, v in words if k == letter), None)


def make_item(text: str, firmware: str, tag: int | None = None, kind: str = "setup") -> Item:
    """The line as sent (GRBL: as its receive filter leaves it; others: comments removed)
    and what the streamer needs to know about it, read with the one G-code tokeniser."""
    sent = grbl_line(text) if firmware == "grbl" else strip_comment(text)
    framed = frame(sent)
    if firmware == "grbl" and framed.checksum is not None and framed.checksum >= 0:
        sent = framed.signed  # a foreign file's checksum: GRBL would refuse it (error:1)
    words = gcode_words(command(sent))
    gs = [v for k, v in words if k == "G"]
    ms = [v for k, v in words if k == "M"]
    motion = any(g in (0.0, 1.0) for g in gs) and any(k in "XYZ" for k, _ in words)
    dwell = 4.0 in gs
    wait = 0.0
    if dwell:
        p, s = _number(words, "P"), _number(words, "S")
        if p is not None:
            # GRBL's G4 P is seconds; Marlin's is milliseconds
            wait = p / (1.0 if firmware == "grbl" else 1000.0)
        elif s is not None:
            wait = s
        wait = wait if math.isfinite(wait) and wait >= 0 else 0.0
    elif "".join(sent.split()).upper() == "$H" or 28.0 in gs:
        wait = -1.0  # homing: the homing timeout applies
    # G4 waits for the planner to empty on GRBL and Marlin; so does M400 on Marlin
    sync = dwell or (firmware != "grbl" and 400.0 in ms)
    return Item(sent, tag, kind, motion, wait, sync=sync)
