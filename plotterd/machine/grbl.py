"""GRBL 1.1 host driver: every line from the board is parsed once into a typed event; the
driver streams by character counting, polls status at most 5 Hz, and recovers from lost
``ok``s by asking the machine what it is doing."""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from dataclasses import dataclass

from plotterd.errors import PlotterdError
from plotterd.machine.base import (
    Ack,
    BoardReset,
    FirmwareError,
    Garbled,
    GarbledReply,
    GarbledWatch,
    Item,
    LinkLost,
    Timeouts,
    make_item,
    non_finite,
    readable,
    reply_int,
    reply_number,
)
from plotterd.machine.grbl_codes import alarm_text, error_text
from plotterd.machine.transport import Transport

log = logging.getLogger("plotterd.machine.grbl")

SOFT_RESET = b"\x18"
LINE_MAX = 79  # GRBL's 80-byte line buffer keeps one byte for the terminator


# ---- events: one typed value per line received ----
@dataclass(frozen=True)
class Ok:
    pass


@dataclass(frozen=True)
class Error:
    code: int

    @property
    def text(self) -> str:
        return error_text(self.code)


@dataclass(frozen=True)
class Alarm:
    code: int

    @property
    def text(self) -> str:
        return alarm_text(self.code)


@dataclass(frozen=True)
class Status:
    state: str  # Idle, Run, Hold, Jog, Alarm, Door, Check, Home, Sleep
    sub: int | None  # Hold:0 / Hold:1, Door:n
    mpos: tuple[float, ...] | None
    wpos: tuple[float, ...] | None
    wco: tuple[float, ...] | None
    planner_free: int | None
    rx_free: int | None
    feed: float | None
    spindle: float | None


@dataclass(frozen=True)
class Banner:
    version: str


@dataclass(frozen=True)
class Opt:
    flags: str
    blocks: int | None
    rx_bytes: int | None


@dataclass(frozen=True)
class Message:
    text: str  # [MSG:...], [VER:...], [GC:...] and other bracketed feedback


@dataclass(frozen=True)
class Setting:
    key: int
    value: str


@dataclass(frozen=True)
class Unknown:
    text: str


Event = Ok | Error | Alarm | Status | Banner | Opt | Message | Setting | Unknown | Garbled

_BANNER = re.compile(r"^Grbl(?:HAL)?\s+(\S+)")  # GRBL, grblHAL, FluidNC
_POSITION_FIELDS = ("MPos", "WPos", "WCO")
_NUMERIC_FIELDS = (*_POSITION_FIELDS, "Bf", "FS", "F", "Ov", "Ln")


def _floats(s: str) -> tuple[float, ...] | None:
    values = [reply_number(v) for v in s.split(",")]
    return None if any(v is None for v in values) else tuple(values)  # type: ignore[misc]


def parse(line: str) -> Event:
    """One line from GRBL -> one event; a line that is not one of GRBL's replies, or one
    whose numbers do not read, is Garbled (never an exception)."""
    s = line.strip()
    if not readable(s):
        return Garbled(line, "characters GRBL never sends")
    if s == "ok":
        return Ok()
    for prefix, kind in (("error:", Error), ("ALARM:", Alarm)):
        if s.startswith(prefix):
            code = reply_int(s[len(prefix):])
            return kind(code) if code is not None else Garbled(line, f"bad {prefix} code")
    if s.startswith("<"):
        return _parse_status(line, s)
    m = _BANNER.match(s)
    if m:
        return Banner(m.group(1))
    if s.startswith("["):
        return _parse_bracketed(line, s)
    if s.startswith("$") and "=" in s:
        k, _, v = s[1:].partition("=")
        key = reply_int(k)
        if key is None:
            return Unknown(s)  # $N0=... startup blocks
        return Setting(key, v) if reply_number(v) is not None else \
            Garbled(line, f"setting ${k} is not a number")
    if s.startswith(">"):
        return Unknown(s)  # a startup block echoed as it runs
    return Garbled(line, "not a GRBL reply")


def _parse_bracketed(line: str, s: str) -> Event:
    if not s.endswith("]"):
        return Garbled(line, "truncated feedback message")
    if s.startswith("[OPT:"):
        parts = s[5:-1].split(",")
        nums = [reply_int(p) for p in parts[1:3]]
        if any(n is None for n in nums):
            return Garbled(line, "bad build options")
        return Opt(parts[0], *(nums + [None, None])[:2])
    return Message(s[1:-1])


