"""The plotter worker: streams ready jobs to the one plotter, one at a time.

What it waits for before a job starts, in this order (each shows in ``status()["state"]``):

- the plotter (``waiting_for_plotter``): a port that is not there is retried every
  ``plotter.reconnect_s``; the jobs stay ``vectorised`` meanwhile. With a real port one
  connection stays open between jobs (reopening resets an Arduino-based board).
- a known position (``interrupted``): after a board reset or a lost link the head is
  wherever it was when the board restarted; the job stays ``interrupted`` with that reason
  until the profile homes or the user confirms the pen is at the origin; then it resumes.
- a resume (``paused``), and a fresh sheet (``waiting_for_paper``, ``plotter.paper: manual``):
  after a job is drawn the next one waits for "paper changed" (API, CLI or trigger file).

While a job plots: ``plotting``, ``paused``, ``pen_change`` (an M0 waits for the user).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plotterd.errors import ConfigError, PlotterdError
from plotterd.pen import PenModel, pen_from_dict
from plotterd.progress import Progress
from plotterd.service import routing, stages
from plotterd.service.config import DEFAULT_PLOTTER

if TYPE_CHECKING:
    from plotterd.service.config import PlotterConfig
    from plotterd.service.daemon import Daemon

log = logging.getLogger("plotterd.plotter")

# the reason an interrupted job waits for the user; found again in the job's error
POSITION_LOST = "position lost after board reset; home or confirm origin"
STATES = ("idle", "plotting", "paused", "waiting_for_paper", "waiting_for_plotter",
          "pen_change", "alarm", "disconnected", "interrupted")


class Busy(PlotterdError):
    """A machine command while a job is plotting (the API answers 409)."""


class NotConnected(PlotterdError):
    """A machine command while the plotter is not there (the API answers 503)."""


# Plotter methods the API may call
MACHINE_ACTIONS = ("pen_up", "pen_down", "home", "jog", "set_origin", "motors_off", "send_now")


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """A field of a status that may be an object or a mapping."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def waits_for_origin(job: dict) -> bool:
    return job["state"] == "interrupted" and POSITION_LOST in (job["error"] or "")


class Paper:
    """The sheet on the plotter, kept in the store so that it outlives a restart.

    ``ready``: a fresh sheet is in; ``job``: the job whose drawing is on it. A job starts on a
    fresh sheet, or (a resume) on its own sheet; ``auto`` (roll feeders, dry-run) never waits.
    Each plotter has its own sheet (setting ``paper``, or ``paper:<name>`` for a plotter not
    named ``plotter``).
    """

    KEY = "paper"

    def __init__(self, store: Any, mode: str, key: str = KEY):
        self.store = store
        self.mode = mode
        self.KEY = key

    def fresh(self) -> bool:
        """A job that is not a resume may start now."""
        return self.mode == "auto" or self.state()["ready"]

    def state(self) -> dict[str, Any]:
        value = self.store.setting(self.KEY) or {}
        return {"mode": self.mode, "ready": bool(value.get("ready", True)),
                "job": value.get("job"), "since": value.get("since")}

    def _set(self, ready: bool, job: int | None) -> None:
        self.store.set_setting(self.KEY, {"ready": ready, "job": job, "since": time.time()})

    def may_start(self, job: dict) -> bool:
        if self.mode == "auto":
            return True
        st = self.state()
        return st["ready"] or (job["resume_stroke"] is not None and st["job"] == job["id"])

    def take(self, job_id: int) -> dict[str, Any]:
        """The job starts drawing on the sheet; returns the state before (to put back if
        nothing was drawn)."""
        before = self.state()
        self._set(False, job_id)
        return before

    def put_back(self, before: dict[str, Any]) -> None:
        self._set(before["ready"], before["job"])

    def changed(self) -> None:
        self._set(True, None)

    def job_ended(self, job_id: int) -> None:
        """Stamp the end of the job on its sheet: a confirmation older than that (a trigger
        file touched while it plotted) is not one."""
        st = self.state()
        if not st["ready"] and st["job"] == job_id:
            self._set(False, job_id)


