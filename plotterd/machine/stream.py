"""Streaming a Program to a plotter: the entry point the daemon and the CLI call.

    result = stream(program, "/dev/ttyUSB0", progress=cb, control=ctl)

- GRBL: character counting; Marlin: numbered lines with resends (see the drivers).
- ``control`` (a StreamControl, thread-safe) pauses (the pen is lifted after the line in
  progress and the machine comes to rest), resumes (the pen goes down again if it was down)
  and cancels (the machine stops safely and the pen is left up).
- A disconnect or a board reset mid-job is recovered here: reconnect with backoff, re-send
  the setup lines, lift the pen, travel to the start of the first stroke not known to be fully
  drawn and go on from there (that stroke is redrawn from its start). A caller can do the same
  after a restart with ``start_stroke``.
- Progress counts acknowledged and executed lines separately: a line is executed once the
  machine has run it (GRBL: status ``Bf:``; Marlin: ``ok ... P<free planner>``; both: the
  answer to a synchronising command), a conservative figure.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serial import SerialBase

from plotterd.errors import ConfigError, InputError, PlotterdError
from plotterd.gcode.interpret import PenModel
from plotterd.machine.base import (
    Ack,
    BoardReset,
    FirmwareError,
    GarbledReply,
    Item,
    LinkLost,
    Timeouts,
)
from plotterd.machine.guard import Limits, check_program_lines
from plotterd.machine.transport import Transport
from plotterd.progress import Cancelled, Progress, ProgressCallback

if TYPE_CHECKING:  # for annotations only
    from plotterd.gcode.program import Program

log = logging.getLogger("plotterd.machine")

FIRMWARES = ("grbl", "marlin")
_TERMINAL = ("done", "cancelled", "failed", "interrupted")


class StreamControl:
    """Pause, resume and cancel a running stream() from other threads, and go on after a pen
    change.

    ``state``: idle, connecting, running, pausing, paused, "pen change", cancelling,
    recovering, and at the end done, cancelled, failed or interrupted. While a pen change
    waits, ``pen_change_pending`` is True and ``pen`` names the pen to load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "idle"
        self._pause = False
        self._resume = False
        self._cancel = False
        self._continue = False
        self._pen: str | None = None
        self._pen_pending = False

    def pause(self) -> None:
        """Lift the pen after the line in progress and hold there."""
        with self._lock:
            self._pause, self._resume = True, False

    def resume(self) -> None:
        """Lower the pen (if it was down) and continue; also goes on after a pen change."""
        with self._lock:
            self._resume, self._pause = True, False
            if self._pen_pending:
                self._continue = True

    def continue_after_pen_change(self) -> None:
        """The new pen is in: cycle start (GRBL ``~``), M108 (Marlin), or (a host-side
        pause, Klipper) send on."""
        with self._lock:
            self._continue = True

    def cancel(self) -> None:
        """Stop safely and leave the pen up."""
        with self._lock:
            self._cancel = True

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    @property
    def pen_change_pending(self) -> bool:
        with self._lock:
            return self._pen_pending

    @property
    def pen(self) -> str | None:
        with self._lock:
            return self._pen

    @property
    def cancel_requested(self) -> bool:
        with self._lock:
            return self._cancel

    def _set(self, state: str) -> None:
        with self._lock:
            self._state = state

    def _pen_change(self, pending: bool, pen: str | None = None) -> None:
        with self._lock:
            self._pen_pending, self._pen = pending, (pen if pending else None)
            if not pending:
                self._continue = False

    def _take_continue(self) -> bool:
        with self._lock:
            c, self._continue = self._continue, False
            return c

    def _take(self) -> tuple[bool, bool, bool]:
        """(pause, resume, cancel) requested since the last call."""
        with self._lock:
            p, r = self._pause, self._resume
            self._pause = self._resume = False
            return p, r, self._cancel