def _parse_status(line: str, s: str) -> Status | Garbled:
    if not s.endswith(">"):
        return Garbled(line, "truncated status report")
    fields = s[1:-1].split("|")
    state, colon, sub = fields[0].partition(":")
    sub_n = reply_int(sub) if colon else None
    if not state.isalpha() or (colon and sub_n is None):
        return Garbled(line, "bad state in status report")
    values: dict[str, tuple[float, ...]] = {}
    for f in fields[1:]:
        k, _, v = f.partition(":")
        if k not in _NUMERIC_FIELDS:
            if not k.isalpha():
                return Garbled(line, "bad field name in status report")
            continue  # Pn:XYZ, A:SFM and other text fields: not used here
        nums = _floats(v)
        if nums is None:
            lost = k in _POSITION_FIELDS and any(non_finite(x) for x in v.split(","))
            return Garbled(line, f"bad {k} field in status report"
                           + ("; the position is not a number" if lost else ""),
                           position=lost)
        values[k] = nums
    if "MPos" not in values and "WPos" not in values:
        return Garbled(line, "status report without a position")
    bf = values.get("Bf", ())
    fs = values.get("FS", values.get("F", ()))
    return Status(
        state=state, sub=sub_n, mpos=values.get("MPos"), wpos=values.get("WPos"),
        wco=values.get("WCO"),
        planner_free=int(bf[0]) if len(bf) > 0 else None,
        rx_free=int(bf[1]) if len(bf) > 1 else None,
        feed=fs[0] if fs else None,
        spindle=fs[1] if len(fs) > 1 else None,
    )


def setting_number(settings: dict[int, str], key: int, default: float) -> float:
    """A numeric GRBL setting ($10, $22...); GarbledReply when its value does not read."""
    raw = settings.get(key)
    if raw is None:
        return default
    v = reply_number(raw)
    if v is None:
        raise GarbledReply(f"${key}={raw}", "setting is not a number")
    return v


@dataclass
class _InFlight:
    item: Item
    nbytes: int
    since: float


