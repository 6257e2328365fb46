"""A simulated GRBL 1.1 board: 128-byte receive buffer that drops overflow, real-time bytes
handled on arrival, 15-block planner that holds back ``ok`` while full, status reports with
``Bf:``, soft-limit alarm, reset banner, ``$I``/``$C``/``$X``/``$H``, hold/resume, G4 dwell
(seconds), M3/M5 servo pens and Z pens."""

from __future__ import annotations

import re

from plotterd.gcode.tokens import scan
from plotterd.machine.sim.core import INF, SimConfig, Simulator

BANNER = "Grbl 1.1h ['$' for help]"
LINE_MAX = 79  # GRBL's 80-byte line buffer keeps one byte for the terminator
_COMMENT_PAREN, _COMMENT_SEMI, _OVERFLOW = 1, 2, 4  # protocol.c's line_flags
_SUPPORTED_G = {0, 1, 4, 10, 17, 21, 90, 91, 92, 92.1, 94}
_SUPPORTED_M = {0, 1, 2, 3, 4, 5, 30}


def _parse_block(text: str) -> tuple[list[float], list[float], dict[str, float]] | int:
    """A G-code line's G numbers, M numbers and other words, or GRBL's error code for it
    (gcode.c); ``text`` is what the receive filter left: no spaces, upper case."""
    words: dict[str, float] = {}
    gs: list[float] = []
    ms: list[float] = []
    for tok in scan(text):
        if not tok.letter:
            return 1  # expected command letter
        if tok.number is None:
            return 2  # bad number format
        if tok.letter == "G":
            gs.append(tok.number)
        elif tok.letter == "M":
            ms.append(tok.number)
        elif tok.letter in "XYZFPSNL":
            if tok.letter in words:
                return 25  # repeated word
            words[tok.letter] = tok.number
        else:
            return 20
    if any(g not in _SUPPORTED_G for g in gs) or any(m_ not in _SUPPORTED_M for m_ in ms):
        return 20  # unsupported command
    return gs, ms, words


