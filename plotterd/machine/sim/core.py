"""What every simulated plotter shares: configuration from the URL, a machine clock, a serial
line with latency, a planner/executor with acceleration, the pen, and the record of what was
drawn.

The simulator is event driven and lazy: nothing runs in a thread. Every call from the host
side (write, read, in_waiting) first advances the machine to "now", processing in time order
the bytes that have arrived, the blocks that finished and the firmware's timers. In
``speed=instant`` every duration and latency is zero, so a run is fully deterministic.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from plotterd.machine.sim.faults import FaultPlan, parse_faults

INF = float("inf")


@dataclass
class SimConfig:
    firmware: str = "grbl"  # grbl | marlin
    speed: str = "instant"  # instant | realtime | scaled:<factor>
    factor: float = 1.0  # machine seconds per wall second
    instant: bool = True
    seed: int = 0
    faults: str = ""
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 420.0, 300.0)  # xmin ymin xmax ymax
    z_range: tuple[float, float] = (-10.0, 50.0)
    accel: float = 1000.0  # mm/s^2
    rapid: float = 6000.0  # mm/min for G0
    junction_deviation: float = 0.01  # mm (GRBL $11)
    latency: float = 0.002  # s per direction on the USB link (machine time)
    boot: float | None = None  # s from reset to banner (default: instant 0.01, else 1.0)
    pen: str = ""  # servo | z | m280 (default from firmware)
    pen_range: tuple[float, float] | None = None  # S (or angle) values meaning "down"
    z_down: float = 0.5  # Z pens: down when z <= z_down
    rx_size: int = 128
    blocks: int = 0  # planner blocks (default: GRBL 15, Marlin 16)
    homing: bool = False  # GRBL $22
    record: str | None = None
    advanced_ok: bool = True  # Marlin: "ok N P B"

    @property
    def pen_mode(self) -> str:
        return self.pen or {"grbl": "servo", "marlin": "m280"}[self.firmware]

    @property
    def down_range(self) -> tuple[float, float]:
        if self.pen_range is not None:
            return self.pen_range
        return (1.0, 1000.0) if self.pen_mode == "servo" else (0.0, 60.0)


def parse_url(url: str) -> SimConfig:
    """``sim://grbl?speed=instant&seed=1&faults=...`` -> SimConfig. ValueError when invalid."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sim":
        raise ValueError(f"{url!r}: expected sim://grbl or sim://marlin")
    fw = (parts.netloc or parts.path.strip("/")).lower()
    if fw not in ("grbl", "marlin"):
        raise ValueError(f"{url!r}: unknown simulated firmware {fw!r} (grbl or marlin)")
    cfg = SimConfig(firmware=fw)
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        v = values[-1]
        try:
            if key == "speed":
                _set_speed(cfg, v)
            elif key == "seed":
                cfg.seed = int(v)
            elif key == "faults":
                parse_faults(v)  # validate now, so a bad URL fails on open
                cfg.faults = v
            elif key == "bounds":
                b = [float(x) for x in v.split(",")]
                if len(b) != 4 or b[0] >= b[2] or b[1] >= b[3]:
                    raise ValueError("expected xmin,ymin,xmax,ymax")
                cfg.bounds = (b[0], b[1], b[2], b[3])
            elif key in ("accel", "rapid", "latency", "boot", "z_down", "junction_deviation"):
                setattr(cfg, key, float(v))
            elif key == "pen":
                if v not in ("servo", "z", "m280"):
                    raise ValueError("expected servo, z or m280")
                cfg.pen = v
            elif key == "pen_range":
                lo, hi = (float(x) for x in v.split(":"))
                cfg.pen_range = (lo, hi)
            elif key in ("rx", "blocks"):
                setattr(cfg, "rx_size" if key == "rx" else key, int(v))
            elif key in ("homing", "advanced_ok"):
                setattr(cfg, key, v.lower() in ("1", "true", "yes", "on", ""))
            elif key == "record":
                cfg.record = v
            else:
                raise ValueError("unknown option")
        except ValueError as e:
            raise ValueError(f"{url!r}: option {key}={v!r}: {e}") from None
    if not cfg.blocks:
        cfg.blocks = 15 if fw == "grbl" else 16
    return cfg