@dataclass
class StreamResult:
    status: str  # done | cancelled | failed | interrupted
    error: str | None = None
    lines_acked: int = 0  # program lines acknowledged (a prefix of the program)
    lines_executed: int = 0  # program lines known to have run (conservative)
    total_lines: int = 0
    last_acked_stroke: int | None = None
    last_completed_stroke: int | None = None  # every drawing line of it has run
    resume_stroke: int | None = None  # where a later stream(start_stroke=...) should start
    elapsed_s: float = 0.0
    resumes: int = 0  # automatic resumes after a reset or a reconnect (carried out)
    pen_up: bool | None = None  # the pen was lifted at the end (None: not known)
    connected: bool = False  # the plotter answered (False: it could not be reached; nothing ran)
    position_lost: bool = False  # the board reset and could not re-establish its position
    reason: str | None = None  # why it stopped: position_lost, link_lost, firmware, ...
    resumable: bool = False  # stream(start_stroke=resume_stroke) can go on later
    sent: bool = False  # any line of this job (or of its recovery) went to the board
    renders: list[Path] = field(default_factory=list)  # PNG and SVG (simulator only)
    simulator: Any = field(default=None, repr=False)  # the sim:// plotter, else None


def sim_url_for(url: str, header: dict[str, Any]) -> str:
    """A ``sim://`` URL completed from the program header: the machine the program was
    written for (its bounds; a Z pen when the pen commands move Z), unless the URL says."""
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(url).query)
    extra = []
    bounds = header.get("bounds")
    if "bounds" not in query and isinstance(bounds, list | tuple) and len(bounds) == 4 \
            and all(isinstance(v, int | float) and math.isfinite(v) for v in bounds):
        extra.append("bounds=" + ",".join(f"{float(v):g}" for v in bounds))
    pen = PenModel.from_commands([str(c) for c in header.get("pen_up", [])],
                                 [str(c) for c in header.get("pen_down", [])])
    if "pen" not in query and pen.kind == "z":
        extra.append("pen=z")
        if "z_down" not in query:
            extra.append(f"z_down={(pen.down + pen.up) / 2:g}")
    if not extra:
        return url
    return url + ("&" if "?" in url else "?") + "&".join(extra)


class _CancelRequest(Exception):
    pass


def make_driver(firmware: str, transport: Transport, timeouts: Timeouts,
                flow: str | None = None):
    if firmware == "grbl":
        from plotterd.machine.grbl import GrblDriver

        return GrblDriver(transport, timeouts, flow=flow or "count")
    if flow not in (None, "wait"):
        raise ConfigError("flow", f"{flow!r}: Marlin streams one line per ok ('wait')")
    from plotterd.machine.marlin import MarlinDriver

    return MarlinDriver(transport, timeouts)


def stream(program: Program, port: str | SerialBase, *, firmware: str | None = None,
           baudrate: int = 115200, start_stroke: int | None = None,
           progress: ProgressCallback | None = None, control: StreamControl | None = None,
           render_to: str | Path | None = None, timeouts: Timeouts | None = None,
           flow: str | None = None, options=None) -> StreamResult:
    """Send ``program`` to the plotter on ``port`` (a device path or a pyserial URL such as
    ``sim://grbl?speed=instant``, or an unopened pyserial port object) and return how it
    ended: a one-job Plotter (plotterd.machine.plotter), opened and closed here. Raises
    InputError/ConfigError for a program or option that cannot be streamed; every
    machine-side problem is reported in the result (status failed/interrupted with
    ``error``).

    ``flow`` (GRBL): "count" (character counting, the default) or "wait" (one line per ok).
    ``options``: MachineOptions (homing, unlocking, settings writes).
    """
    from plotterd.machine.plotter import Plotter

    fw = (firmware or program.header.get("firmware") or "grbl").lower()
    if fw not in ("grbl", "marlin", "klipper"):
        raise ConfigError("firmware", f"{fw!r} is not supported (grbl, marlin or klipper)")
    if flow not in (None, "count", "wait"):
        raise ConfigError("flow", f"{flow!r}: expected count or wait")
    plotter = Plotter(port, fw, baudrate=baudrate, timeouts=timeouts, options=options,
                      flow=flow, header=program.header)
    try:
        return plotter.stream(program, start_stroke, progress, control, render_to=render_to)
    finally:
        plotter.close()


class _PositionLost(PlotterdError):
    pass


@dataclass
class _Outcome:
    """How a run ended, filled in as it goes."""

    status: str = "failed"
    error: str | None = None
    pen_up: bool | None = None
    connected: bool = False
    reason: str | None = None


@dataclass
class _Feed:
    """One pass of a plan through the driver: how far sending got, and the pen and pause
    state as of the last line sent."""

    plan: list[Item]
    pos: int = 0
    pen_down: bool = False
    pause_at: int | None = None  # feed stops here while pausing/paused
    hold_at: int | None = None  # feed stops here for a host-side pen change
    pen_was_down: bool = False  # when the pause began
    state: str = "running"


