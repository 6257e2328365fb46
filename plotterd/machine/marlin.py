"""Marlin host driver: numbered, checksummed lines (``N<n> <cmd>*<xor>``), resend handling
with a history and a cap, busy keep-alives that extend timeouts, reset and halt detection.
Every line from the board is parsed once into a typed event."""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from plotterd.machine.base import (
    Ack,
    BoardReset,
    FirmwareError,
    Garbled,
    GarbledWatch,
    Item,
    LinkLost,
    Timeouts,
    make_item,
    non_finite,
    reply_number,
)
from plotterd.machine.transport import Transport

log = logging.getLogger("plotterd.machine.marlin")

LINE_MAX = 96  # Marlin's MAX_CMD_SIZE, framing included
HISTORY = 100  # sent lines kept for resends (OctoPrint keeps 50)
MAX_RESENDS = 10  # of one line before giving up (as OctoPrint)


def checksum(text: str) -> int:
    c = 0
    for b in text.encode("ascii", "replace"):
        c ^= b
    return c


def frame(n: int, cmd: str) -> str:
    body = f"N{n} {cmd}"
    return f"{body}*{checksum(body)}"


# ---- events ----
@dataclass(frozen=True)
class Ok:
    line: int | None = None  # N<n>: last line Marlin accepted (ADVANCED_OK)
    planner_free: int | None = None  # P<n>
    buffer_free: int | None = None  # B<n>


@dataclass(frozen=True)
class Resend:
    line: int


@dataclass(frozen=True)
class Error:
    text: str


@dataclass(frozen=True)
class Halted:
    text: str


@dataclass(frozen=True)
class Busy:
    text: str


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Position:
    x: float
    y: float
    z: float


@dataclass(frozen=True)
class Echo:
    text: str


@dataclass(frozen=True)
class Unknown:
    text: str


Event = Ok | Resend | Error | Halted | Busy | Start | Position | Echo | Unknown | Garbled

_RESEND = re.compile(r"^(?:Resend:\s*N?\s*([0-9]{1,9})?|rs\s*N?\s*([0-9]{1,9}))",
                     re.I | re.ASCII)
_OK_FIELD = re.compile(r"\b([NPB])([0-9]{1,9})\b", re.ASCII)
_POS = re.compile(r"^X:\s*(\S+)\s+Y:\s*(\S+)\s+Z:\s*(\S+)", re.ASCII)


def parse(line: str) -> Event:
    """One line from Marlin -> one event. Marlin and Klipper chat in free text (Unknown,
    logged); a line with bytes neither sends, or a known reply whose numbers do not read,
    is Garbled (never an exception)."""
    s = line.strip()
    if not (s.isascii() and s.isprintable()):
        return Garbled(line, "characters Marlin never sends")
    if s == "ok" or s.startswith("ok "):
        fields = {k: int(v) for k, v in _OK_FIELD.findall(s[2:])}
        return Ok(fields.get("N"), fields.get("P"), fields.get("B"))
    m = _RESEND.match(s)
    if m:
        n = m.group(1) or m.group(2)
        if n is None:
            return Garbled(line, "resend request without a line number")
        return Resend(int(n))
    low = s.lower()
    if low.startswith("error:") or low.startswith("!!"):
        if "halted" in low or "kill()" in low or low.startswith("!!"):
            return Halted(s)
        return Error(s[6:].strip())
    if low.startswith("echo:busy") or low.startswith("busy:"):
        return Busy(s)
    if s == "start":
        return Start()
    if s.startswith("X:"):
        return _parse_position(line, s)
    if low.startswith("echo:") or s == "wait":
        return Echo(s)
    return Unknown(s)


def _parse_position(line: str, s: str) -> Position | Garbled:
    m = _POS.match(s)
    if m is None:
        return Garbled(line, "truncated position report")
    values = [reply_number(v) for v in m.groups()]
    if any(v is None for v in values):
        lost = any(non_finite(v) for v in m.groups())
        return Garbled(line, "bad number in position report"
                       + ("; the position is not a number" if lost else ""), position=lost)
    return Position(*values)  # type: ignore[arg-type]


