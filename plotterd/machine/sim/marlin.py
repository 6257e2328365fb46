"""A simulated Marlin 2 board: line numbers and checksums with ``Resend:``, a 4-command buffer
in front of a 16-block planner, ``echo:busy: processing`` keep-alives while a command waits,
``start`` on reset, M280 servo pens that do NOT wait for queued moves (hence M400), G4 P in
milliseconds, software endstops that clamp, ``Error:Printer halted`` after a kill."""

from __future__ import annotations

from collections import deque

from plotterd.gcode.tokens import frame, gcode_words, named_params
from plotterd.machine.base import reply_number
from plotterd.machine.sim.core import INF, SimConfig, Simulator

BUFSIZE = 4  # Marlin's command queue
KEEPALIVE = 2.0  # s between busy messages (Marlin's DEFAULT_KEEPALIVE_INTERVAL)
KEEPALIVE_INSTANT = 0.1  # in speed=instant, where only waits for the user take time
MAX_CMD = 96


def checksum(text: str) -> int:
    c = 0
    for ch in text.encode("latin-1"):
        c ^= ch
    return c


def _code_and_words(up: str) -> tuple[str | None, dict[str, float]]:
    """The line's first G or M code (as "G1", "M400") and its other words (first one wins)."""
    words: dict[str, float] = {}
    code = None
    for k, v in gcode_words(up):
        if code is None and k in "GM":
            code = f"{k}{v:g}"
            continue
        words.setdefault(k, v)
    return code, words