def _first_job_line(plan: list[Item]) -> int:
    """The first line of the plan after the setup and the injected pen lift."""
    i = 0
    while i < len(plan) and (plan[i].tag is None or plan[i].kind == "setup"):
        i += 1
    return i


class _Streamer:
    def __init__(self, program, plotter, start_stroke, progress, control, render_to):
        fw = (program.header.get("firmware") or plotter.firmware).lower()
        proto = "marlin" if fw == "klipper" else fw
        if proto != plotter.protocol:
            raise ConfigError("firmware", f"the program is for {fw}, the plotter on "
                                          f"{plotter.port} speaks {plotter.firmware}")
        self.fw = plotter.protocol
        self.host_pause = plotter.firmware == "klipper" or fw == "klipper"
        self.plotter = plotter
        self.program = program
        self.lines = program.lines
        self.progress = progress
        self.control = control
        self.render_to = render_to
        self.T = plotter.timeouts
        self.pen_up_cmds = [str(c) for c in program.header.get("pen_up", [])]
        self.pen_down_cmds = [str(c) for c in program.header.get("pen_down", [])]
        if not self.pen_up_cmds and plotter.profile is not None:
            self.pen_up_cmds = list(plotter.profile.pen_up_lines())
            self.pen_down_cmds = list(plotter.profile.pen_down_lines())
        self.transport = plotter.transport
        self.driver = plotter.driver
        self._check_lines()
        self._pen_changes = self._find_pen_changes()
        # strokes in program order: first line, and the line after which the stroke is drawn
        self.stroke_first: dict[int, int] = {}
        done_at: dict[int, int] = {}
        for i, ln in enumerate(self.lines):
            if ln.stroke is None:
                continue
            self.stroke_first.setdefault(ln.stroke, i)
            if ln.kind == "draw" or ln.stroke not in done_at or \
                    self.lines[done_at[ln.stroke]].kind != "draw":
                done_at[ln.stroke] = i
        self.strokes = sorted(self.stroke_first, key=self.stroke_first.__getitem__)
        self._done_idx = [done_at[s] for s in self.strokes]
        if start_stroke is not None and start_stroke not in self.stroke_first:
            raise InputError(f"start stroke {start_stroke}: the program has strokes "
                             f"{self._stroke_range()}")
        self.start_stroke = start_stroke
        # a resume counts the lines before its first stroke as run, connected or not: a
        # plotter that cannot be reached keeps the same resume point
        first = 0 if start_stroke is None else self.stroke_first[start_stroke]
        self.acked_pos = self.executed_pos = first
        self.resumes = 0  # carried out
        self._recoveries = 0  # attempted (capped by max_resumes)
        self.sent_any = False
        self._t0 = time.monotonic()
        self._last_report = 0.0
        self._model_t0: float | None = None  # model time when ETA calibration began
        self._wall_t0 = 0.0
        self._last_key: tuple = ()
        self._sent_seqs: list[int] = []
        self._sent_tags: list[int] = []

    def _find_pen_changes(self) -> dict[int, str]:
        """Program line index -> the pen it asks for, for the profile's pen-change lines."""
        change = [str(c) for c in self.program.header.get("pen_change", [])]
        if not change:
            return {}
        stems = {c.split("{", 1)[0].strip().upper() for c in change}
        pens = {int(p["first_stroke"]): str(p.get("name") or p.get("layer"))
                for p in self.program.header.get("pens", []) or []
                if isinstance(p, dict) and "first_stroke" in p}
        out = {}
        for i, ln in enumerate(self.lines):
            t = ln.text.strip().upper()
            if any(t == st or (st and t.startswith(st + " ")) for st in stems):
                out[i] = pens.get(ln.stroke, "next pen") if ln.stroke is not None \
                    else "next pen"
        return out

    def _stroke_range(self) -> str:
        if not self.stroke_first:
            return "none"
        return f"{min(self.stroke_first)}..{max(self.stroke_first)}"

    def _check_lines(self) -> None:
        limit = self.driver.line_max - (0 if self.fw == "grbl" else 12)  # "N123456 " "*123"
        for i, ln in enumerate(self.lines):
            text = self.driver.make_item(ln.text).text
            if len(text) > limit:
                raise InputError(f"G-code line {self._file_line(i)} ({text[:30]!r}...) is "
                                 f"{len(text)} characters; {self.fw} accepts at most {limit}. "
                                 "Nothing was sent.")
        limits = None
        hb = self.program.header.get("bounds")
        if self.plotter.profile is not None:
            limits = Limits.of(self.plotter.profile)
        elif isinstance(hb, list | tuple) and len(hb) == 4:
            limits = Limits.of_header(hb, self.fw, self.pen_up_cmds, self.pen_down_cmds)
        if limits is not None:
            # the last guard: no move outside the machine, whoever wrote the G-code
            check_program_lines([(self._file_line(i), ln.text)
                                 for i, ln in enumerate(self.lines)], limits)

    def _file_line(self, i: int) -> int:
        """The file's own line number of program line ``i`` (comments and blank lines
        counted); a program built in memory counts its lines."""
        return self.lines[i].source_line or i + 1

    # ---- bookkeeping ----
    def _item(self, i: int) -> Item:
        ln = self.lines[i]
        if self.host_pause and i in self._pen_changes:
            # Klipper's PAUSE means nothing to a host stream: the host pauses instead. A
            # synchronising command takes the line's place; sending stops once it is answered
            item = self.driver.sync_item()
            item.tag, item.kind = i, "host_pause"
            return item
        return self.driver.make_item(ln.text, i, ln.kind)

    def _injected(self, cmds: list[str], kind: str) -> list[Item]:
        return [self.driver.make_item(c, None, kind) for c in cmds]

    def _completed_stroke(self) -> int | None:
        k = bisect.bisect_left(self._done_idx, self.executed_pos)  # done_idx < executed_pos
        return self.strokes[k - 1] if k > 0 else None

    def _acked_stroke(self) -> int | None:
        for i in range(self.acked_pos - 1, -1, -1):
            if self.lines[i].stroke is not None:
                return self.lines[i].stroke
            if self.lines[i].kind == "end":
                continue
            return None
        return None

    def _resume_point(self) -> int | None | str:
        """The first stroke not known to be fully drawn ("end" when none is left)."""
        done = self._completed_stroke()
        k = 0 if done is None else self.strokes.index(done) + 1
        return self.strokes[k] if k < len(self.strokes) else "end"

    def _on_acks(self, acks: list[Ack]) -> None:
        for ack in acks:
            item = ack.item
            if ack.error is not None:
                where = f"line {self._file_line(item.tag)}" if item.tag is not None \
                    else "injected line"
                raise FirmwareError(f"{where} {item.text!r}: {ack.error}")
            if item.tag is not None:
                self.acked_pos = max(self.acked_pos, item.tag + 1)
        self._update_executed()

    def _update_executed(self) -> None:
        seq = self.driver.executed_seq
        k = bisect.bisect_right(self._sent_seqs, seq)
        if k > 0:
            self.executed_pos = max(self.executed_pos, self._sent_tags[k - 1] + 1)

    def _report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        key = (self.acked_pos, self.executed_pos, self.control.state)
        # on every change (a caller may act on a precise line), else once a second
        if not force and key == self._last_key and now - self._last_report < 1.0:
            return
        self._last_report, self._last_key = now, key
        elapsed = now - self._t0
        eta = None
        total_t = self.lines[-1].t_end if self.lines else None
        if total_t is not None and self.executed_pos > 0:
            done_t = self.lines[self.executed_pos - 1].t_end
            if done_t is not None:
                eta = max(0.0, total_t - done_t)
                # Calibrate the motion model against the clock once enough has run: a
                # machine slower than its profile, or a simulator in scaled time.
                if self._model_t0 is None:
                    self._model_t0, self._wall_t0 = done_t, elapsed
                ran_model, ran_wall = done_t - self._model_t0, elapsed - self._wall_t0
                if ran_model >= 5.0 and ran_wall > 0:
                    eta *= ran_wall / ran_model
        elif self.executed_pos > 0:
            eta = elapsed * (len(self.lines) - self.executed_pos) / self.executed_pos
        self.progress(Progress(
            stage="plot", done=self.executed_pos, total=len(self.lines), elapsed_s=elapsed,
            eta_s=eta, info={
                "acked": self.acked_pos, "executed": self.executed_pos,
                "stroke": self._acked_stroke(), "completed_stroke": self._completed_stroke(),
                "strokes": len(self.strokes), "state": self.control.state,
                "resumes": self.resumes}))

    # ---- the plan: what to send, in order ----
    def _plan(self, start: int | None | str) -> list[Item]:
        if start is None:
            return [self._item(i) for i in range(len(self.lines))]
        setup = [self._item(i) for i, ln in enumerate(self.lines) if ln.kind == "setup"]
        lift = self._injected(self.pen_up_cmds, "pen_up")
        if start == "end":
            first = next((i for i, ln in enumerate(self.lines) if ln.kind == "end"),
                         len(self.lines))
        else:
            first = self.stroke_first[start]
        return setup + lift + [self._item(i) for i in range(first, len(self.lines))]

    # ---- running ----
    def run(self) -> StreamResult:
        out = _Outcome()
        try:
            self._connect_and_stream(out)
        except (_CancelRequest, Cancelled):
            self._stop_cancelled(out)
        except FirmwareError as e:
            self._stop_after_firmware_error(out, e)
        except (LinkLost, BoardReset) as e:
            out.status = "interrupted" if out.connected else "failed"
            out.error, out.reason = str(e), "link_lost"
            self.plotter._lost(e)
        except _PositionLost as e:
            out.status, out.error, out.reason = "interrupted", str(e), "position_lost"
        except _NoResume as e:
            out.status, out.error, out.reason = "interrupted", str(e), "not_resumable"
        except GarbledReply as e:
            self._safe_stop(out, str(e), "garbled")
        except (ValueError, ArithmeticError) as e:
            # no parser should let one through; if one does, stop as for garbage
            log.exception("unexpected error while streaming")
            self._safe_stop(out, f"unexpected {type(e).__name__} while streaming: {e}",
                            "internal")
        return self._finish(out)

    def _safe_stop(self, out: _Outcome, error: str, reason: str) -> None:
        """What the board says can no longer be trusted: feed hold, pen up (as a cancel
        does), and the position is not trusted until homing or a confirmed origin. The link
        is closed: the next job opens it afresh."""
        out.status, out.reason = "failed", reason
        if not self.sent_any:
            out.error = f"{error}; nothing was sent"
            self.plotter._lost(PlotterdError(error))
            return
        out.error = error
        self.control._set("cancelling")
        self.driver.watch.strict = False  # stopping must not stop on more garbage
        try:
            self.driver.safe_cancel(self.pen_up_cmds)
            out.pen_up = bool(self.pen_up_cmds) or None
        except (PlotterdError, ValueError, ArithmeticError) as e2:
            out.error += f"; could not lift the pen afterwards ({e2}): pen state unknown"
        finally:
            self.driver.watch.strict = True
        out.error += ("; stopped and the pen lifted; the position is no longer trusted: "
                      "home the machine or confirm the pen is at the origin before resuming")
        self.plotter._lost(PlotterdError(error))

    def _connect_and_stream(self, out: _Outcome) -> None:
        """Connect, then stream the plan, resuming after a board reset or a lost link."""
        plotter = self.plotter
        self.control._set("connecting")
        plotter.connect()
        out.connected = True
        start: int | None | str = self.start_stroke
        if start is not None and not plotter.position_known:
            raise _PositionLost(
                f"resume from stroke {start} refused: the position is not known since "
                "the board started (home it, or confirm the pen is at the origin)")
        # a job from its first stroke draws in the board's present frame: a resume
        # within this power cycle lands where the drawing is
        plotter.position_known = True
        while True:
            try:
                self._run_plan(self._plan(start))
                out.status = "done"
                return
            except BoardReset as e:
                start = self._before_resume(e)
                plotter._after_reset()
                self._check_position(e)
                self.resumes += 1
            except LinkLost as e:
                start = self._before_resume(e)
                plotter._reconnect()
                self._check_position(e)
                self.resumes += 1

    def _stop_cancelled(self, out: _Outcome) -> None:
        out.status, out.reason = "cancelled", "cancelled"
        self.control._set("cancelling")
        try:
            self.driver.safe_cancel(self.pen_up_cmds)
            out.pen_up = bool(self.pen_up_cmds) or None
        except PlotterdError as e:
            out.error = f"cancelled, but could not stop cleanly: {e}; pen state unknown"

    def _stop_after_firmware_error(self, out: _Outcome, e: FirmwareError) -> None:
        out.status, out.error, out.reason = "failed", str(e), "firmware"
        if not self.sent_any:
            out.error = f"{e}; nothing was sent"  # no pen was moved: nothing to lift
            if e.alarm not in (None, 2):
                self.plotter.position_known = False
            return
        try:
            self.driver.stop_after_error(e, self.pen_up_cmds)
            out.pen_up = bool(self.pen_up_cmds) or None
        except PlotterdError as e2:
            out.error += f"; could not lift the pen afterwards ({e2}): pen state unknown"
        if e.alarm not in (None, 2):
            self.plotter.position_known = False  # a hard limit or a reset loses steps

    def _finish(self, out: _Outcome) -> StreamResult:
        """The final state and progress report, and the result (with the simulator's
        render when asked for)."""
        status, error, reason = out.status, out.error, out.reason
        self.control._pen_change(False)
        self.plotter.pen_change = None
        if status == "done":
            self.acked_pos = self.executed_pos = len(self.lines)
        self.control._set(status)
        self._report(force=True)
        result = StreamResult(
            status=status, error=error, lines_acked=self.acked_pos,
            lines_executed=self.executed_pos, total_lines=len(self.lines),
            last_acked_stroke=self._acked_stroke(),
            last_completed_stroke=self._completed_stroke(),
            elapsed_s=time.monotonic() - self._t0, resumes=self.resumes, pen_up=out.pen_up,
            connected=out.connected, simulator=self.transport.simulator,
            position_lost=reason in ("position_lost", "garbled", "internal"), reason=reason,
            sent=self.sent_any)
        if status != "done" and self.strokes:
            nxt = self._resume_point()
            result.resume_stroke = None if nxt == "end" else nxt  # type: ignore[assignment]
        result.resumable = status == "interrupted" and reason != "not_resumable"
        sim = self.transport.simulator
        if sim is not None and self.render_to is not None:
            # the render draws with the nib the G-code was written for (its first pen)
            pens = self.program.header.get("pens") or [{}]
            nib = pens[0].get("width_mm") if isinstance(pens[0], dict) else None
            result.renders = sim.render(self.render_to, **({"pen_width_mm": nib} if nib else {}))
        if error:
            log.warning("plot %s: %s", status, error)
        return result

    def _check_position(self, e: PlotterdError) -> None:
        if not self.plotter.position_known:
            self.driver.lift_pen_quietly(self.pen_up_cmds)
            raise _PositionLost(
                f"{e}; the job is interrupted because the position was lost: the board "
                "does not home, so redrawn strokes would land offset (home it, or confirm "
                "the pen is at the origin, then resume)")

    def _before_resume(self, e: PlotterdError) -> int | str:
        self._recoveries += 1
        self.control._set("recovering")
        if not self.strokes:
            raise _NoResume(f"{e}; plain G-code without stroke marks cannot be resumed")
        if self._recoveries > self.T.max_resumes:
            raise _NoResume(f"{e}; gave up after {self.T.max_resumes} automatic resumes")
        nxt = self._resume_point()
        log.warning("%s: recovering, to go on from %s", e,
                    f"stroke {nxt}" if nxt != "end" else "the end")
        # the stroke in progress is redrawn from its start
        first = self.stroke_first[nxt] if nxt != "end" else self.executed_pos
        self.executed_pos = min(self.executed_pos, first)
        self.acked_pos = min(self.acked_pos, first)
        return nxt

    def _run_plan(self, plan: list[Item]) -> None:
        drv = self.driver
        self._sent_seqs, self._sent_tags = [], []
        self._changing: str | None = None  # the pen a waiting pen change asks for
        f = _Feed(plan)
        if self.control.state in ("pausing", "paused"):
            # paused when the link was lost: re-initialise and lift the pen, then wait
            f.pause_at = _first_job_line(plan)
        f.state = "pausing" if f.pause_at is not None else "running"
        self.control._set(f.state)
        while True:
            self._take_requests(f)
            limit = self._send_ready(f)
            self._on_acks(drv.poll(0.02))
            drv.tick()
            self._update_executed()
            self._watch_pen_change(f.hold_at is not None and f.pos >= f.hold_at, f.state)
            self._report()
            if f.state == "pausing" and f.pos >= limit and drv.in_flight == 0:
                f.state = "paused"
                self.control._set(f.state)
            if f.pos >= len(plan) and drv.in_flight == 0 and f.pause_at is None:
                break
        self._on_acks(drv.wait_idle())
        self.executed_pos = max(self.executed_pos, self.acked_pos)

    def _take_requests(self, f: _Feed) -> None:
        """Act on the control's pause, resume, continue and cancel requests."""
        want_pause, want_resume, want_cancel = self.control._take()
        if want_cancel:
            raise _CancelRequest()
        if want_pause and f.state == "running":
            self._start_pause(f)
        if self.control._take_continue() or (want_resume and self._changing):
            if f.hold_at is not None and self._changing is not None:
                f.hold_at = None  # host-side pause: send on
            else:
                self.driver.resume_hold()  # a pen change (M0) waiting for the user goes on
            self._end_pen_change(f.state)
        elif want_resume:
            self.driver.resume_hold()
        if want_resume and f.state in ("pausing", "paused"):
            self._end_pause(f)

    def _start_pause(self, f: _Feed) -> None:
        """Lift the pen (if down) after the line in progress and stop feeding once the
        machine has come to rest."""
        extra = self._injected(self.pen_up_cmds, "pen_up") if f.pen_down else []
        f.pen_was_down = f.pen_down
        extra.append(self.driver.sync_item())
        f.plan[f.pos:f.pos] = extra
        f.pause_at = f.pos + len(extra)
        f.pen_down = False
        f.state = "pausing"
        self.control._set(f.state)

    def _end_pause(self, f: _Feed) -> None:
        """Feed on, the pen lowered again first if the pause lifted it."""
        if f.pen_was_down:
            down = self._injected(self.pen_down_cmds, "pen_down")
            at = f.pause_at if f.pause_at is not None else f.pos
            f.plan[at:at] = down
            f.pen_down = True
        f.pause_at = None
        f.pen_was_down = False
        f.state = "running"
        self.control._set(f.state)

    def _send_ready(self, f: _Feed) -> int:
        """Send what the driver has room for, up to a pause or a host-side pen change;
        returns the line index feeding stops at."""
        drv = self.driver
        limit = len(f.plan) if f.pause_at is None else f.pause_at
        if f.hold_at is not None:
            limit = min(limit, f.hold_at)
        pump = getattr(drv, "pump", None)
        if pump is not None:
            pump()
        while f.pos < limit and drv.can_send(f.plan[f.pos]):
            item = f.plan[f.pos]
            if item.kind == "host_pause" and f.pen_down:
                limit = self._lift_around_host_pause(f)
                continue
            self._send(f, item)
            if item.kind == "host_pause":
                f.hold_at = f.pos
                break
        return limit

    def _lift_around_host_pause(self, f: _Feed) -> int:
        """A host-side pen change with the pen down: lift it first, lower it after; returns
        the new feed limit."""
        up = self._injected(self.pen_up_cmds, "pen_up")
        down = self._injected(self.pen_down_cmds, "pen_down")
        f.plan[f.pos + 1:f.pos + 1] = down
        f.plan[f.pos:f.pos] = up
        if f.pause_at is not None:
            f.pause_at += len(up) + len(down)
            return f.pause_at
        return len(f.plan)

    def _send(self, f: _Feed, item: Item) -> None:
        self.driver.send(item)
        self.sent_any = True
        if item.tag is not None:
            self._sent_seqs.append(item.seq)
            self._sent_tags.append(item.tag)
        if item.kind == "pen_down":
            f.pen_down = True
        elif item.kind == "pen_up":
            f.pen_down = False
        f.pos += 1

    def _watch_pen_change(self, host_waiting: bool, state: str) -> None:
        """A pen change is pending while the firmware holds on its line (GRBL Hold on M0,
        Marlin 'paused for user') or the host stopped at it (Klipper)."""
        drv = self.driver
        head = drv.head_item()
        if host_waiting and drv.in_flight == 0:
            idx = self._sent_tags[-1] if self._sent_tags else None
            waiting = idx in self._pen_changes
        else:
            idx = head.tag if head is not None else None
            waiting = idx in self._pen_changes and drv.holding()
        if waiting and self._changing is None:
            self._changing = self._pen_changes[idx]
            self.control._pen_change(True, self._changing)
            self.plotter.pen_change = self._changing
            self.control._set("pen change")
            log.info("pen change: load %s, then continue", self._changing)
            self._report(force=True)
        elif self._changing is not None and not host_waiting and \
                (head is None or head.tag not in self._pen_changes):
            self._end_pen_change(state)

    def _end_pen_change(self, state: str) -> None:
        if self._changing is None:
            return
        self._changing = None
        self.control._pen_change(False)
        self.plotter.pen_change = None
        self.control._set(state)


class _NoResume(PlotterdError):
    pass