def _set_speed(cfg: SimConfig, v: str) -> None:
    if v == "instant":
        cfg.instant, cfg.factor = True, 1.0
    elif v == "realtime":
        cfg.instant, cfg.factor = False, 1.0
    elif v.startswith("scaled:"):
        f = float(v.split(":", 1)[1])
        if not f > 0:
            raise ValueError("scale factor must be > 0")
        cfg.instant, cfg.factor = False, f
    else:
        raise ValueError("expected instant, realtime or scaled:<factor>")
    cfg.speed = v


@dataclass
class Block:
    """One planned linear move."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    feed: float  # mm/s
    pen_down: bool = False
    t_start: float = 0.0
    t_end: float = 0.0
    length: float = field(init=False)

    def __post_init__(self) -> None:
        self.length = math.dist(self.start, self.end)

    def unit(self) -> tuple[float, float, float]:
        if self.length <= 0:
            return (0.0, 0.0, 0.0)
        return tuple((e - s) / self.length for s, e in zip(self.start, self.end, strict=False))  # type: ignore

    def at(self, t: float) -> tuple[float, float, float]:
        """Position at time t (linear in time: close enough for status and resets)."""
        if self.t_end <= self.t_start or t >= self.t_end:
            return self.end
        f = max(0.0, (t - self.t_start) / (self.t_end - self.t_start))
        return tuple(s + (e - s) * f for s, e in zip(self.start, self.end, strict=False))  # type: ignore


def trapezoid_time(d: float, v0: float, v1: float, vmax: float, a: float) -> float:
    """Time to cover d mm entering at v0, leaving at v1, cruising at most at vmax (mm/s)."""
    if d <= 0:
        return 0.0
    vmax = max(vmax, v0, v1, 1e-9)
    d_acc = (vmax * vmax - v0 * v0) / (2 * a)
    d_dec = (vmax * vmax - v1 * v1) / (2 * a)
    if d_acc + d_dec <= d:
        return (vmax - v0) / a + (vmax - v1) / a + (d - d_acc - d_dec) / vmax
    vp = math.sqrt(max(0.0, (2 * a * d + v0 * v0 + v1 * v1) / 2))
    vp = max(vp, v0, v1)
    return (vp - v0) / a + (vp - v1) / a


class Simulator:
    """Base of the GRBL and Marlin simulators. Subclasses implement the firmware: what a byte
    arriving does (``_rx_byte``), the main loop (``_process``), timers and the banner."""

    firmware = "base"
    eol = b"\n"

    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        self.lock = threading.Condition(threading.RLock())
        self.faults = FaultPlan(parse_faults(cfg.faults), cfg.seed)
        self._t0 = time.monotonic()
        # what was drawn: pen-down segments in machine coordinates (x0, y0, x1, y1)
        self.segments: list[tuple[float, float, float, float]] = []
        # set by a completed zero-length XY move with the pen down (how a point is plotted),
        # cleared by any drawn segment; recorded as a dot when the pen lifts
        self._dot_pending: tuple[float, float] | None = None
        self.out_of_bounds: list[tuple[float, float, float]] = []  # targets refused/clamped
        self.events: list[tuple[float, str]] = []  # (machine time, what) for tests and logs
        self.resets = 0
        self.motion_end = 0.0  # machine time when the last move or dwell ended
        self.first_line_at: float | None = None  # machine time the first line was taken
        self.lines_received = 0
        self.dropped_bytes = 0
        self.pos = [0.0, 0.0, 0.0]  # physical head position (where the pen really is)
        # where the board's machine zero is, physically. A board without encoders knows its
        # position only by counting steps: after a reset it counts from 0 wherever the head
        # stands, so this becomes the head's position; homing makes it (0, 0) again.
        self.zero = [0.0, 0.0]
        self.home_at = (cfg.bounds[0], cfg.bounds[1])  # where homing switches put the head
        self.motors_off = False  # steppers released: the head can be pushed by hand
        self.servo: float | None = None  # S value / angle of the pen servo, None = off
        self.disconnected = False
        self.unplugged = False
        self.silent = False
        self._record_file = None
        if cfg.record:
            self._load_record(Path(cfg.record))
        self._incoming: deque[tuple[float, bytes]] = deque()
        self._outgoing: deque[tuple[float, bytes]] = deque()
        self._out_last = 0.0
        self._line_free = 0.0
        self._baud = 115200
        self._reset_machine_state()

    # ---- clock ----
    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.cfg.factor

    def wall_delay(self, machine_dt: float) -> float:
        return machine_dt / self.cfg.factor

    # ---- pen ----
    @property
    def pen_down(self) -> bool:
        mode = self.cfg.pen_mode
        if mode == "z":
            return self.pos[2] <= self.cfg.z_down
        if self.servo is None:
            return False
        lo, hi = self.cfg.down_range
        return lo <= self.servo <= hi

    def set_servo(self, t: float, value: float | None) -> None:
        was = self.pen_down
        self.servo = value
        self._note_pen(t, was)

    def _note_pen(self, t: float, was: bool) -> None:
        if self.pen_down != was:
            self.events.append((t, "pen down" if self.pen_down else "pen up"))
            if self.pen_down:
                self._dot_pending = None
            elif self._dot_pending is not None:
                # a zero-length pen-down move and no other: the pen left a dot (a point stroke)
                x, y = self._dot_pending
                self._record((x, y, x, y))
                self._dot_pending = None

    # ---- host side (called by the pyserial handler, any thread) ----
    def power_on(self, baudrate: int = 115200) -> None:
        """Power-on / DTR reset: the firmware restarts; the head and the drawing stay."""
        with self.lock:
            if self.unplugged:
                raise OSError(2, "No such file or directory (simulated plotter unplugged)")
            t = self.now()
            self._baud = baudrate
            self._truncate_motion(t)
            self.lose_position(t)
            self.disconnected = False
            self.silent = False
            self._incoming.clear()
            self._outgoing.clear()
            self._reset_machine_state()
            self.resets += 1
            self.events.append((t, "power_on"))
            self._boot(t + self.boot_delay())
            self.lock.notify_all()

    # ---- coordinates ----
    def lose_position(self, t: float) -> None:
        """A reset: step counting restarts at 0 where the head physically is."""
        self.zero = [self.pos[0], self.pos[1]]
        self.motors_off = False
        self.events.append((t, "position lost"))

    def homed(self, t: float) -> None:
        """Homing put the head on the switches: machine coordinates are physical again."""
        self.pos = [self.home_at[0], self.home_at[1], self.pos[2]]
        self.zero = [0.0, 0.0]
        self.events.append((t, "homed"))

    def to_machine(self, p) -> tuple[float, float, float]:
        return (p[0] - self.zero[0], p[1] - self.zero[1], p[2])

    def to_physical(self, m) -> tuple[float, float, float]:
        return (m[0] + self.zero[0], m[1] + self.zero[1], m[2])

    def machine_position(self, t: float) -> tuple[float, float, float]:
        return self.to_machine(self.position(t))

    def move_head_by_hand(self, x: float, y: float) -> None:
        """Push the head (physical mm) as a user does with the motors off."""
        with self.lock:
            if not self.motors_off:
                raise RuntimeError("the motors hold the head: turn them off first")
            self.pos[0], self.pos[1] = x, y

    def physical_target(self, t: float, machine_target) -> tuple[float, float, float]:
        """Where a move to ``machine_target`` really goes; beyond the frame the carriage
        stalls at the end of its travel (recorded in ``out_of_bounds``)."""
        p = self.to_physical(machine_target)
        if not self.in_bounds(p):
            self.out_of_bounds.append(p)
            x0, y0, x1, y1 = self.cfg.bounds
            z0, z1 = self.cfg.z_range
            p = (min(max(p[0], x0), x1), min(max(p[1], y0), y1), min(max(p[2], z0), z1))
        self.motors_off = False
        return p

    def boot_delay(self) -> float:
        """Reset to banner. Never zero: a host flushes its input right after opening (to drop
        line noise), and the banner has to come after that, as from a real board."""
        if self.cfg.boot is not None:
            return self.cfg.boot
        return 0.01 if self.cfg.instant else 1.0

    def host_write(self, data: bytes) -> None:
        with self.lock:
            self._check_link()
            t = self.now()
            if self.cfg.instant:
                arrive = t
            else:
                # bytes leave at the baud rate (10 bits each) and reach the board after the
                # link latency; a write queues behind what is still on the wire
                start = max(t, self._line_free)
                self._line_free = start + len(data) * 10.0 / self._baud
                arrive = self._line_free + self.cfg.latency
            self._incoming.append((arrive, bytes(data)))
            self._advance(t)
            self.lock.notify_all()

    def host_read(self, size: int, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        out = bytearray()
        with self.lock:
            while True:
                self._check_link()
                self._advance(self.now())
                t = self.now()
                while self._outgoing and self._outgoing[0][0] <= t and len(out) < size:
                    ready, chunk = self._outgoing.popleft()
                    take = size - len(out)
                    out += chunk[:take]
                    if len(chunk) > take:
                        self._outgoing.appendleft((ready, chunk[take:]))
                if len(out) >= size:
                    return bytes(out)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return bytes(out)
                nxt = self._next_event()
                if self._outgoing:
                    nxt = min(nxt, self._outgoing[0][0])
                wait = self.wall_delay(max(0.0, nxt - t)) if nxt < INF else None
                if left is not None:
                    wait = left if wait is None else min(wait, left)
                self.lock.wait(None if wait is None else max(wait, 0.0005))

    def host_in_waiting(self) -> int:
        with self.lock:
            self._check_link()
            t = self.now()
            self._advance(t)
            return sum(len(c) for r, c in self._outgoing if r <= t)

    def host_reset_input(self) -> None:
        with self.lock:
            t = self.now()
            self._advance(t)
            while self._outgoing and self._outgoing[0][0] <= t:
                self._outgoing.popleft()

    def _check_link(self) -> None:
        if self.disconnected or self.unplugged:
            from serial import SerialException

            raise SerialException("device disconnected (simulated)")

    # ---- output ----
    def emit(self, t: float, text: str) -> None:
        if self.silent or self.disconnected:
            return
        data = text.encode("latin-1") + self.eol
        if self.cfg.instant:
            ready = t + self.faults.delay()
        else:
            ready = t + self.cfg.latency + len(data) * 10.0 / self._baud + self.faults.delay()
        ready = max(ready, self._out_last)  # the wire keeps the order
        self._out_last = ready
        self._outgoing.append((ready, data))

    def go_silent(self, t: float) -> None:
        self.silent = True
        self._outgoing.clear()
        self.events.append((t, "silence"))

    def go_away(self, t: float, forever: bool) -> None:
        self._truncate_motion(t)
        self.disconnected = True
        self.unplugged = forever
        self.servo = None  # the board lost power: the servo signal stops, the pen lifts
        self._outgoing.clear()
        self._incoming.clear()
        self.events.append((t, "unplug" if forever else "disconnect"))

    # ---- the event loop ----
    def _advance(self, t: float) -> None:
        for _ in range(1_000_000):
            t_in = self._incoming[0][0] if self._incoming else INF
            t_ex = self.current.t_end if self.current is not None else INF
            t_tm = self._next_timer()
            te = min(t_in, t_ex, t_tm)
            if te > t:
                break
            if t_ex == te:
                self._finish_block(te)
            elif t_in == te:
                _, data = self._incoming.popleft()
                if not (self.disconnected or self.silent):
                    for b in data:
                        self._rx_byte(te, b)
                        if b == 0x0A:
                            # the firmware takes a line as soon as it is complete, while
                            # the rest of the chunk is still arriving
                            self._process(te)
            else:
                self._timer(te)
            self._process(te)
        self._process(t)

    def _next_event(self) -> float:
        t_in = self._incoming[0][0] if self._incoming else INF
        t_ex = self.current.t_end if self.current is not None else INF
        return min(t_in, t_ex, self._next_timer())

    # ---- executor ----
    def _reset_machine_state(self) -> None:
        self.planner: deque[Block] = deque()
        self.current: Block | None = None
        self.hold = False
        self._exit_v = 0.0
        self._reset_firmware()

    def planner_used(self) -> int:
        return len(self.planner) + (1 if self.current is not None else 0)

    def executor_idle(self) -> bool:
        return self.current is None and not self.planner

    def queue_move(self, t: float, target: tuple[float, float, float], feed_mm_min: float,
                   start: tuple[float, float, float]) -> None:
        blk = Block(start, target, max(feed_mm_min, 1e-3) / 60.0)
        self.planner.append(blk)
        if self.current is None and not self.hold:
            self._start_next(t)

    def _start_next(self, t: float) -> None:
        if not self.planner or self.hold:
            self.current = None
            self._exit_v = 0.0
            return
        blk = self.planner.popleft()
        blk.pen_down = self.pen_down
        blk.t_start = t
        if self.cfg.instant:
            blk.t_end = t
        else:
            a = self.cfg.accel
            v0 = self._exit_v
            nxt = self.planner[0] if self.planner else None
            v1 = 0.0
            if nxt is not None and nxt.length > 0 and blk.length > 0:
                v1 = min(self._junction_v(blk, nxt), blk.feed, nxt.feed,
                         math.sqrt(2 * a * nxt.length))
            v1 = min(v1, math.sqrt(v0 * v0 + 2 * a * blk.length))
            blk.t_end = t + trapezoid_time(blk.length, v0, v1, blk.feed, a)
            self._exit_v = v1
        self.current = blk

    def _junction_v(self, b1: Block, b2: Block) -> float:
        # GRBL's junction deviation model: the speed at which the corner between two blocks
        # stays within junction_deviation of the path at the given acceleration
        u1, u2 = b1.unit(), b2.unit()
        cos_theta = -sum(p * q for p, q in zip(u1, u2, strict=False))
        if cos_theta > 0.999999:
            return 0.0
        if cos_theta < -0.999999:
            return INF
        sin_half = math.sqrt(0.5 * (1.0 - cos_theta))
        return math.sqrt(self.cfg.accel * self.cfg.junction_deviation * sin_half
                         / (1.0 - sin_half))

    def _finish_block(self, t: float) -> None:
        blk = self.current
        assert blk is not None
        self._draw(blk.start, blk.end, blk.pen_down, completed=True)
        was = self.pen_down
        self.motion_end = max(self.motion_end, blk.t_end)
        self.pos = list(blk.end)
        self._note_pen(t, was)  # a Z pen moved
        self.current = None
        self._start_next(blk.t_end)

    def _truncate_motion(self, t: float) -> None:
        """Stop dead at time t (reset, power loss): record the part already drawn."""
        blk = self.current
        if blk is not None:
            p = blk.at(t)
            self._draw(blk.start, p, blk.pen_down)
            self.pos = list(p)
        self.current = None
        self.planner.clear()
        self._exit_v = 0.0

    def moving(self) -> bool:
        return self.current is not None

    def position(self, t: float) -> tuple[float, float, float]:
        if self.current is not None:
            return self.current.at(t)
        return (self.pos[0], self.pos[1], self.pos[2])

    def in_bounds(self, p: tuple[float, float, float]) -> bool:
        x0, y0, x1, y1 = self.cfg.bounds
        z0, z1 = self.cfg.z_range
        e = 1e-6
        return x0 - e <= p[0] <= x1 + e and y0 - e <= p[1] <= y1 + e and z0 - e <= p[2] <= z1 + e

    # ---- what was drawn ----
    def _draw(self, a, b, pen_down: bool, completed: bool = False) -> None:
        if not pen_down:
            return
        if a[0] == b[0] and a[1] == b[1]:
            if completed and a[2] == b[2] and self._dot_pending is None:
                self._dot_pending = (a[0], a[1])
            return
        self._dot_pending = None
        self._record((a[0], a[1], b[0], b[1]))

    def _record(self, seg: tuple[float, float, float, float]) -> None:
        self.segments.append(seg)
        if self._record_file is not None:
            self._record_file.write("{:.4f} {:.4f} {:.4f} {:.4f}\n".format(*seg))
            self._record_file.flush()

    def _load_record(self, path: Path) -> None:
        if path.exists():
            for n, line in enumerate(path.read_text().splitlines(), 1):
                parts = line.split()
                if len(parts) != 4:
                    raise ValueError(f"{path}:{n}: expected 'x0 y0 x1 y1'")
                x0, y0, x1, y1 = (float(p) for p in parts)
                self.segments.append((x0, y0, x1, y1))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._record_file = open(path, "a")  # noqa: SIM115 - lives as long as the simulator

    def close(self) -> None:
        if self._record_file is not None:
            self._record_file.close()
            self._record_file = None

    def render(self, path: str | Path, **kw) -> list[Path]:
        from plotterd.machine.sim.render import render_segments

        return render_segments(self.segments, self.cfg.bounds, path, **kw)

    # ---- firmware hooks ----
    def _reset_firmware(self) -> None:
        raise NotImplementedError

    def _boot(self, t: float) -> None:
        raise NotImplementedError

    def _rx_byte(self, t: float, b: int) -> None:
        raise NotImplementedError

    def _process(self, t: float) -> None:
        raise NotImplementedError

    def _next_timer(self) -> float:
        return INF

    def _timer(self, t: float) -> None:
        pass