class GrblSim(Simulator):
    firmware = "grbl"
    eol = b"\r\n"

    def __init__(self, cfg: SimConfig):
        # $10=1 as stock GRBL 1.1h: MPos and no Bf: buffer field in status reports
        self.g54 = [0.0, 0.0, 0.0]  # G54 work offset (EEPROM: survives resets)
        self.settings = {0: 10.0, 1: 25.0, 10: 1.0, 11: cfg.junction_deviation, 20: 1.0,
                         22: 1.0 if cfg.homing else 0.0, 32: 0.0,
                         110: cfg.rapid, 111: cfg.rapid, 120: cfg.accel, 121: cfg.accel,
                         130: cfg.bounds[2], 131: cfg.bounds[3]}
        super().__init__(cfg)

    # ---- state ----
    def _reset_firmware(self) -> None:
        self.rx = bytearray()  # the 128-byte serial ring buffer
        self.line = bytearray()  # protocol_main_loop's line buffer (comments stripped)
        self.line_flags = 0  # _COMMENT_PAREN | _COMMENT_SEMI | _OVERFLOW
        self.m0_line: int | None = None  # an M0 whose ok waits for cycle start
        self.critical = False  # after ALARM:1/2: blocked until Ctrl-X
        self.sleeping = False
        self.g92 = [0.0, 0.0, 0.0]  # G92 offset (not kept across a reset in GRBL 1.1)
        self.wco_changed = False
        self.alarm: int | None = None
        self.check_mode = False
        self.pending = None  # (kind, data, line_no) of a line waiting for the planner
        self.busy_until = INF  # a dwell or homing in progress ends then
        self.busy_line: int | None = None
        self.boot_at = INF
        self.absolute = True
        self.feed: float | None = None
        self.spindle_on = False
        self.spindle_s = 0.0
        self.status_count = 0
        self.rx_line_no = 0  # used for drop_ok/garble bookkeeping
        self.no_ok: set[int] = set()
        self.garbled: set[int] = set()
        self.nan_status = False
        self.mute_until = -INF
        self.servo = None  # reset turns the spindle off: a servo pen goes up

    def _boot(self, t: float) -> None:
        self.boot_at = t
        if self.cfg.homing:
            self.alarm = 0  # locked until homed or unlocked

    def hard_reset(self, t: float) -> None:
        """The board itself resets (power dip, watchdog, reset button): it restarts from
        its bootloader, counting its position from wherever the head is."""
        self._truncate_motion(t)
        self.hold = False
        self.lose_position(t)
        self._reset_firmware()
        self.resets += 1
        self.events.append((t, "reset"))
        self._boot(t + self.boot_delay())

    def _next_timer(self) -> float:
        return min(self.boot_at, self.busy_until)

    def _timer(self, t: float) -> None:
        if t >= self.boot_at:
            self.boot_at = INF
            self.emit(t, "")
            self.emit(t, BANNER)
            if self.alarm is not None:
                self.emit(t, "[MSG:'$H'|'$X' to unlock]")
        if t >= self.busy_until:
            self.motion_end = max(self.motion_end, self.busy_until)
            self.busy_until = INF
            if self.busy_line is not None:
                line, self.busy_line = self.busy_line, None
                self._ok(t, line)

    def state_name(self) -> str:
        if self.sleeping:
            return "Sleep"
        if self.alarm is not None:
            return "Alarm"
        if self.hold:
            return "Hold:1" if self.moving() else "Hold:0"
        if self.check_mode:
            return "Check"
        if self.moving() or self.planner:
            return "Run"
        return "Idle"

    # ---- bytes arriving ----
    def _rx_byte(self, t: float, b: int) -> None:
        if self.boot_at < INF:
            return  # still in the bootloader: bytes are lost
        if b == 0x3F:  # '?'
            if not self.critical:  # the critical-event loop answers nothing but a reset
                self._status(t)
        elif b == 0x21:  # '!' feed hold
            if self.alarm is None:
                self.hold = True
        elif b == 0x7E:  # '~' cycle start
            if self.hold and not self.sleeping:
                self.hold = False
                if self.m0_line is not None:
                    # the M0 block's parse returns: its ok goes out, reading goes on
                    line, self.m0_line = self.m0_line, None
                    self._ok(t, line)
                if self.current is None:
                    self._start_next(t)
        elif b == 0x18:  # Ctrl-X soft reset
            self._soft_reset(t, alarm_if_moving=True)
        elif b >= 0x80:
            pass  # overrides and jog cancel: not simulated
        elif not self.rx and not self._blocked():
            self._take_char(t, b)  # the main loop reads it at once
        elif len(self.rx) < self.cfg.rx_size - 1:
            self.rx.append(b)  # the ring buffer of N bytes holds N-1
        else:
            self.dropped_bytes += 1  # a full serial buffer drops bytes silently

    def _blocked(self) -> bool:
        """protocol_main_loop is not reading serial: booting, dwelling, homing, waiting for
        the planner (a full planner, or a command that needs it empty), in an M0 hold."""
        return (self.boot_at < INF or self.busy_until < INF or self.pending is not None
                or self.m0_line is not None or self.sleeping or self.critical)

    def _take_char(self, t: float, c: int) -> None:
        """One character through GRBL's line filter (protocol.c): whitespace and comment
        characters are thrown away as they arrive, so a long comment never fills the
        buffer; a line past 79 characters is flagged and answered error:11."""
        if c in (0x0A, 0x0D):
            text, flags = self.line.decode("latin-1"), self.line_flags
            self.line, self.line_flags = bytearray(), 0
            self.lines_received += 1
            n = self.lines_received
            if n == 1:
                self.first_line_at = t
            self._line(t, text, n, bool(flags & _OVERFLOW))
            return
        if self.line_flags:
            if c == 0x29 and self.line_flags & _COMMENT_PAREN:  # ')'
                self.line_flags &= ~_COMMENT_PAREN
        elif c <= 0x20 or c == 0x2F:  # whitespace, control characters, block delete '/'
            pass
        elif c == 0x28:  # '('
            self.line_flags |= _COMMENT_PAREN
        elif c == 0x3B:  # ';'
            self.line_flags |= _COMMENT_SEMI
        elif len(self.line) >= LINE_MAX:
            self.line_flags |= _OVERFLOW
        elif 0x61 <= c <= 0x7A:
            self.line.append(c - 0x20)
        else:
            self.line.append(c)

    def wco(self) -> tuple[float, float, float]:
        return tuple(a + b for a, b in zip(self.g54, self.g92, strict=True))  # type: ignore

    def work_position(self, t: float) -> tuple[float, float, float]:
        m = self.machine_position(t)
        return tuple(p - o for p, o in zip(m, self.wco(), strict=True))  # type: ignore

    def _status(self, t: float) -> None:
        """The fields $10 asks for, as report_realtime_status: bit 0 MPos (else WPos),
        bit 1 the Bf: buffer field."""
        mask = int(self.settings.get(10, 1))
        if t < self.mute_until:
            return  # the mute_status fault: the report is lost on the way
        self.status_count += 1
        feed = (self.current.feed * 60.0) if self.current is not None else 0.0
        if mask & 1:
            x, y, z = self.machine_position(t)
            s = f"<{self.state_name()}|MPos:{x:.3f},{y:.3f},{z:.3f}"
        else:
            x, y, z = self.work_position(t)
            s = f"<{self.state_name()}|WPos:{x:.3f},{y:.3f},{z:.3f}"
        if self.nan_status:  # the nan_status fault
            self.nan_status = False
            s = s.replace(f"{x:.3f}", "nan", 1)
        if mask & 2:
            free = self.cfg.blocks - self.planner_used()
            s += f"|Bf:{free},{self.cfg.rx_size - len(self.rx)}"  # empty: the full size
        s += f"|FS:{feed:.0f},{self.spindle_s:.0f}"
        if self.status_count % 10 == 1 or self.wco_changed:
            self.wco_changed = False  # system_flag_wco_change: the next report carries it
            s += "|WCO:" + ",".join(f"{v:.3f}" for v in self.wco())
        self.emit(t, s + ">")

    def _soft_reset(self, t: float, alarm_if_moving: bool) -> None:
        if self.critical:
            # the aborted line's status is reported on the way out of the critical loop
            self._ok(t, self.critical_line)
        moving = self.moving()
        self._truncate_motion(t)
        keep_alarm = self.alarm
        self.hold = False
        self._reset_firmware()
        self.resets += 1
        self.events.append((t, "reset"))
        if alarm_if_moving and moving:
            self.emit(t, "ALARM:3")
            self.alarm = 3
        elif keep_alarm is not None:
            self.alarm = keep_alarm
        self.emit(t, "")
        self.emit(t, BANNER)
        if self.alarm is not None:
            self.emit(t, "[MSG:'$H'|'$X' to unlock]")

    # ---- main loop ----
    def _process(self, t: float) -> None:
        while not self.silent and not self.disconnected:
            if self.boot_at < INF or self.busy_until < INF or self.sleeping or self.critical:
                return
            if self.m0_line is not None:
                return  # suspended inside the M0 block until cycle start
            if self.pending is not None and not self._try_pending(t):
                return
            if not self.rx:
                return
            # the main loop drains the ring buffer until a line blocks it
            while self.rx and not self._blocked():
                c = self.rx[0]
                del self.rx[0]
                self._take_char(t, c)

    def _line(self, t: float, text: str, n: int, overflow: bool = False) -> None:
        f = self.faults
        if f.take("corrupt", n):
            text = f.corrupt(text.encode("latin-1"), b"#@&").decode("latin-1")
        if f.take("disconnect", n):
            self.go_away(t, forever=False)
            return
        if f.take("unplug", n):
            self.go_away(t, forever=True)
            return
        if f.take("silence", n):
            self.go_silent(t)
            return
        if f.take("reset", n):
            self.hard_reset(t)
            return
        if f.take("halt", n):
            # GRBL's nearest thing to a halt: a hard limit switch trips (ALARM:1)
            self._critical(t, 1, n)
            return
        if f.take("drop_ok", n):
            self.no_ok.add(n)
        if f.take("garble", n):
            self.garbled.add(n)
        self._reply_faults(t, n)
        err = f.take("error", n)
        if err:
            self._error(t, int(err.arg) if err.arg is not None else 20, n)
            return
        if overflow:
            self._error(t, 11, n)  # STATUS_OVERFLOW: the line is not executed
        elif not text:
            self._ok(t, n)
        elif text.startswith("$"):
            self._system(t, text, n)
        elif self.alarm is not None:
            self._error(t, 9, n)
        else:
            self._gcode(t, text, n)

    def _reply_faults(self, t: float, n: int) -> None:
        """Faults in what the board sends: noise lines, a NaN position, muted status."""
        f = self.faults
        noise = f.take("noise", n)
        for _ in range(int(noise.arg or 1) if noise else 0):
            self.emit(t, f.noise_line())
        if f.take("nan_status", n):
            self.nan_status = True
        mute = f.take("mute_status", n)
        if mute:
            self.mute_until = t + (mute.arg if mute.arg is not None else 2.0)

    def _ok(self, t: float, n: int) -> None:
        if n in self.no_ok:
            self.no_ok.discard(n)
            return
        if n in self.garbled:
            self.garbled.discard(n)
            self.emit(t, "o\x8bk")
            return
        self.emit(t, "ok")

    def _error(self, t: float, code: int, n: int) -> None:
        if n in self.garbled:
            self.garbled.discard(n)
            self.emit(t, f"err\x8bor:{code}")
            return
        self.emit(t, f"error:{code}")

    # ---- $ commands ----
    def _system(self, t: float, text: str, n: int) -> None:
        busy = not self.executor_idle()
        if text == "$I":
            self.emit(t, "[VER:1.1h.20190830:plotterd-sim]")
            self.emit(t, f"[OPT:V,{self.cfg.blocks},{self.cfg.rx_size}]")
        elif text == "$X":
            if self.alarm is not None:
                self.alarm = None
                self.emit(t, "[MSG:Caution: Unlocked]")
        elif text == "$H":
            if not self.settings[22]:
                return self._error(t, 5, n)
            self.alarm = None
            d = max(abs(self.pos[0] - self.home_at[0]), abs(self.pos[1] - self.home_at[1]))
            self.homed(t)
            if not self.cfg.instant:
                self.busy_until = t + 0.5 + d / (self.cfg.rapid / 60.0)
                self.busy_line = n
                return
        elif text == "$SLP":
            self._ok(t, n)
            # sleep: spindle (the servo pen) and steppers off; only a reset wakes the board
            self._truncate_motion(t)
            self.set_servo(t, None)
            self.sleeping = True
            self.motors_off = True
            self.alarm = 0  # it wakes locked
            return
        elif text == "$C":
            if busy:
                return self._error(t, 8, n)
            self.check_mode = not self.check_mode
            self.emit(t, "[MSG:Enabled]" if self.check_mode else "[MSG:Disabled]")
        elif text == "$$":
            for k in sorted(self.settings):
                self.emit(t, f"${k}={self.settings[k]:g}")
        elif text == "$G":
            mode = "G90" if self.absolute else "G91"
            sp = "M3" if self.spindle_on else "M5"
            self.emit(t, f"[GC:G0 G54 G17 G21 {mode} G94 {sp} M9 T0 F{self.feed or 0:g} "
                         f"S{self.spindle_s:g}]")
        elif re.fullmatch(r"\$\d+=[-+]?[\d.]+", text):
            if busy:
                return self._error(t, 8, n)
            k, v = text[1:].split("=")
            self.settings[int(k)] = float(v)
            if not self.cfg.instant:
                # an EEPROM write stops serial receive on AVR: incoming bytes meanwhile are
                # lost, which is why hosts send settings one at a time
                self.busy_until = t + 0.02
                self.busy_line = n
                self.rx.clear()
                return
        else:
            return self._error(t, 3, n)
        self._ok(t, n)

    # ---- G-code ----
    def _gcode(self, t: float, text: str, n: int) -> None:
        parsed = _parse_block(text)
        if isinstance(parsed, int):
            return self._error(t, parsed, n)
        gs, ms, words = parsed
        if "F" in words:
            if words["F"] <= 0:
                return self._error(t, 4, n)
            self.feed = words["F"]
        for g in gs:
            if g == 90:
                self.absolute = True
            elif g == 91:
                self.absolute = False
        motion = next((g for g in gs if g in (0, 1)), None)
        if 10 in gs or 92 in gs or 92.1 in gs:
            return self._offsets(t, gs, words, n)
        if 4 in gs:
            if "P" not in words:
                return self._error(t, 28, n)
            self.pending = ("dwell", words["P"], n)
        elif ms and 0 in ms:
            self.pending = ("stop", None, n)  # program pause (a pen change): hold once idle
        elif ms and any(m_ in (3, 4, 5, 2, 30) for m_ in ms):
            self.pending = ("spindle", (ms, words.get("S")), n)
        elif "S" in words and not any(k in words for k in "XYZ"):
            self.pending = ("spindle", ([], words["S"]), n)
        elif motion is not None or any(k in words for k in "XYZ"):
            if not self._plan_move(t, motion, words, n):
                return
        else:
            return self._ok(t, n)
        self._try_pending(t)

    def _plan_move(self, t: float, motion: float | None, words: dict[str, float],
                   n: int) -> bool:
        """G0/G1 (or the modal motion): make the move pending; False where the line
        is already answered (no axis words, an error, check mode or a soft-limit alarm)."""
        if motion is None:
            motion = getattr(self, "_modal_motion", 0)
        self._modal_motion = motion
        if not any(k in words for k in "XYZ"):
            self._ok(t, n)
            return False
        if motion == 1 and self.feed is None:
            self._error(t, 22, n)
            return False
        wco = self.wco()
        base = self.to_machine(self._planned_end())  # machine coordinates
        tgt = []
        for i, k in enumerate("XYZ"):
            if k in words:
                # work coordinates -> machine coordinates
                tgt.append(words[k] + wco[i] if self.absolute else base[i] + words[k])
            else:
                tgt.append(base[i])
        target = (tgt[0], tgt[1], tgt[2])
        if self.check_mode:
            self._ok(t, n)
            return False
        if self.settings[20] and not self.in_bounds(target):
            self.out_of_bounds.append(target)
            # GRBL checks soft limits when planning: the move is not executed, the
            # machine halts and resets into ALARM:2 (position kept)
            self._critical(t, 2, n)
            return False
        feed = self.cfg.rapid if motion == 0 else min(self.feed or 0, self.cfg.rapid)
        self.pending = ("move", (target, feed), n)  # machine coordinates
        return True

    def _offsets(self, t: float, gs: list[float], words: dict[str, float], n: int) -> None:
        """G10 L2/L20 P1 (G54, kept in EEPROM) and G92 / G92.1 (not kept across a reset)."""
        here = self.to_machine(self._planned_end())
        axes = [(i, k) for i, k in enumerate("XYZ") if k in words]
        if 10 in gs:
            if words.get("P", 1) not in (0, 1) or words.get("L") not in (2, 20):
                return self._error(t, 20, n)  # only G54 is simulated
            for i, k in axes:
                self.g54[i] = words[k] if words["L"] == 2 else here[i] - self.g92[i] - words[k]
        elif 92.1 in gs:
            self.g92 = [0.0, 0.0, 0.0]
            self.wco_changed = True
        else:
            for i, k in axes:
                self.g92[i] = here[i] - self.g54[i] - words[k]
        self.wco_changed = True
        self._ok(t, n)

    def _critical(self, t: float, code: int, n: int) -> None:
        """A hard or soft limit (protocol.c): stop dead, ALARM:N, then nothing but status
        reports and reset until the host sends Ctrl-X; the board then comes back locked."""
        self._truncate_motion(t)
        self.rx.clear()
        self.pending = None
        self.emit(t, f"ALARM:{code}")
        self.emit(t, "[MSG:Reset to continue]")
        self.alarm = code
        self.critical = True
        self.critical_line = n

    def _planned_end(self) -> tuple[float, float, float]:
        if self.planner:
            return self.planner[-1].end
        if self.current is not None:
            return self.current.end
        return (self.pos[0], self.pos[1], self.pos[2])

    def _try_pending(self, t: float) -> bool:
        """Complete the waiting line if it can; True when the main loop may go on."""
        kind, data, n = self.pending
        if kind == "move":
            if self.planner_used() >= self.cfg.blocks:
                return False  # planner full: ok held back
            target, feed = data
            if self.check_mode:
                self.pending = None
                self._ok(t, n)
                return True
            self.queue_move(t, self.physical_target(t, target), feed, self._planned_end())
            self.pending = None
            self._ok(t, n)
            return True
        # dwell and spindle changes wait for the planner to empty
        if not self.executor_idle():
            return False
        self.pending = None
        if kind == "stop":
            if self.check_mode:
                self._ok(t, n)
                return True
            # gcode.c: M0 syncs the planner, then a feed hold; the parse of the block
            # returns (and its ok goes out) only after cycle start '~' (Hold:0 meanwhile)
            self.hold = True
            self.m0_line = n
            return False
        if kind == "dwell":
            if self.check_mode or self.cfg.instant or data <= 0:
                self._ok(t, n)
                return True
            self.busy_until = t + data  # GRBL's G4 P is in seconds
            self.busy_line = n
            return False
        ms, s = data
        if s is not None:
            self.spindle_s = s
        for m_ in ms:
            if m_ in (3, 4):
                self.spindle_on = True
            elif m_ in (5, 2, 30):
                self.spindle_on = False
        if not self.check_mode:
            self.set_servo(t, self.spindle_s if self.spindle_on else None)
        self._ok(t, n)
        return True