class GrblDriver:
    """Character-counting streaming to GRBL 1.1 over a Transport."""

    firmware = "grbl"
    line_max = LINE_MAX

    def __init__(self, transport: Transport, timeouts: Timeouts, rx_size: int | None = None,
                 flow: str = "count"):
        """``flow``: "count" (character counting) or "wait" (send one line, wait for its ok:
        simpler, but starves the planner on short segments)."""
        if flow not in ("count", "wait"):
            raise ValueError(f"flow {flow!r}: expected count or wait")
        self.flow = flow
        self.t = transport
        self.T = timeouts
        self.rx_config = rx_size
        self.rx_size = rx_size or 128
        self.blocks = 15
        self._reset_stream_state()
        self.wco = (0.0, 0.0, 0.0)
        self.status: Status | None = None
        self.status_time = 0.0
        self.seq = 0
        self.settings: dict[int, str] = {}
        self.status_mask = 1  # GRBL 1.1 default $10=1: MPos, no Bf:
        self.watch = GarbledWatch(timeouts.garbled_run)

    def _reset_stream_state(self) -> None:
        self.fifo: deque[_InFlight] = deque()
        self.in_flight_bytes = 0
        self.acked: deque[Item] = deque(maxlen=512)
        self.executed_seq = getattr(self, "executed_seq", 0)
        self._status_sent: float | None = None
        self._last_poll = 0.0
        self._quiet_since: float | None = None
        self._pending: list[Ack] = []
        self._seen_banner = False

    @property
    def rx_limit(self) -> int:
        # one byte of margin: GRBL's ring buffer of N bytes holds N-1
        return self.rx_size - 1

    @property
    def in_flight(self) -> int:
        return len(self.fifo)

    def make_item(self, text: str, tag: int | None = None, kind: str = "setup") -> Item:
        return make_item(text, "grbl", tag, kind)

    def sync_item(self) -> Item:
        """A line acknowledged only once everything before it has run (G4 P0)."""
        return make_item("G4 P0", "grbl", None, "sync")

    # ---- connecting ----
    def connect(self) -> None:
        """After opening the port: wait for the banner (soft-reset if none came), learn the
        buffer sizes from $I, and unlock an alarm left from before."""
        self._reset_stream_state()
        # an Arduino's bootloader takes 1-2 s; a board without auto-reset (or a pty) never
        # sends a banner on its own: then a soft reset asks for one (if it lands in the
        # bootloader it is lost, but the banner comes anyway)
        if not self._wait_banner(min(self.T.banner, 2.5)):
            self.t.write(SOFT_RESET)
            if not self._wait_banner(self.T.banner):
                raise LinkLost(f"{self.t.port}: no GRBL banner after opening and a soft reset")
        self._after_banner()

    def _after_banner(self) -> None:
        """$I for the buffer sizes and $$ for the settings. No unlock here: whether an
        alarm may be cleared is the Plotter's decision (homing machines must home)."""
        try:
            for ev in self.command("$I"):
                if isinstance(ev, Opt):
                    if ev.blocks:
                        self.blocks = ev.blocks
                    if ev.rx_bytes and not self.rx_config:
                        self.rx_size = ev.rx_bytes
        except FirmwareError as e:
            log.info("$I not supported (%s); assuming %d-byte buffer", e, self.rx_size)
        self.read_settings()
        self.query_status()

    def read_settings(self) -> dict[int, str]:
        """``$$`` -> {number: value}; $10 says which status fields come (bit 1: Bf:)."""
        events = self.command("$$")
        bad = next((ev for ev in events if isinstance(ev, Garbled)), None)
        if bad is not None:  # a setting lost on the way: homing, limits... cannot be known
            raise bad.error()
        settings = {ev.key: ev.value for ev in events if isinstance(ev, Setting)}
        self.settings = settings
        self.status_mask = int(setting_number(settings, 10, 1)) & 0xFF
        return settings

    @property
    def reports_buffer(self) -> bool:
        return bool(self.status_mask & 2)

    # ---- what the Plotter asks ----
    def command_lines(self, text: str) -> list[str]:
        """A send-and-wait command; the firmware's answer lines before its ok."""
        out = []
        for ev in self.command(text, None):
            if isinstance(ev, Setting):
                out.append(f"${ev.key}={ev.value}")
            elif isinstance(ev, Message):
                out.append(f"[{ev.text}]")
            elif isinstance(ev, Opt):
                out.append(f"[OPT:{ev.flags},{ev.blocks},{ev.rx_bytes}]")
            elif isinstance(ev, Unknown):
                out.append(ev.text)
        return out

    def work_position(self) -> tuple[float, float] | None:
        st = self.status
        if st is None:
            return None
        if st.wpos is not None:
            return (st.wpos[0], st.wpos[1])
        if st.mpos is not None:
            return (st.mpos[0] - self.wco[0], st.mpos[1] - self.wco[1])
        return None

    def state_name(self) -> str:
        st = self.status
        return st.state.lower() if st is not None else "unknown"

    def query_position(self) -> None:
        self.query_status()

    def after_move(self) -> None:
        """Wait until the machine is idle again (the move ran), so the position is fresh."""
        self.wait_idle()

    def sleep(self) -> None:
        """$SLP: steppers and spindle off; GRBL wakes only through a reset, locked."""
        self.command("$SLP")

    def wake(self) -> None:
        """Out of sleep: a soft reset, then greet the board again (it comes back locked)."""
        self._reset_stream_state()
        self.t.write(SOFT_RESET)
        if not self._wait_banner(self.T.banner):
            raise LinkLost(f"{self.t.port}: GRBL did not wake from sleep after a reset")
        self._after_banner()

    def head_item(self) -> Item | None:
        return self.fifo[0].item if self.fifo else None

    def holding(self) -> bool:
        return self.status is not None and self.status.state == "Hold"

    def lift_pen_quietly(self, pen_up: list[str]) -> None:
        """Best effort after a reset that lost the position: the pen up, nothing else."""
        try:
            st = self.query_status()
            if st.state == "Alarm":
                return  # locked: a servo pen is already up after a reset (spindle off)
            for text in pen_up:
                self.command(text)
        except PlotterdError as e:
            log.warning("could not lift the pen after the reset: %s", e)

    def _wait_banner(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            line = self.t.readline(max(0.0, deadline - time.monotonic()))
            if line is None:
                return False
            ev = parse(line)
            if isinstance(ev, Banner):
                return True
            if isinstance(ev, Status):
                self._note_status(ev)

    def recover_after_reset(self) -> None:
        """The board reset mid-job: forget what was in flight, drain to the banner, unlock."""
        seen = self._seen_banner
        self._reset_stream_state()
        if not seen:  # after ALARM:3 the banner is still to come
            self._wait_banner(min(self.T.banner, 1.0))
        self._after_banner()

    # ---- send-and-wait ----
    def command(self, text: str, timeout: float | None = None) -> list[Event]:
        """Send one line and wait for its ok (settings, $X, $I: one at a time). Returns the
        events received before the ok; FirmwareError on error:/ALARM:."""
        if self.fifo:
            self.drain()
        item = self.make_item(text)
        if timeout is None:
            timeout = self.T.homing if item.wait < 0 else self.T.command + item.wait
        self.t.write((item.text + "\n").encode("ascii", "replace"))
        events: list[Event] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.t.readline(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise LinkLost(f"{self.t.port}: no answer to {text!r} within {timeout:g} s")
            ev = self._read(line)
            if isinstance(ev, Ok):
                return events
            if isinstance(ev, Error):
                raise FirmwareError(f"GRBL refused {text!r}: {ev.text}")
            if isinstance(ev, Alarm):
                raise FirmwareError(f"GRBL {ev.text}", alarm=ev.code)
            if isinstance(ev, Banner):
                raise BoardReset(f"GRBL reset while waiting for {text!r}")
            if isinstance(ev, Status):
                self._note_status(ev)
            events.append(ev)

    def query_status(self, timeout: float | None = None) -> Status:
        """Ask '?' and wait for the report."""
        timeout = self.T.status if timeout is None else timeout
        give_up = time.monotonic() + max(2 * timeout, self.T.silence + timeout)
        while True:
            self.t.write(b"?")
            deadline = time.monotonic() + timeout
            while True:
                line = self.t.readline(max(0.0, deadline - time.monotonic()))
                if line is None:
                    break
                ev = self._handle(line)
                if isinstance(ev, Status):
                    return ev
            self._check_alive()
            if time.monotonic() > give_up:
                raise LinkLost(f"{self.t.port}: GRBL answers, but not to status queries")

    def _check_alive(self) -> None:
        """LinkLost when nothing at all has come from the board for ``silence`` seconds."""
        quiet = self.t.quiet_for()
        if quiet > self.T.silence:
            raise LinkLost(f"{self.t.port}: nothing received from GRBL for {quiet:.1f} s")

    # ---- streaming ----
    def can_send(self, item: Item) -> bool:
        if self.flow == "wait":
            return not self.fifo
        n = len(item.text) + 1
        return not self.fifo or self.in_flight_bytes + n <= self.rx_limit

    def send(self, item: Item) -> None:
        self.seq += 1
        item.seq = self.seq
        data = (item.text + "\n").encode("ascii", "replace")
        self.t.write(data)
        self.fifo.append(_InFlight(item, len(data), time.monotonic()))
        self.in_flight_bytes += len(data)

    def poll(self, timeout: float) -> list[Ack]:
        """Read what the board sent (waiting up to ``timeout`` for the first line)."""
        line = self.t.readline(timeout)
        while line is not None:
            self._handle(line)
            line = self.t.readline(0.0)
        acks, self._pending = self._pending, []
        return acks

    def _pop(self, error: str | None = None, lost: bool = False) -> None:
        f = self.fifo.popleft()
        self.in_flight_bytes -= f.nbytes
        self.acked.append(f.item)
        self._pending.append(Ack(f.item, error, lost))
        # whatever the last status said, at most `blocks` acknowledged moves can still be
        # waiting in the planner: everything acknowledged before them has run; and a dwell
        # is answered only once the planner is empty
        bound = f.item.seq if f.item.sync and error is None and not lost else \
            self._walk_back(self.blocks)
        self.executed_seq = max(self.executed_seq, bound)
        if self.fifo:
            self.fifo[0].since = time.monotonic()

    def _read(self, line: str) -> Event:
        """Parse one line; garbled ones are counted (a run of them raises GarbledReply)."""
        ev = parse(line)
        if isinstance(ev, Garbled):
            self.watch.garbled(ev, self.t.port)
        else:
            self.watch.good()
        return ev

    def _handle(self, line: str) -> Event:
        ev = self._read(line)
        if isinstance(ev, Ok | Error):
            if not self.fifo:
                log.warning("GRBL answered %r with nothing in flight (late ok?)", line)
                return ev
            self._pop(ev.text if isinstance(ev, Error) else None)
        elif isinstance(ev, Status):
            self._note_status(ev)
        elif isinstance(ev, Alarm):
            if ev.code == 3:
                raise BoardReset(f"GRBL {ev.text}")
            raise FirmwareError(f"GRBL {ev.text}", alarm=ev.code)
        elif isinstance(ev, Banner):
            self._seen_banner = True
            raise BoardReset("GRBL reset (new banner) mid-job: buffered lines are lost")
        elif isinstance(ev, Unknown):
            log.warning("GRBL sent an unrecognised line %r", line)
        return ev

    def _note_status(self, st: Status) -> None:
        self.status = st
        self.status_time = time.monotonic()
        self._status_sent = None
        if st.wco:
            self.wco = st.wco
        if st.planner_free is not None:
            used = max(0, self.blocks - st.planner_free)
            self.executed_seq = max(self.executed_seq, self._walk_back(used))

    def _walk_back(self, used: int) -> int:
        """seq of the last acknowledged line known executed when ``used`` planner blocks
        are still queued: the last ``used`` acknowledged motion lines may not have run."""
        skipped = 0
        for item in reversed(self.acked):
            if skipped >= used:
                return item.seq
            if item.motion:
                skipped += 1
        return 0

    def tick(self) -> None:
        """Status polling and the ok timeout; raises LinkLost when nothing at all came from
        the board for ``silence`` seconds (a status report that goes missing while oks
        flow is only asked again)."""
        now = time.monotonic()
        if self._status_sent is not None and now - self._status_sent > self.T.status:
            self._status_sent = None  # unanswered: ask again below
            self._check_alive()
        if self._status_sent is None and now - self._last_poll >= self.T.poll:
            self._last_poll = now
            self._status_sent = now
            self.t.write(b"?")
        if not self.fifo:
            self._quiet_since = None
            return
        head = self.fifo[0]
        limit = self.T.homing if head.item.wait < 0 else self.T.ok + head.item.wait
        if now - head.since <= limit:
            return
        st = self.status
        if st is None or self.status_time < head.since:
            return  # wait for a fresh status; silence ends in LinkLost above
        if st.state in ("Run", "Hold", "Jog", "Home", "Door"):
            head.since = now  # the machine is busy: the ok is late, not lost
            self._quiet_since = None
            return
        if st.state == "Alarm":
            raise FirmwareError("GRBL is in Alarm state", alarm=0)
        # without Bf: (stock $10=1) Idle alone says the planner is empty; the receive
        # buffer cannot hold a complete line for long while GRBL is idle, so a longer
        # quiet spell stands in for "rx empty"
        has_bf = st.planner_free is not None and st.rx_free is not None
        empty = (st.planner_free == self.blocks and st.rx_free == self.rx_size) if has_bf \
            else True
        if st.state in ("Idle", "Check") and empty:
            # idle with empty buffers yet lines unanswered: their oks were lost. Wait out any
            # dwell still in flight (GRBL reports Idle while dwelling) before believing it.
            quiet = max((f.item.wait for f in self.fifo), default=0.0) + 2 * self.T.poll
            if not has_bf:
                quiet += 4 * self.T.poll
            if self._quiet_since is None:
                # first a cycle start: GRBL idle with a block planned but never started (a
                # lost auto-start) waits in the sync of M3/M5/G4 for ever; '~' while idle
                # starts what is planned and does nothing else
                self.t.write(b"~")
                self._quiet_since = now
                log.info("GRBL idle with %d lines unanswered: cycle start sent",
                         len(self.fifo))
            elif self.status_time - self._quiet_since >= quiet:
                log.warning("GRBL idle with %d lines unanswered: treating their oks as lost",
                            len(self.fifo))
                while self.fifo:
                    self._pop(lost=True)
                self.executed_seq = max(self.executed_seq, self.seq)
                self._quiet_since = None
            return
        if now - head.since > 3 * limit:
            raise FirmwareError(f"GRBL stalled: no ok for {head.item.text!r} in "
                                f"{now - head.since:.1f} s (state {st.state})")

    def drain(self, timeout: float | None = None) -> list[Ack]:
        """Wait until every line in flight is answered (ok, error or lost)."""
        acks: list[Ack] = []
        deadline = time.monotonic() + (timeout or self.T.idle)
        while self.fifo:
            acks += self.poll(0.02)
            self.tick()
            if time.monotonic() > deadline:
                raise FirmwareError(f"GRBL did not answer {len(self.fifo)} lines in time")
        return acks + self._flush_pending()

    def _flush_pending(self) -> list[Ack]:
        acks, self._pending = self._pending, []
        return acks

    def wait_idle(self) -> list[Ack]:
        """A job is done when every line is acknowledged and the machine reports Idle with an
        empty planner."""
        acks = self.drain()
        deadline = time.monotonic() + self.T.idle
        last_pos = None
        while True:
            st = self.query_status()
            if st.state in ("Idle", "Check") and (st.planner_free in (None, self.blocks)):
                self.executed_seq = self.seq
                return acks
            if st.state == "Alarm":
                raise FirmwareError("GRBL is in Alarm state", alarm=0)
            pos = st.mpos or st.wpos
            if pos != last_pos:  # still moving: not stuck
                deadline, last_pos = time.monotonic() + self.T.idle, pos
            if time.monotonic() > deadline:
                raise FirmwareError(f"GRBL still {st.state} and not moving after "
                                    f"{self.T.idle:g} s")
            acks += self.poll(self.T.poll)

    def resume_hold(self) -> None:
        """A program pause (M0, a pen change) holds GRBL until cycle start."""
        if self.status is not None and self.status.state == "Hold":
            self.t.write(b"~")

    def unlock(self) -> None:
        self.command("$X")

    def home(self) -> None:
        self.command("$H")  # the homing timeout applies

    def write_settings(self, settings: dict[int, float | int | str]) -> None:
        """``$n=v`` one at a time, each acknowledged before the next (EEPROM writes stop
        serial receive on AVR)."""
        for key, value in settings.items():
            self.command(f"${int(key)}={value}")

    # ---- stopping ----
    def safe_cancel(self, pen_up: list[str]) -> None:
        """Feed hold, wait until the machine stands still in Hold:0, soft-reset (voids the
        buffers), unlock, lift the pen."""
        st = self.query_status()
        if self.fifo or st.state not in ("Idle", "Check"):
            self.t.write(b"!")
            deadline = time.monotonic() + self.T.ok + max(
                (f.item.wait for f in self.fifo), default=0.0)
            prev = None
            while True:
                time.sleep(self.T.poll)
                st = self.query_status()
                if st.state in ("Idle", "Alarm") or (st.state == "Hold" and st.sub == 0
                                                      and st.mpos == prev):
                    break
                prev = st.mpos
                if time.monotonic() > deadline:
                    raise FirmwareError("GRBL did not come to a stop after a feed hold")
            self.t.write(SOFT_RESET)
            self._reset_stream_state()
            self._wait_banner(self.T.banner)
            st = self.query_status()
        self._reset_stream_state()
        if st.state == "Alarm":
            self.command("$X")
        for text in pen_up:
            self.command(text)
        self.wait_idle()

    def _reset_after_critical(self) -> None:
        """Ctrl-X until the banner comes. GRBL enters its critical-event loop (no status
        reports either) only after printing ALARM:N, and clears a reset that came earlier:
        wait for [MSG:Reset to continue] first, and send it again if no banner follows."""
        deadline = time.monotonic() + min(self.T.banner, 1.0)
        while True:
            line = self.t.readline(max(0.0, deadline - time.monotonic()))
            if line is None or "Reset to continue" in line:
                break
            if isinstance(parse(line), Banner):
                return
        for _ in range(3):
            self.t.write(SOFT_RESET)
            if self._wait_banner(min(self.T.banner, 1.0)):
                return
        raise LinkLost(f"{self.t.port}: GRBL did not come back after a reset (Ctrl-X)")

    def stop_after_error(self, exc: FirmwareError, pen_up: list[str]) -> None:
        """After error:N the lines already buffered still run; let them, then lift the pen.
        After an alarm, unlock first."""
        if exc.alarm is not None:
            # after a limit alarm GRBL reads nothing until a reset ([MSG:Reset to
            # continue]); the machine has stopped, so Ctrl-X loses nothing more
            self._reset_stream_state()
            self._reset_after_critical()
            st = self.query_status()
            if st.state == "Alarm":
                self.command("$X")
        else:
            try:
                self.drain(self.T.ok)
            except FirmwareError:
                pass
        for text in pen_up:
            self.command(text)
        self.wait_idle()