class MarlinSim(Simulator):
    firmware = "marlin"
    eol = b"\n"

    def __init__(self, cfg: SimConfig):
        super().__init__(cfg)

    def _reset_firmware(self) -> None:
        self.rx = bytearray()
        self.queue: deque[tuple[str, int, int | None]] = deque()  # (cmd, rx line, N)
        self.last_n = 0
        self.boot_at = INF
        self.halted = False
        self.absolute = True
        self.feed = 1500.0
        self.blocked_since: float | None = None
        self.keepalive_at = INF
        self.dwell_until = INF
        self.dwell_done = False
        self.loop_line: tuple[int, str] | None = None  # resend_loop: always refused
        self._recent = b""
        self.user_continue = False
        self.busy_text = "echo:busy: processing"
        self.no_ok: set[int] = set()
        self.garbled: set[int] = set()
        self.servo = None
        self.g92 = [0.0, 0.0, 0.0]  # G92 offset: logical = machine - g92

    def _boot(self, t: float) -> None:
        self.boot_at = t

    def _next_timer(self) -> float:
        return min(self.boot_at, self.keepalive_at, self.dwell_until)

    def _timer(self, t: float) -> None:
        if t >= self.boot_at:
            self.boot_at = INF
            self.emit(t, "start")
            self.emit(t, "echo:Marlin 2.1.2.1")
            self.emit(t, "echo:plotterd simulated board")
        if t >= self.dwell_until:
            self.motion_end = max(self.motion_end, self.dwell_until)
            self.dwell_until = INF
            self.dwell_done = True
        if t >= self.keepalive_at:
            self.emit(t, self.busy_text)
            self.keepalive_at = t + self._keepalive()

    # ---- bytes arriving ----
    def _rx_byte(self, t: float, b: int) -> None:
        if self.boot_at < INF or self.halted:
            return
        # Marlin's emergency parser acts on M108 as it arrives, even while a command waits
        self._recent = (self._recent + bytes([b]))[-6:]
        if self._recent.endswith(b"M108\n") or self._recent.endswith(b"M108\r"):
            self.user_continue = True
        if len(self.rx) < self.cfg.rx_size:
            self.rx.append(b)
        else:
            self.dropped_bytes += 1

    # ---- main loop ----
    def _process(self, t: float) -> None:
        while not self.silent and not self.disconnected and self.boot_at == INF:
            if self.halted:
                return
            self._take_lines(t)
            if self.halted or self.disconnected or self.silent:
                return
            if not self.queue:
                self._unblock()
                return
            if not self._execute(t):
                if self.blocked_since is None:
                    self.blocked_since = t
                    self.keepalive_at = t + self._keepalive()
                return
            self._unblock()

    def _keepalive(self) -> float:
        return KEEPALIVE_INSTANT if self.cfg.instant else KEEPALIVE

    def _unblock(self) -> None:
        self.blocked_since = None
        self.keepalive_at = INF

    def _take_lines(self, t: float) -> None:
        """Move complete lines from the serial buffer into the command queue, checking line
        numbers and checksums (Marlin's get_serial_commands)."""
        while len(self.queue) < BUFSIZE:
            i = self.rx.find(b"\n")
            j = self.rx.find(b"\r")
            if i < 0 or (0 <= j < i):
                i = j
            if i < 0:
                return
            raw = bytes(self.rx[:i])
            del self.rx[: i + 1]
            if not raw.strip():
                continue
            self.lines_received += 1
            n = self.lines_received
            if n == 1:
                self.first_line_at = t
            if not self._line(t, raw, n):
                return

    def _line(self, t: float, raw: bytes, n: int) -> bool:
        f = self.faults
        if f.take("corrupt", n):
            raw = f.corrupt(raw, b"#@&")
        if f.take("disconnect", n):
            self.go_away(t, forever=False)
            return False
        if f.take("unplug", n):
            self.go_away(t, forever=True)
            return False
        if f.take("silence", n):
            self.go_silent(t)
            return False
        if f.take("reset", n):
            self._reset(t)
            return False
        if f.take("error", n):
            # a refused command: Error: and an ok, no resend request; the line does not run
            self.emit(t, "Error:Invalid command (simulated refusal)")
            self._ok(t, n)
            return True
        if f.take("halt", n):
            self._truncate_motion(t)
            self.emit(t, "Error:Printer halted. kill() called!")
            self.halted = True
            self.rx.clear()
            self.queue.clear()
            return False
        if f.take("drop_ok", n):
            self.no_ok.add(n)
        if f.take("garble", n):
            self.garbled.add(n)
        noise = f.take("noise", n)
        for _ in range(int(noise.arg or 1) if noise else 0):
            self.emit(t, f.noise_line())
        line = raw.decode("latin-1").strip()
        if len(line) > MAX_CMD:
            line = line[:MAX_CMD]  # Marlin truncates: the checksum check then fails
        framed = frame(line)
        line_n = framed.number
        if line_n is not None:
            body = framed.body
            is_m110 = body.upper().startswith("M110")
            if line_n != self.last_n + 1 and not is_m110:
                return self._resend(t, "Line Number is not Last Line Number+1", n)
            if framed.checksum is None:
                return self._resend(t, "No Checksum with line number", n)
            if framed.checksum != checksum(framed.signed):
                return self._resend(t, "checksum mismatch", n)
            if f.take("resend", n):
                return self._resend(t, "checksum mismatch", n)
            if f.take("resend_loop", n):
                self.loop_line = (line_n, body)  # as if this line always got corrupted
            if self.loop_line == (line_n, body):
                return self._resend(t, "checksum mismatch", n)
            self.last_n = line_n
            cmd = body
        elif line.startswith("N"):
            return self._resend(t, "Line Number is not Last Line Number+1", n)
        else:
            cmd = line.split(";", 1)[0].strip()  # Marlin without PAREN_COMMENTS keeps ( )
        self.queue.append((cmd, n, line_n))
        return True

    def _resend(self, t: float, why: str, n: int) -> bool:
        self.emit(t, f"Error:{why}, Last Line: {self.last_n}")
        self.emit(t, f"Resend: {self.last_n + 1}")
        self._ok(t, n)
        self.rx.clear()  # Marlin flushes its receive buffer and waits for the resend
        return False

    def _ok(self, t: float, n: int, extra: str = "") -> None:
        if n in self.no_ok:
            self.no_ok.discard(n)
            return
        if self.cfg.advanced_ok:
            free_planner = self.cfg.blocks - self.planner_used()
            free_buf = BUFSIZE - len(self.queue)
            extra = f" N{self.last_n} P{free_planner} B{free_buf}" + extra
        if n in self.garbled:
            self.garbled.discard(n)
            self.emit(t, "o\x8bk" + extra)
            return
        self.emit(t, "ok" + extra)

    def _reset(self, t: float) -> None:
        self._truncate_motion(t)
        self.lose_position(t)
        self._reset_firmware()
        self.resets += 1
        self.events.append((t, "reset"))
        self._boot(t + self.boot_delay())

    # ---- executing the head of the command queue ----
    def _execute(self, t: float) -> bool:
        """Run the command at the head of the queue; False while it has to wait."""
        cmd, n, _ = self.queue[0]
        up = cmd.upper()
        code, words = _code_and_words(up)
        extra = ""
        done = True
        if code in ("G0", "G1"):
            done = self._move(t, code, words)
        elif code == "G4":
            done = self._dwell(t, words)
        elif code == "M400":
            done = self.executor_idle()
        elif code in ("M0", "M1"):
            done = self._pause_for_user()
        elif up.startswith("SET_SERVO"):
            done = self._klipper_servo(t, up)
        elif code == "M280":
            # not synchronised with queued moves (Marlin #870): the servo moves right away
            self.set_servo(t, words.get("S", self.servo))
        elif code == "G28":
            done = self._home(t)
        elif code == "M114":
            self._report_position(t)
        elif code == "M105":
            extra = " T:25.00 /0.00 B:25.00 /0.00"
        elif code == "M115":
            self._report_firmware(t)
        elif code == "M110":
            self.last_n = int(words.get("N", 0))
        elif code == "G90":
            self.absolute = True
        elif code == "G91":
            self.absolute = False
        elif code == "G92":
            done = self._set_offsets(t, words)
        elif code in ("M18", "M84"):
            done = self.executor_idle()
            if done:
                self.motors_off = True
        elif code in ("G21", "M17", "M999", "M82", "M108") \
                or code is None:
            pass
        else:
            self.emit(t, f'echo:Unknown command: "{cmd}"')
        if not done:
            return False
        self.queue.popleft()
        self._ok(t, n, extra)
        return True

    def _move(self, t: float, code: str, words: dict[str, float]) -> bool:
        """G0/G1: plan the move; False while the planner is full."""
        if "F" in words:
            self.feed = words["F"]
        if not any(k in words for k in "XYZ"):
            return True
        if self.planner_used() >= self.cfg.blocks:
            return False
        base = self.to_machine(self._planned_end())
        tgt = []
        for i, k in enumerate("XYZ"):
            v = words.get(k)
            tgt.append(base[i] if v is None else
                       (v + self.g92[i] if self.absolute else base[i] + v))
        target = (tgt[0], tgt[1], tgt[2])  # machine coordinates
        if not self.in_bounds(target):
            # software endstops: Marlin clamps the target to the machine's travel
            self.out_of_bounds.append(target)
            x0, y0, x1, y1 = self.cfg.bounds
            z0, z1 = self.cfg.z_range
            target = (min(max(target[0], x0), x1), min(max(target[1], y0), y1),
                      min(max(target[2], z0), z1))
        feed = self.cfg.rapid if code == "G0" and "F" not in words else self.feed
        self.queue_move(t, self.physical_target(t, target), feed, self._planned_end())
        return True

    def _dwell(self, t: float, words: dict[str, float]) -> bool:
        """G4 after the queued moves; False until the dwell has passed."""
        if not self.executor_idle():
            return False
        if not self.dwell_done:
            ms = words.get("P", 0.0) + 1000.0 * words.get("S", 0.0)  # Marlin: P in ms
            if ms > 0 and not self.cfg.instant:
                if self.dwell_until == INF:
                    self.dwell_until = t + ms / 1000.0
                return False
        self.dwell_done = False
        return True

    def _pause_for_user(self) -> bool:
        """M0/M1: wait for the user (LCD click or M108); hosts see "paused for user"
        keep-alives meanwhile."""
        if not self.executor_idle():
            return False
        if not self.user_continue:
            self.busy_text = "echo:busy: paused for user"
            return False
        self.user_continue = False
        self.busy_text = "echo:busy: processing"
        return True

    def _klipper_servo(self, t: float, up: str) -> bool:
        """Klipper's SET_SERVO (its host interface is Marlin-like); queued with moves."""
        if not self.executor_idle():
            return False
        angle = reply_number(named_params(up).get("ANGLE", ""))
        if angle is not None:
            self.set_servo(t, angle)
        return True

    def _home(self, t: float) -> bool:
        """G28 after the queued moves; False while the axes seek their switches."""
        if not self.executor_idle():
            return False
        if not self.dwell_done and not self.cfg.instant:
            # homing takes time: the axes seek their switches (busy keep-alives meanwhile)
            if self.dwell_until == INF:
                d = max(abs(self.pos[0] - self.home_at[0]), abs(self.pos[1] - self.home_at[1]))
                self.dwell_until = t + 0.5 + d / (self.cfg.rapid / 60.0) * 2
            return False
        self.dwell_done = False
        self.homed(t)
        self.g92 = [0.0, 0.0, 0.0]
        return True

    def _report_position(self, t: float) -> None:
        mx, my, mz = self.machine_position(t)
        x, y, z = mx - self.g92[0], my - self.g92[1], mz - self.g92[2]
        self.emit(t, f"X:{x:.2f} Y:{y:.2f} Z:{z:.2f} E:0.00 Count X:{round(x * 80)} "
                     f"Y:{round(y * 80)} Z:{round(z * 400)}")

    def _report_firmware(self, t: float) -> None:
        self.emit(t, "FIRMWARE_NAME:Marlin 2.1.2.1 (plotterd simulator) "
                     "SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin "
                     "PROTOCOL_VERSION:1.0 MACHINE_TYPE:Plotter EXTRUDER_COUNT:0")
        self.emit(t, "Cap:ADVANCED_OK:1")

    def _set_offsets(self, t: float, words: dict[str, float]) -> bool:
        """G92 after the queued moves: the given axes read as the given values here."""
        if not self.executor_idle():
            return False
        here = self.machine_position(t)
        for i, k in enumerate("XYZ"):
            if k in words:
                self.g92[i] = here[i] - words[k]
        return True

    def _planned_end(self) -> tuple[float, float, float]:
        if self.planner:
            return self.planner[-1].end
        if self.current is not None:
            return self.current.end
        return (self.pos[0], self.pos[1], self.pos[2])