@dataclass
class _InFlight:
    item: Item | None  # None: an unnumbered probe (M114)
    n: int | None
    gen: int
    since: float
    refused: bool = False  # answered with an error/resend: its ok does not acknowledge it
    resend_seen: bool = False
    error: str | None = None  # the Error: line answering it (a resend request clears it)
    probe: bool = False  # our unnumbered M114 (item None); M108 is item None, probe False


class MarlinDriver:
    """One numbered line in flight at a time (what most hosts do: Marlin's ``ok`` comes once
    a command is planned, so its 16-block planner stays full while moves are longer than a
    round trip)."""

    firmware = "marlin"
    line_max = LINE_MAX

    def __init__(self, transport: Transport, timeouts: Timeouts, window: int = 1):
        self.t = transport
        self.T = timeouts
        self.window = window
        self.seq = 0
        self.executed_seq = 0
        self.planner_size = 16
        self.position: tuple[float, float] | None = None  # from the last M114
        self.watch = GarbledWatch(timeouts.garbled_run)
        self._reset_stream_state()

    def _reset_stream_state(self) -> None:
        self.next_n = 1
        self.gen = 0
        self.fifo: deque[_InFlight] = deque()
        self.history: OrderedDict[int, Item] = OrderedDict()
        self.resend_queue: deque[tuple[int, Item]] = deque()
        self.resend_counts: dict[int, int] = {}
        self.acked: deque[Item] = deque(maxlen=512)
        self._pending: list[Ack] = []
        self._alive = time.monotonic()
        self.waiting_for_user = False

    @property
    def in_flight(self) -> int:
        return len(self.fifo) + len(self.resend_queue)

    def make_item(self, text: str, tag: int | None = None, kind: str = "setup") -> Item:
        return make_item(text, "marlin", tag, kind)

    def sync_item(self) -> Item:
        return make_item("M400", "marlin", None, "sync")

    # ---- connecting ----
    def connect(self) -> None:
        """Wait for ``start`` (the board resets when the port opens), then the M110 N0
        handshake that zeroes the line counter."""
        self._reset_stream_state()
        # boards without auto-reset (or a pty) send no "start": do not wait long for it
        deadline = time.monotonic() + min(self.T.banner, 2.0)
        while True:
            line = self.t.readline(max(0.0, deadline - time.monotonic()))
            if line is None or isinstance(parse(line), Start):
                break
        self._handshake()

    def _handshake(self) -> None:
        for attempt in range(3):
            self.t.write((frame(0, "M110 N0") + "\n").encode("ascii"))
            deadline = time.monotonic() + self.T.command
            while True:
                line = self.t.readline(max(0.0, deadline - time.monotonic()))
                if line is None:
                    break
                ev = parse(line)
                if isinstance(ev, Ok):
                    self._drain_quiet()
                    self.next_n = 1
                    return
                if isinstance(ev, Halted):
                    raise FirmwareError(f"Marlin halted: {ev.text}", needs_reset=True)
            log.warning("no answer to M110 N0 (attempt %d)", attempt + 1)
        raise LinkLost(f"{self.t.port}: Marlin did not answer the M110 N0 handshake")

    def _drain_quiet(self, quiet: float = 0.05) -> None:
        while self.t.readline(quiet) is not None:
            pass

    def recover_after_reset(self) -> None:
        self._reset_stream_state()
        self._drain_quiet(0.1)
        self._handshake()

    # ---- streaming ----
    def can_send(self, item: Item) -> bool:
        return not self.resend_queue and len(self.fifo) < self.window

    def send(self, item: Item) -> None:
        self.seq += 1
        item.seq = self.seq
        n = self.next_n
        self.next_n += 1
        self.history[n] = item
        while len(self.history) > HISTORY:
            self.history.popitem(last=False)
        self._write(n, item)

    def _write(self, n: int, item: Item) -> None:
        self.t.write((frame(n, item.text) + "\n").encode("ascii", "replace"))
        self.fifo.append(_InFlight(item, n, self.gen, time.monotonic()))

    def pump(self) -> None:
        """Send what a resend request asked for, before anything new."""
        while self.resend_queue and len(self.fifo) < self.window:
            n, item = self.resend_queue.popleft()
            self._write(n, item)

    def poll(self, timeout: float) -> list[Ack]:
        line = self.t.readline(timeout)
        while line is not None:
            self._handle(line)
            line = self.t.readline(0.0)
        acks, self._pending = self._pending, []
        return acks

    def _handle(self, line: str) -> Event:
        ev = parse(line)
        self._alive = time.monotonic()
        if isinstance(ev, Garbled):
            self.watch.garbled(ev, self.t.port)
        else:
            self.watch.good()
        if isinstance(ev, Ok):
            self._on_ok(ev)
        elif isinstance(ev, Resend):
            self._on_resend(ev.line)
        elif isinstance(ev, Error):
            if self.fifo:
                self.fifo[0].refused = True
                self.fifo[0].error = ev.text
            log.info("Marlin: %s", ev.text)
        elif isinstance(ev, Halted):
            raise FirmwareError(f"Marlin halted ({ev.text}); the board needs M999 or a reset",
                                needs_reset=True)
        elif isinstance(ev, Busy):
            self.waiting_for_user = "paused for user" in ev.text
        elif isinstance(ev, Start):
            raise BoardReset("Marlin reset ('start') mid-job: buffered lines are lost")
        elif isinstance(ev, Position):
            self.position = (ev.x, ev.y)
            # the answer to our probe: every line sent before it was processed, so their
            # oks were lost
            if any(f.probe for f in self.fifo):
                while self.fifo and not self.fifo[0].probe:
                    self._pop(lost=True)
        elif isinstance(ev, Unknown):
            log.warning("Marlin sent an unrecognised line %r", line)
        if isinstance(ev, Echo | Unknown | Position) and hasattr(self, "_echo"):
            self._echo.append(line)
        return ev

    def _pop(self, lost: bool = False, ok: Ok | None = None) -> None:
        f = self.fifo.popleft()
        if f.error is not None and not f.resend_seen and f.item is not None:
            # refused without a resend request: the line did not run. Going on would drop
            # it (a pen-up dropped drags a wet pen across the paper): stop the job
            raise FirmwareError(f"Marlin refused {f.item.text!r}: Error:{f.error}")
        if f.item is None or f.refused:
            return
        self.acked.append(f.item)
        self._pending.append(Ack(f.item, None, lost))
        # at most planner_size acknowledged moves can still be queued
        self.executed_seq = max(self.executed_seq, self._walk_back(self.planner_size))
        if f.item.sync and not lost:  # M400 / G4: answered once the planner is empty
            self.executed_seq = max(self.executed_seq, f.item.seq)
        if self.fifo:
            self.fifo[0].since = time.monotonic()

    def _on_ok(self, ev: Ok) -> None:
        if not self.fifo:
            log.warning("Marlin sent ok with nothing in flight (late ok?)")
            return
        self._pop(ok=ev)
        if ev.planner_free is not None:
            self.planner_size = max(self.planner_size, ev.planner_free)
            used = self.planner_size - ev.planner_free
            self.executed_seq = max(self.executed_seq, self._walk_back(used))

    def _walk_back(self, used: int) -> int:
        skipped = 0
        for item in reversed(self.acked):
            if skipped >= used:
                return item.seq
            if item.motion:
                skipped += 1
        return 0

    def _on_resend(self, n: int) -> None:
        head = self.fifo[0] if self.fifo else None
        if head is not None and head.gen < self.gen:
            # answers a line sent before our last rewind: already being resent
            log.info("ignoring stale resend request for line %d", n)
            head.refused = True
            return
        if head is not None and head.resend_seen:
            return  # the same request repeated within one answer
        if head is not None:
            head.refused = head.resend_seen = True
            head.error = None
        if n >= self.next_n:
            log.info("resend request for line %d that was never sent: ignored", n)
            return
        if n not in self.history:
            raise FirmwareError(f"Marlin asked to resend line {n}, which is no longer in the "
                                f"history of the last {HISTORY} lines")
        self.resend_counts[n] = self.resend_counts.get(n, 0) + 1
        if self.resend_counts[n] > MAX_RESENDS:
            raise FirmwareError(f"Marlin asked for line {n} ({self.history[n].text!r}) more "
                                f"than {MAX_RESENDS} times: giving up (noisy line or resend "
                                "loop)")
        self.gen += 1
        for f in list(self.fifo)[1:]:
            f.refused = True  # sent after the refused line: Marlin drops them too
        self.resend_queue = deque((k, self.history[k]) for k in range(n, self.next_n)
                                  if k in self.history)
        log.info("Marlin asked for line %d: resending %d lines", n, len(self.resend_queue))

    def tick(self) -> None:
        """The ok timeout: busy keep-alives extend it; on expiry ask M114 (unnumbered); no
        answer to that means the link is lost."""
        if not self.fifo:
            return
        now = time.monotonic()
        head = self.fifo[0]
        probe = next((f for f in self.fifo if f.probe), None)
        if probe is not None:
            if now - max(probe.since, self._alive) > self.T.silence:
                raise LinkLost(f"{self.t.port}: nothing received from Marlin for "
                               f"{self.T.silence:g} s")
            return
        wait = self.T.homing if head.item is not None and head.item.wait < 0 else (
            head.item.wait if head.item is not None else 0.0)
        if now - max(head.since, self._alive) > self.T.ok + wait:
            log.warning("no ok from Marlin for %.1f s: probing with M114", now - head.since)
            self.t.write(b"M114\n")
            self.fifo.append(_InFlight(None, None, self.gen, now, probe=True))

    def drain(self, timeout: float | None = None) -> list[Ack]:
        acks: list[Ack] = []
        deadline = time.monotonic() + (timeout or self.T.idle)
        while self.fifo or self.resend_queue:
            self.pump()
            acks += self.poll(0.02)
            self.tick()
            if time.monotonic() > deadline:
                raise FirmwareError(f"Marlin did not answer {len(self.fifo)} lines in time")
        acks += self._pending
        self._pending = []
        return acks

    def command(self, text: str) -> None:
        item = self.make_item(text, None, "command")
        self.send(item)
        # homing (G28) gets the homing timeout; busy keep-alives extend the ok timeout
        self.drain((self.T.homing if item.wait < 0 else self.T.command + item.wait)
                   + self.T.ok)

    # ---- what the Plotter asks ----
    def command_lines(self, text: str) -> list[str]:
        self._echo: list[str] = []
        try:
            self.command(text)
            return self._echo
        finally:
            del self._echo

    def work_position(self) -> tuple[float, float] | None:
        return self.position

    def state_name(self) -> str:
        return "pen change" if self.waiting_for_user else "idle" if not self.fifo else "run"

    def query_position(self) -> None:
        self.command("M114")

    def after_move(self) -> None:
        self.wait_idle()
        self.query_position()

    def head_item(self) -> Item | None:
        for f in self.fifo:
            if f.item is not None:
                return f.item
        return None

    def holding(self) -> bool:
        return self.waiting_for_user

    def lift_pen_quietly(self, pen_up: list[str]) -> None:
        try:
            for text in pen_up:
                self.command(text)
        except FirmwareError as e:
            log.warning("could not lift the pen after the reset: %s", e)

    def wait_idle(self) -> list[Ack]:
        """Everything acknowledged, then M400 answered: the planner is empty."""
        acks = self.drain()
        item = self.sync_item()
        self.send(item)
        acks += self.drain()
        self.executed_seq = max(self.executed_seq, item.seq)
        return acks

    def resume_hold(self) -> None:
        """A pen change (M0) waits for the user: M108 (emergency parser) lets it go on."""
        if self.waiting_for_user:
            self.waiting_for_user = False
            self.t.write(b"M108\n")
            self.fifo.append(_InFlight(None, None, self.gen, time.monotonic()))

    # ---- stopping ----
    def safe_cancel(self, pen_up: list[str]) -> None:
        """Marlin has no feed hold in its protocol: stop sending, let the few buffered
        commands finish, lift the pen."""
        self.drain()
        for text in pen_up:
            self.command(text)
        self.wait_idle()

    def stop_after_error(self, exc: FirmwareError, pen_up: list[str]) -> None:
        if exc.needs_reset:
            # a halted Marlin only comes back through a reset: reopen (DTR pulse)
            self.t.reconnect()
            self.connect()
        else:
            # start numbering afresh: whatever line Marlin was stuck on is abandoned
            self._reset_stream_state()
            self._drain_quiet(0.1)
            self._handshake()
        for text in pen_up:
            self.command(text)
        self.wait_idle()