class PlotterWorker(threading.Thread):
    """Streams ready jobs to one plotter, with pause/resume/cancel, paper and position. The
    daemon runs one per configured plotter; each has its own connection, sheet and state,
    so one that is away or waiting never holds up the others."""

    def __init__(self, daemon: Daemon, pc: PlotterConfig | None = None):
        pc = pc or daemon.cfg.plotter
        super().__init__(name="plotter" if pc.name == DEFAULT_PLOTTER else f"plotter {pc.name}",
                         daemon=True)
        self.d = daemon
        self.pc = pc
        self.name = pc.name
        self.dry_run = pc.dry_run
        self.trigger = daemon.cfg.paper_trigger_of(pc)
        self.wake = threading.Event()
        self.current: int | None = None
        self.control: Any = None
        self.paused = False
        self.last_error: str | None = None
        self.paper = Paper(daemon.store, pc.paper_mode,
                           Paper.KEY if pc.name == DEFAULT_PLOTTER else f"paper:{pc.name}")
        self.free = False  # idle and able to start a fresh job (routing prefers it)
        self.gone_since: float | None = None  # when the plotter went away (routing)
        # one user of the machine at a time: a job, or a command from the API
        self.machine_lock = threading.Lock()
        self.link: Any = None  # the open plotterd.machine.Plotter (kept between jobs)
        # the port, by its stable /dev/serial/by-id name once the machine stage found it
        self.port: str | None = pc.port
        self.link_error: str | None = None  # why the plotter is not connected
        self.link_alarm = False  # ... because the firmware is in alarm
        self.asleep = False  # motors off (GRBL $SLP): no job until the origin is set
        self.position_lost: str | None = None  # set when a reset lost the position
        self._next_connect = 0.0
        self._sim_link: Any = None  # dry-run: a simulator for machine commands
        self._active: Any = None  # dry-run: the simulator the current job streams to
        self._last_refresh = 0.0
        self._can_plot = False
        self._progress: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- control from the API ------------------------------------------------------------
    def pause(self) -> None:
        with self._lock:
            self.paused = True
            if self.control is not None:
                self.control.pause()
        log.info("%s paused", self.name)

    def resume(self) -> None:
        with self._lock:
            self.paused = False
            if self.control is not None:
                self.control.resume()
        self.wake.set()
        log.info("%s resumed", self.name)

    def cancel(self) -> int | None:
        with self._lock:
            if self.control is None or self.current is None:
                return None
            self.control.cancel()
            return self.current

    def paper_changed(self, source: str = "api") -> dict[str, Any]:
        """A fresh sheet is in (API, CLI, trigger file)."""
        if self.current is not None:
            raise Busy(f"job {self.current} is plotting on this sheet")
        self.paper.changed()
        log.info("%s: paper changed (%s)", self.name, source)
        self.wake.set()
        return self.paper.state()

    def pen_continue(self) -> dict[str, Any]:
        """Go on after an M0 pen change."""
        with self._lock:
            control, job = self.control, self.current
        if control is None or not self._pen_change_pending():
            raise Busy("no pen change is waiting")
        control.continue_after_pen_change()
        log.info("job %s: pen change done, continuing", job)
        return self.status()

    # -- status ----------------------------------------------------------------------------
    def _pen_change_pending(self) -> bool:
        return bool(_get(self.control, "pen_change_pending", False))

    def _link_status(self) -> Any:
        link = self._active or self.link or self._sim_link
        try:
            return link.status if link is not None else None
        except Exception:  # a status that cannot be read is a link that is not there
            return None

    def connected(self) -> bool:
        if self.dry_run:
            return True
        return self.link is not None and bool(_get(self._link_status(), "connected", True))

    def _ready_jobs(self) -> list[dict]:
        """Ready jobs this plotter may draw (routing: request, stand-in, page fit)."""
        cfg = self.d.cfg
        return [j for j in self.d.store.list(states=["vectorised"], newest_first=False)
                if routing.may_draw(j, self.pc, cfg, self.d.plotter_gone)]

    def mine(self, job: dict) -> bool:
        """A job drawn (or being drawn) on this plotter; rows from before several plotters
        belong to the first one."""
        if job.get("plotter"):
            return job["plotter"] == self.name
        return self.pc is self.d.cfg.plotters[0]

    def gone(self) -> bool:
        """Away (port absent, no answer) for routing.gone_after_s: stand-ins may take its
        jobs (routing.when_gone: same_tags)."""
        since = self.gone_since
        return since is not None and time.monotonic() - since >= self.d.cfg.routing.gone_after_s

    def state_and_message(self) -> tuple[str, str]:
        """What the plotter does or waits for (one of STATES), and a line saying so."""
        link = self._link_status()
        if self.current is not None:
            return self._job_state(link)
        port = self.pc.port
        if not self.connected():
            why = f": {self.link_error}" if self.link_error else ""
            if self.link_alarm:
                return "alarm", f"alarm: {self.link_error}"
            if self._ready_jobs():
                return "waiting_for_plotter", f"waiting for plotter {port}{why}"
            return "disconnected", f"plotter {port} not connected{why}"
        if _get(link, "state") == "alarm":
            return "alarm", f"alarm: {_get(link, 'message') or 'see the plotter'}"
        if self.paused:
            return "paused", "paused (plotterd resume)"
        if self.asleep:
            return "idle", ("motors off: move the pen to the origin by hand, then plotterd "
                            "origin (or plotterd ctl home); jobs wait until then")
        return self._between_jobs_state()

    def _job_state(self, link: Any) -> tuple[str, str]:
        job = self.current
        if self._pen_change_pending():
            pen = _get(self.control, "pen") or _get(link, "pen") or "the next pen"
            return "pen_change", (f"waiting for pen change: {pen} (job {job}; plotterd "
                                  "pen-continue or POST /api/pen/continue)")
        stream_state = _get(self.control, "state")
        if self.paused or stream_state in ("pausing", "paused"):
            return "paused", f"job {job} paused (plotterd resume)"
        if stream_state == "recovering":
            return "disconnected", (f"job {job}: link lost, reconnecting to "
                                    f"{self.pc.port}")
        done, total = self._progress.get("completed_stroke"), self._progress.get("strokes")
        where = f" (stroke {done + 1}/{total})" if isinstance(done, int) and total else ""
        return "plotting", f"plotting job {job}{where}"

    def _between_jobs_state(self) -> tuple[str, str]:
        interrupted = [j for j in self.d.store.list(states=["interrupted"], newest_first=False)
                       if self.mine(j)]
        lost = [j for j in interrupted if waits_for_origin(j)]
        if lost or self.position_lost:
            which = f"job {lost[0]['id']} interrupted: " if lost else ""
            return "interrupted", (f"{which}{POSITION_LOST} (plotterd origin, or POST "
                                   "/api/machine/origin once the pen is at the origin)")
        paper = self.paper.state()
        on_sheet = [j for j in interrupted if j["id"] == paper["job"]]
        if self.paper.mode == "manual" and not paper["ready"] and not on_sheet:
            on = f"job {paper['job']} is on the sheet; " if paper["job"] else ""
            return "waiting_for_paper", (
                f"waiting for paper: {on}put in a new sheet and confirm (plotterd "
                f"paper-changed, POST /api/paper/changed or touch {self.trigger})")
        if interrupted:
            j = (on_sheet or interrupted)[0]
            also = " or plotterd paper-changed for the next job" if on_sheet else ""
            why = f": {j['error']}" if j["error"] else ""
            return "interrupted", (f"job {j['id']} interrupted at stroke {j['resume_stroke']} "
                                   f"(plotterd resume {j['id']}{also}){why}")
        return "idle", "idle"

    def status(self) -> dict[str, Any]:
        cfg = self.d.cfg
        state, message = self.state_and_message()
        link = self._link_status()
        pos = _get(link, "position")
        page = cfg.page_of(self.pc)
        return {
            "name": self.name, "tags": list(self.pc.tags),
            "page": {"paper": page.paper, "orientation": page.orientation,
                     "margin_mm": page.margin_mm},
            "port": self.port or f"simulator ({self.pc.sim_speed})",
            "dry_run": self.dry_run, "profile": self.pc.profile, "gone": self.gone(),
            "state": state, "message": message, "connected": self.connected(),
            "position": list(pos) if pos is not None else None,
            "position_known": (self.position_lost is None
                               and bool(_get(link, "position_known", link is not None))),
            "current_job": self.current, "last_error": self.last_error,
            "stream": _get(self.control, "state"),  # the streamer's own state
            "paper": self.paper.state(),
            "pen": self.pc.pen.to_dict() if self.pc.pen is not None else None,  # mounted
        }

    # -- the connection ----------------------------------------------------------------------
    def _present(self) -> bool:
        """A device path that exists (a /dev/serial/by-id link disappears with the device);
        URLs (socket://, rfc2217://) cannot be checked without opening them."""
        port = self.port
        return port is None or "://" in port or os.path.exists(port)

    def _ensure_connection(self) -> bool:
        """True when a job can start: dry-run, or the plotter is there (connected, with the
        machine stage's Plotter). Retries at most every ``plotter.reconnect_s``."""
        if self.dry_run:
            return True
        if self.link is not None:
            if self._present() and self._alive():
                return True
            self._drop_link(f"{self.port}: the plotter went away")
        now = time.monotonic()
        if now < self._next_connect:
            return False
        self._next_connect = now + self.pc.reconnect_s
        if not self._present():
            self._set_link_error(f"{self.port} is not there (unplugged or off?)")
            return False
        try:
            self.link = stages.connect_plotter(self.port, self.pc.profile,
                                               self.pc.baudrate, self.pc.timeouts,
                                               self.pc.machine)
        except (PlotterdError, OSError) as e:
            self.link = None
            # a board locked in alarm (homing needed, unlocking not allowed) is there, but
            # needs the user
            self.link_alarm = getattr(e, "alarm", None) is not None
            self._set_link_error(str(e))
            return False
        self.link_alarm = False
        stable = getattr(self.link, "port", None)
        if isinstance(stable, str) and stable != self.port:
            # /dev/ttyUSB0 may be another board after replugging; the by-id name is not
            log.info("plotter %s is %s: that name survives replugging (plotter.port)",
                     self.port, stable)
            self.port = stable
        if self.link_error is not None:
            log.info("%s: plotter %s is back", self.name, self.port)
        self.link_error = None
        self.gone_since = None
        if self.position_lost and _get(self._link_status(), "position_known"):
            self.position_reestablished("homed on connecting")  # a machine that homes
        return True

    def _alive(self) -> bool:
        """Between jobs, ask the board where it is now and then (a lost link shows)."""
        now = time.monotonic()
        if self.current is None and now - self._last_refresh >= self.pc.reconnect_s:
            self._last_refresh = now
            try:
                self.link.refresh()
            except PlotterdError as e:
                self.link_error = str(e)
                return False
        return bool(_get(self.link.status, "connected", True))

    def _set_link_error(self, error: str) -> None:
        if error != self.link_error:
            log.warning("%s: %s; jobs wait for it", self.name, error)
        self.link_error = error
        if self.link is None and self.gone_since is None:
            self.gone_since = time.monotonic()

    def _drop_link(self, why: str) -> None:
        link, self.link = self.link, None
        if link is not None:
            try:
                link.close()
            except Exception:  # noqa: BLE001 - closing a dead port may fail any way
                pass
        self._set_link_error(why)
        self._next_connect = 0.0

    # -- loop ------------------------------------------------------------------------------
    def run(self) -> None:
        try:  # import the machine stage now (it is slow to import) rather than at the first job
            stages.new_control()
        except Exception:
            log.exception("the machine stage cannot be imported")
        while not self.d.stopping.is_set():
            self._check_trigger()
            job = None
            with self.machine_lock:
                try:
                    self._can_plot = self._ensure_connection() and not self.asleep
                    job = self._next_job()
                except Exception:
                    log.exception("plotter: cannot take the next job")
                if job is not None:
                    self._run_job(job)
            if job is None:
                self.wake.wait(min(1.0, self.pc.reconnect_s))
                self.wake.clear()
        for link in (self.link, self._sim_link):
            if link is not None:
                link.close()
        self.link = self._sim_link = None

    def _run_job(self, job: dict) -> None:
        try:
            self.process(job)
        except Exception as e:
            log.exception("job %d: plotter worker error", job["id"])
            self.d.finish(job["id"], "failed", f"internal error while plotting: {e}",
                          expect=["plotting"])
        finally:
            self.paper.job_ended(job["id"])
            with self._lock:
                self.current, self.control = None, None
            self._progress = {}

    def _check_trigger(self) -> None:
        trigger = self.trigger
        try:
            touched = trigger.stat().st_mtime
        except OSError:
            return
        try:
            trigger.unlink()
        except OSError as e:
            log.warning("paper trigger %s: cannot remove it: %s", trigger, e)
            return
        since = self.paper.state()["since"]
        if since is not None and touched < since:
            log.warning("paper trigger %s ignored: touched before the last job ended", trigger)
            return
        try:
            self.paper_changed(source=f"trigger file {trigger}")
        except Busy as e:
            log.warning("paper trigger ignored: %s", e)

    def _next_job(self) -> dict | None:
        """The next job allowed to start, moved to ``plotting`` and assigned to this plotter
        in one compare-and-set (two plotters never take one job)."""
        self.free = (self._can_plot and not self.paused and self.current is None
                     and self.paper.fresh() and self._position_known())
        if self.paused or not self._can_plot:
            return None
        ready = self._ready_jobs()
        if not ready:
            return None
        sheet = self.paper.state()["job"]
        ready.sort(key=lambda j: j["id"] != sheet)  # the sheet's own job (a resume) first
        for job in ready:
            if not self.paper.may_start(job) or self._defer(job):
                continue
            if job["resume_stroke"] is not None and not self._position_known():
                self.d.store.transition(job["id"], "interrupted", expect=["vectorised"],
                                        error=POSITION_LOST, message=POSITION_LOST)
                log.warning("job %d: %s", job["id"], POSITION_LOST)
                continue
            if self.d.store.transition(job["id"], "plotting", expect=["vectorised"],
                                       plotter=self.name, **self._own_gcode(job)):
                return self.d.store.get(job["id"])
        return None

    def _defer(self, job: dict) -> bool:
        """Leave a job any plotter may draw to a free plotter listed before this one (the
        first free plotter gets it), waking it."""
        if job["resume_stroke"] is not None:
            return False
        cfg = self.d.cfg
        for other in self.d.plotters.values():
            if other is self:
                return False
            if other.free and routing.may_draw(job, other.pc, cfg, self.d.plotter_gone):
                other.wake.set()
                return True
        return False

    def _own_gcode(self, job: dict) -> dict[str, Any]:
        """Artefacts (and G-code stats) pointed at this plotter's G-code, made for its
        profile, page and pens: what it plots, what the page and a replot show."""
        mine = (job.get("stats") or {}).get("gcode_for", {}).get(self.name)
        if not mine or not mine.get("files"):
            return {}
        artefacts = {k: v for k, v in job["artefacts"].items()
                     if not (k.startswith("pen") and k[3:].isdigit())}
        artefacts.update(mine["files"])
        if artefacts == job["artefacts"]:
            return {}
        stats = dict(job["stats"])
        try:
            stats.update(json.loads((Path(job["dir"]) / artefacts["gcode_stats"]).read_text()))
        except (KeyError, OSError, ValueError):
            pass  # the figures stay those of the first plotter's G-code
        return {"artefacts": artefacts, "stats": stats}

    def _position_known(self) -> bool:
        if self.dry_run:
            return True  # every dry-run job gets a fresh simulator, at its origin
        if self.position_lost is not None:
            return False
        return bool(_get(self._link_status(), "position_known", True))

    # -- one job -----------------------------------------------------------------------------
    def process(self, job: dict) -> None:
        job_id = job["id"]
        job_dir = Path(job["dir"])
        gcode = job_dir / (job["artefacts"].get("gcode") or "plot.gcode")
        start = job["resume_stroke"]
        render = job_dir / "render.png" if self.dry_run else None
        record = job_dir / "plot.record"
        if start is None:
            record.unlink(missing_ok=True)  # a fresh plot starts a fresh drawing
        control = stages.new_control()
        self.free = False
        with self._lock:
            self.current, self.control = job_id, control
            if self.paused:
                control.pause()
        sheet_before = self.paper.take(job_id)
        self.d.store.update(job_id, plot_attempts=job["plot_attempts"] + 1, stage="plot",
                            progress=0.0)
        log.info("job %d: plotting%s", job_id, f" from stroke {start}" if start else "")
        ckpt: dict[str, Any] = {}
        report = self._reporter(job_id, ckpt)
        try:
            result = self._stream(gcode, start, report, control, record, render,
                                  self.job_pen(job))
        except (PlotterdError, OSError) as e:
            # a program that cannot be sent (an unreadable G-code file, a line too long for
            # the firmware, a move out of bounds): a resume would fail the same way
            self.last_error = str(e)
            self.paper.put_back(sheet_before)
            self._end(job, "failed", f"plotter: {e}", ckpt)
            return
        self._finish(job, result, ckpt, sheet_before, record, render)

    def job_pen(self, job: dict) -> PenModel | None:
        """The pen a job is drawn with: the one its strokes were optimised for, else the
        one it asked for (an SVG job's sidecar), else this plotter's; None: the G-code's
        nib, in full black."""
        artefact = (job.get("artefacts") or {}).get("strokes")
        asked = (job.get("options") or {}).get("pen")
        try:
            if artefact:
                meta = json.loads((Path(job["dir"]) / artefact).read_text()).get("metadata")
                if isinstance(meta, dict) and isinstance(meta.get("pen"), dict):
                    return pen_from_dict(meta["pen"])
            if isinstance(asked, dict):
                return pen_from_dict(asked, pens_folder=self.d.cfg.pens_dir)
        except (OSError, ValueError, ConfigError) as e:
            log.warning("job %d: its pen cannot be read (%s); rendering with %s", job["id"],
                        e, "this plotter's" if self.pc.pen else "the G-code's nib")
        return self.pc.pen

    def _stream(self, gcode: Path, start: int | None, report: Any, control: Any,
                record: Path, render: Path | None, pen: PenModel | None = None) -> Any:
        if self.link is not None:  # the real plotter, on the connection kept open
            program = stages.load_program(gcode)
            return stages.plot_on(self.link, program, start_stroke=start, progress=report,
                                  control=control)
        if self.dry_run:
            # a fresh simulator per job, shaped like the program's machine, recording what
            # it draws (the job's render; a resume after a restart adds to the drawing)
            program = stages.load_program(gcode)
            sim = stages.sim_job_plotter(program, self.pc.sim_speed, record)
            self._active = sim
            try:
                if start is not None:
                    # a simulator made for this job powers on at its origin, where the
                    # interrupted drawing's frame is: its position is known
                    sim.position_known = True
                result = stages.plot_on(sim, program, start_stroke=start, progress=report,
                                        control=control,
                                        render_to=render if pen is None else None)
                if pen is not None and render is not None:
                    # drawn with the job's pen (its nib and darkness), not only the nib
                    # the G-code names
                    sim.simulator.render(render, pen=pen)
                return result
            finally:
                self._active = None
                sim.close()
        raise PlotterdError("the plotter is not connected")  # _next_job checked it

    def _reporter(self, job_id: int, ckpt: dict[str, Any]):
        last: list[Any] = [0.0, None]  # time of the last write, the stream state then

        def report(p: Progress) -> None:
            info = p.info or {}
            self._progress = dict(info)
            stroke = info.get("stroke")
            if isinstance(stroke, int):
                ckpt["last_acked_stroke"] = stroke
            done_stroke = info.get("completed_stroke")
            if isinstance(done_stroke, int):
                ckpt["last_completed_stroke"] = done_stroke
            now = time.monotonic()
            changed = info.get("state") != last[1]  # paused, pen change...: at once
            if now - last[0] < 0.5 and p.done < p.total and not changed:
                return
            last[:] = [now, info.get("state")]
            data = stages.jsonable({k: v for k, v in info.items()
                                    if isinstance(v, (int, float, str))})
            data.update(done=p.done, total=p.total, eta_s=p.eta_s)
            self.d.store.progress(job_id, "plot", p.fraction, data, **ckpt)

        return report

    def _finish(self, job: dict, result: Any, ckpt: dict[str, Any],
                sheet_before: dict[str, Any], record: Path, render: Path | None) -> None:
        status = getattr(result, "status", "failed")
        error = getattr(result, "error", None)
        for key in ("last_acked_stroke", "last_completed_stroke"):
            val = getattr(result, key, None)
            if val is not None:
                ckpt[key] = val
        drew = job["resume_stroke"] is not None or ckpt.get("last_acked_stroke") is not None
        if status in ("failed", "interrupted") and not getattr(result, "connected", True):
            # the plotter could not be reached and nothing was sent: the job waits for it
            self.paper.put_back(sheet_before)
            if not self.dry_run:
                self._drop_link(error or f"{self.pc.port}: no answer")
                self.d.store.transition(job["id"], "vectorised", expect=["plotting"],
                                        message=f"waiting for the plotter: {error}")
                log.warning("job %d: the plotter cannot be reached (%s); the job waits",
                            job["id"], error)
                return
            status = "interrupted"
        if not drew and status != "done":
            self.paper.put_back(sheet_before)
        artefacts = dict(job["artefacts"])
        if render is not None and render.exists():
            artefacts["render"] = render.name
        if record.exists():
            artefacts["record"] = record.name
        ckpt["artefacts"] = artefacts
        ckpt["stats"] = {**job["stats"], "plot": stages.jsonable({
            k: getattr(result, k) for k in ("lines_acked", "lines_executed", "elapsed_s")
            if hasattr(result, k)})}
        if status == "cancelled" and self.d.stopping.is_set():
            status = "interrupted"  # a shutdown, not a user's cancel: resumable
            error = error or "the daemon stopped while plotting"
        elif status == "interrupted" and not self.dry_run and self._lost_position(result):
            # the board reset (or the link was lost, which resets it): the head is not where
            # the program thinks; only homing or the user's word re-establishes it
            error = f"{error}; {POSITION_LOST}" if error and POSITION_LOST not in error \
                else (error or POSITION_LOST)
            self.position_lost = error
            if not _get(self._link_status(), "connected", False):
                self._drop_link(getattr(result, "error", None) or "the link was lost")
        if status == "interrupted" and getattr(result, "resume_stroke", None) is not None:
            ckpt["resume_stroke"] = result.resume_stroke
        if status == "interrupted" and getattr(result, "resume_stroke", 1) is None \
                and ckpt.get("last_completed_stroke") is not None:
            status = "done"  # every stroke was drawn; only the closing moves were lost
        if status != "done":
            self.last_error = error or status
        self._end(job, status, error, ckpt)

    def _lost_position(self, result: Any) -> bool:
        if getattr(result, "position_lost", False):
            return True
        # a link lost mid-plot: reconnecting resets the board (DTR), so the position is lost
        # unless the machine stage re-established it (it homes)
        return bool(getattr(result, "connected", False)) and not self.d.stopping.is_set()

    def _end(self, job: dict, status: str, error: str | None, fields: dict[str, Any]) -> None:
        job_id = job["id"]
        if status == "interrupted":
            if fields.get("resume_stroke") is None:
                done = fields.get("last_completed_stroke", job["last_completed_stroke"])
                fields["resume_stroke"] = 0 if done is None else done + 1
            self.d.store.transition(job_id, "interrupted", expect=["plotting"],
                                    message=error or "plot interrupted", error=error, **fields)
            log.warning("job %d: plot interrupted (resume from stroke %d)%s", job_id,
                        fields["resume_stroke"], f": {error}" if error else "")
            return
        if status not in ("done", "cancelled", "failed"):
            status, error = "failed", error or f"plot ended with status {status!r}"
        self.d.finish(job_id, status, error, expect=["plotting"], **fields)

    # -- machine commands (API) --------------------------------------------------------------
    def machine(self, action: str, *args: Any) -> Any:
        """Run one Plotter command between jobs (never while one plots: Busy). The Plotter
        bounds-checks every move. ``home`` and ``set_origin`` re-establish the position."""
        assert action in MACHINE_ACTIONS, action
        if self.current is not None:
            raise Busy(f"job {self.current} is plotting; machine commands wait until it ends "
                       "(or cancel it)")
        if not self.machine_lock.acquire(timeout=5):
            raise Busy("the plotter is busy with another command")
        try:
            link = self._command_link()
            if self.asleep and action != "motors_off":
                link = self._wake()
            out = getattr(link, action)(*args)
            if action == "motors_off":
                self.asleep = True
        finally:
            self.machine_lock.release()
        if action in ("home", "set_origin"):
            resumed = self.position_reestablished(
                "homed" if action == "home" else "origin confirmed")
            return {"resumed": resumed}
        return stages.jsonable(out)

    def _wake(self) -> Any:
        """GRBL leaves $SLP only through a reset: reconnecting gives it one (its position
        was lost with the motors anyway)."""
        if self.dry_run:
            self._sim_link.close()
            self._sim_link = None
        else:
            link, self.link = self.link, None
            link.close()
        self.asleep = False
        log.info("plotter: waking the board after motors off (reconnecting)")
        return self._command_link()

    def _command_link(self) -> Any:
        if self.dry_run:
            if self._sim_link is None:
                self._sim_link = stages.sim_plotter(self.pc.profile, self.pc.sim_speed)
            return self._sim_link
        self._next_connect = 0.0  # a user waits: try now
        if not self._ensure_connection() or self.link is None:
            raise NotConnected(f"plotter {self.pc.port} is not connected: "
                               f"{self.link_error or 'no answer'}")
        return self.link

    # -- position ----------------------------------------------------------------------------
    def position_reestablished(self, how: str) -> list[int]:
        """Homed, or the user confirmed the origin: jobs interrupted for a lost position
        resume from their stroke. Returns their ids."""
        self.position_lost = None
        resumed = []
        for job in self.d.store.list(states=["interrupted"], newest_first=False):
            if waits_for_origin(job) and self.mine(job):
                self.d.resume_job(job["id"])
                resumed.append(job["id"])
                log.info("job %d: position re-established (%s): resumes from stroke %s",
                         job["id"], how, job["resume_stroke"])
        self.wake.set()
        return resumed
