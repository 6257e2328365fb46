"""A connection to one plotter that stays open between jobs (printcore's model): connect once,
stream jobs, drive the machine (pen, home, jog, origin, motors off, one line) and know
whether its position can be trusted.

    plotter = Plotter("/dev/serial/by-id/usb-...", load_profile("grbl-servo"))
    plotter.connect()                 # GRBL: banner, $I, $$; homes when $22=1
    result = plotter.stream(program, progress=cb, control=ctl)
    plotter.status                    # PlotterStatus (no I/O)
    plotter.close()

Position: after opening the port, a board reset or a reconnect, the machine's coordinates
are wherever the head was when the board started. They are trusted again only after homing
(the profile/firmware homes) or ``set_origin()`` (the user confirms the pen is at the
origin). A job started from its first stroke draws in the board's current frame, which is
then the frame its resume needs: a reset mid-job ends it ``interrupted`` with
``position_lost`` unless the machine homes.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serial import SerialBase

from plotterd.errors import ConfigError, InputError, PlotterdError
from plotterd.gcode.tokens import command, gcode_words
from plotterd.machine.base import BoardReset, FirmwareError, LinkLost, Timeouts
from plotterd.machine.grbl import setting_number
from plotterd.machine.guard import Limits, RefusedLine, check_send
from plotterd.machine.transport import Transport

if TYPE_CHECKING:
    from plotterd.gcode.program import Program
    from plotterd.machine.stream import StreamControl, StreamResult

log = logging.getLogger("plotterd.machine")

FIRMWARES = ("grbl", "marlin", "klipper")
BY_ID = "/dev/serial/by-id"


@dataclass
class MachineOptions:
    """How plotterd may act on the machine at connect time."""

    homing: bool | None = None  # None: GRBL from $22; Marlin/Klipper: no (True: G28)
    unlock_alarm: bool | None = None  # send $X on an alarm at connect; None: only if no homing
    write_settings: bool = False  # may set $10 to add the buffer report (Bf:)
    jog_feed: float = 3000.0  # mm/min


@dataclass
class PlotterStatus:
    connected: bool
    state: str  # disconnected idle run hold alarm door home check sleep "pen change" unknown
    position: tuple[float, float] | None  # mm, work coordinates; None if unknown
    position_known: bool
    pen_change_pending: bool = False
    pen: str | None = None  # the pen to load, while a pen change waits
    message: str | None = None
    firmware: str = ""
    port: str = ""


@dataclass
class PortInfo:
    device: str  # the path to use (/dev/serial/by-id/... when the board has one)
    tty: str  # the kernel device it points at (/dev/ttyUSB0)
    description: str = ""
    hwid: str = ""
    by_id: list[str] = field(default_factory=list)


def list_ports() -> list[PortInfo]:
    """Serial ports (pyserial's list_ports), each with its stable /dev/serial/by-id names:
    a by-id path survives replugging and other boards being added."""
    from serial.tools import list_ports as lp

    links: dict[str, list[str]] = {}
    if os.path.isdir(BY_ID):
        for name in sorted(os.listdir(BY_ID)):
            path = os.path.join(BY_ID, name)
            links.setdefault(os.path.realpath(path), []).append(path)
    out = []
    for p in sorted(lp.comports(), key=lambda p: p.device):
        ids = links.get(os.path.realpath(p.device), [])
        out.append(PortInfo(ids[0] if ids else p.device, p.device, p.description or "",
                            p.hwid or "", ids))
    return out


def prefer_by_id(port: str, by_id: str = BY_ID) -> str:
    """``/dev/ttyUSB0`` -> its ``/dev/serial/by-id/...`` link when there is one: the by-id
    name stays the same when the board is replugged or others are added."""
    if "://" in port or port.startswith(by_id) or not os.path.isdir(by_id) \
            or not os.path.exists(port):
        return port
    real = os.path.realpath(port)
    for name in sorted(os.listdir(by_id)):
        path = os.path.join(by_id, name)
        if os.path.realpath(path) == real:
            return path
    return port


def _resolve_profile(profile_or_firmware: Any):
    """(firmware, profile or None) from a Profile, a profile name/path or a firmware name."""
    if isinstance(profile_or_firmware, str) and profile_or_firmware.lower() in FIRMWARES:
        return profile_or_firmware.lower(), None
    if isinstance(profile_or_firmware, str | Path):
        from plotterd.gcode.profile import load_profile

        profile_or_firmware = load_profile(profile_or_firmware)
    fw = getattr(profile_or_firmware, "firmware", None)
    if fw not in FIRMWARES:
        raise ConfigError("firmware", f"{profile_or_firmware!r}: expected a profile or one of "
                                      f"{', '.join(FIRMWARES)}")
    return fw, profile_or_firmware


class Plotter:
    """One plotter on one port, kept open between jobs. Thread-safe: ``status`` can be read
    while a job streams; machine controls are refused while one does."""

    def __init__(self, port: str | SerialBase, profile_or_firmware: Any = "grbl", *,
                 baudrate: int = 115200, timeouts: Timeouts | None = None,
                 options: MachineOptions | None = None, flow: str | None = None,
                 header: dict[str, Any] | None = None):
        """``profile_or_firmware``: a Profile, a profile name or file, or grbl / marlin /
        klipper (then the bounds come from each program's header). ``header``: a program
        header to complete a ``sim://`` URL from (bounds, pen kind)."""
        if not isinstance(baudrate, int) or baudrate <= 0:
            raise ConfigError("baudrate", f"{baudrate!r} is not a positive integer")
        self.firmware, self.profile = _resolve_profile(profile_or_firmware)
        self.protocol = "marlin" if self.firmware == "klipper" else self.firmware
        self.options = options or MachineOptions()
        self.timeouts = timeouts or Timeouts()
        if isinstance(port, str) and port.lower().startswith("sim://"):
            from plotterd.machine.stream import sim_url_for

            port = sim_url_for(port, header or self._profile_header())
        elif isinstance(port, str):
            port = prefer_by_id(port)
        self.port = port
        self.transport = Transport(port, baudrate, self.timeouts)
        from plotterd.machine.stream import make_driver

        self.driver = make_driver(self.protocol, self.transport, self.timeouts, flow)
        self.flow = flow
        self._lock = threading.RLock()
        self._connected = False
        self.position_known = False
        self.homing = False
        self.streaming = False
        self.asleep = False  # GRBL after motors_off ($SLP)
        self.message: str | None = None
        self.pen_change: str | None = None  # the pen a waiting pen change asks for
        self._control: StreamControl | None = None
        self.last_state = "disconnected"

    # ---- what the profile says ----
    def _profile_header(self) -> dict[str, Any]:
        p = self.profile
        if p is None:
            return {}
        return {"bounds": list(p.bounds), "pen_down": list(p.pen.down_commands),
                "pen_up": list(p.pen.up_commands)}

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        return tuple(self.profile.bounds) if self.profile is not None else None

    def pen_lines(self, down: bool) -> list[str]:
        if self.profile is None:
            raise ConfigError("profile", "pen commands need a profile (--profile)")
        return self.profile.pen_down_lines() if down else self.profile.pen_up_lines()

    @property
    def simulator(self):
        return self.transport.simulator

    # ---- connection ----
    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        """Open the port (once: reopening resets most boards) and greet the firmware; home
        when the machine homes. LinkLost / FirmwareError when that fails."""
        with self._lock:
            if self._connected:
                return
            self.position_known = False
            self.transport.open()
            try:
                self.driver.connect()
                self._establish()
            except PlotterdError:
                self.transport.close()
                raise
            self._connected = True

    def close(self) -> None:
        with self._lock:
            self._connected = False
            self.position_known = False
            self.asleep = False
            self.transport.close()
            sim = self.transport.simulator
            if sim is not None:
                sim.close()
            self.last_state = "disconnected"

    def _establish(self) -> None:
        """After a banner: read the settings, home or (where allowed) unlock."""
        if self.protocol == "grbl":
            self._establish_grbl()
        else:
            self.homing = bool(self.options.homing)
            if self.homing:
                self.driver.command("G28 X Y")
                self.position_known = True
                self.message = "homed"

    def _establish_grbl(self) -> None:
        drv = self.driver
        settings = drv.read_settings()
        mask = int(setting_number(settings, 10, 1)) & 0xFF
        if self.options.write_settings and not mask & 2:
            drv.write_settings({10: mask | 2})  # add Bf: to status reports
            settings = drv.read_settings()
        homing_enabled = setting_number(settings, 22, 0) == 1
        self.homing = homing_enabled if self.options.homing is None else \
            bool(self.options.homing) and homing_enabled
        st = drv.query_status()
        if self.homing:
            drv.home()
            self.position_known = True
            self.message = "homed"
            return
        if st.state == "Alarm":
            allowed = self.options.unlock_alarm
            if allowed is None:
                allowed = not homing_enabled
            if not allowed:
                raise FirmwareError(
                    "GRBL is locked in Alarm after a reset; it must be homed ($H) or "
                    "unlocked by the user (machine options: unlock_alarm)", alarm=0)
            drv.command("$X")
            self.message = "alarm unlocked ($X); position unknown"

    def _reconnect(self) -> None:
        """The link was lost mid-job: reopen (the board resets) and greet it again."""
        self.position_known = False
        self.transport.reconnect()
        self.driver.connect()
        self._establish()

    def _after_reset(self) -> None:
        """The board reset mid-job (banner, ALARM:3): its position is gone unless it homes."""
        self.position_known = False
        self.driver.recover_after_reset()
        self._establish()

    # ---- status ----
    @property
    def status(self) -> PlotterStatus:
        """What is known now, without talking to the board."""
        pos = self.driver.work_position() if self._connected else None
        state = self.driver.state_name() if self._connected else "disconnected"
        pending = self.pen_change is not None
        if pending:
            state = "pen change"
        return PlotterStatus(
            connected=self._connected, state=state,
            position=pos if self.position_known and pos is not None else None,
            position_known=self.position_known and self._connected,
            pen_change_pending=pending, pen=self.pen_change,
            message=(f"load pen {self.pen_change} and continue" if pending else self.message),
            firmware=self.firmware, port=str(self.port))

    def refresh(self) -> PlotterStatus:
        """Ask the board where it is (not while a job streams), then ``status``."""
        with self._lock:
            if self._connected and not self.streaming:
                try:
                    self.driver.query_position()
                except LinkLost as e:
                    self._lost(e)
            return self.status

    def _lost(self, e: Exception) -> None:
        self._connected = False
        self.position_known = False
        self.message = str(e)
        self.transport.close()

    # ---- streaming ----
    def stream(self, program: Program, start_stroke: int | None = None,
               progress=None, control: StreamControl | None = None, *,
               render_to: str | Path | None = None) -> StreamResult:
        """Stream ``program`` over this connection (connecting first if needed). Raises
        InputError/ConfigError/OutOfBoundsError for a program that cannot be sent; every
        machine-side ending is in the StreamResult."""
        from plotterd.machine.stream import StreamControl, _Streamer

        control = control or StreamControl()
        with self._lock:
            if self.streaming:
                raise PlotterdError("a job is already streaming on this plotter")
            self.streaming = True
        try:
            self._control = control
            return _Streamer(program, self, start_stroke, progress, control, render_to).run()
        finally:
            self._control = None
            self.pen_change = None
            self.streaming = False

    def continue_after_pen_change(self) -> None:
        """The new pen is in: cycle start (GRBL ``~``), ``M108`` (Marlin) or, for a host-side
        pause (Klipper), go on sending."""
        control = self._control
        if control is None or self.pen_change is None:
            raise PlotterdError("no pen change is waiting")
        control.continue_after_pen_change()

    # ---- machine controls (not while streaming) ----
    def _idle_call(self, what: str):
        if self.streaming:
            raise PlotterdError(f"{what}: a job is streaming (pause or cancel it first)")
        if not self._connected:
            self.connect()
        if self.asleep:
            # GRBL after $SLP answers nothing until a reset; it wakes locked: home or unlock
            # as at connect
            self.asleep = False
            self.driver.wake()
            self._establish()

    def _command(self, text: str) -> list[str]:
        try:
            return self.driver.command_lines(text)
        except (LinkLost, BoardReset) as e:
            self._lost(e)
            raise

    def send_now(self, line: str) -> list[str]:
        """Send one line and wait for its answer (the firmware's lines before ``ok``).
        Only what is on the allow-list goes (plotterd.machine.guard.check_send): moves
        bounds-checked from the known position (Z too), the profile's pen commands, dwell,
        status and setting reads, and the profile's ``send_allow``."""
        with self._lock:
            self._idle_call("send")
            text = line.strip()
            if not text:
                raise InputError("send: empty line")
            if "\n" in text or "\r" in text:
                raise InputError("send: one line at a time")
            if self.protocol == "grbl" and text == "?":
                return self._status_line()
            if self.protocol == "grbl" and any(c in text for c in "?!~\x18"):
                raise RefusedLine(f"{text!r}: real-time characters are sent by the controls")
            check_send(text, self._limits(text), self.status.position)
            out = self._command(text)
            s = "".join(text.split()).upper()
            if s == "$X":
                self.message = "alarm unlocked by the user"
            if s.startswith("$"):
                return out
            words = gcode_words(command(text))
            if ("G", 91.0) in words:
                self._command("G90")  # relative for this line only: jobs assume G90
            if {("M", 84.0), ("M", 18.0)} & set(words):  # only by a profile's send_allow
                self.position_known = False
            self.driver.after_move()
            return out

    def _limits(self, text: str = "") -> Limits:
        """What a hand-sent line is checked against: the profile; without one, no move."""
        if self.profile is not None:
            return Limits.of(self.profile)
        if any(a in text.upper() for a in "XYZ") and not text.lstrip().startswith("$"):
            raise ConfigError("profile", "moves need the machine's bounds: give a profile")
        return Limits((0.0, 0.0, 0.0, 0.0), self.firmware)

    def _status_line(self) -> list[str]:
        """GRBL's answer to '?', as it came."""
        self.driver.query_status()
        for _, direction, text in reversed(self.transport.log):
            if direction == "<" and text.startswith("<"):
                return [text]
        return []

    def pen_up(self) -> None:
        with self._lock:
            self._idle_call("pen up")
            for c in self.pen_lines(down=False):
                self._command(c)

    def pen_down(self) -> None:
        with self._lock:
            self._idle_call("pen down")
            for c in self.pen_lines(down=True):
                self._command(c)

    def home(self) -> None:
        """Home the machine ($H / G28): its position is known afterwards."""
        with self._lock:
            self._idle_call("home")
            if self.protocol == "grbl":
                settings = self.driver.read_settings()
                if setting_number(settings, 22, 0) != 1:
                    raise FirmwareError("GRBL homing is not enabled ($22=0): set the origin "
                                        "by hand instead (origin)")
                self.driver.home()
            else:
                self._command("G28 X Y")
            self.position_known = True
            self.message = "homed"

    def jog(self, dx: float, dy: float, feed: float | None = None) -> tuple[float, float]:
        """Move by (dx, dy) mm from the known position, pen as it is; refused when the
        position is unknown or the target is outside the bounds. Returns the target."""
        with self._lock:
            self._idle_call("jog")
            if not self.position_known:
                raise RefusedLine("jog: the position is unknown (home, or set the origin "
                                  "first)")
            if self.bounds is None:
                raise ConfigError("profile", "jog needs the machine's bounds: give a profile")
            self.driver.query_position()
            pos = self.driver.work_position()
            if pos is None:
                raise RefusedLine("jog: the board did not report its position")
            tx, ty = pos[0] + dx, pos[1] + dy
            feed = feed or self.options.jog_feed
            line = f"G90 G1 X{tx:.3f} Y{ty:.3f} F{feed:.0f}"
            check_send(line, self._limits(line), pos)
            self._command(line)
            self.driver.after_move()
            return (tx, ty)

    def set_origin(self) -> None:
        """The user confirms the pen is at the origin (0, 0): from now on the position is
        known. GRBL: G10 L20 P1 X0 Y0 (G54, kept by the board across soft resets);
        Marlin/Klipper: G92 X0 Y0."""
        with self._lock:
            self._idle_call("origin")
            if self.protocol == "grbl":
                self._command("G10 L20 P1 X0 Y0")
            else:
                self._command("G92 X0 Y0")
            self.driver.after_move()
            self.position_known = True
            self.message = "origin set by the user"

    def motors_off(self) -> None:
        """Release the steppers (the head can be moved by hand): the position is lost.
        GRBL: $SLP (sleep; the board wakes with a soft reset, locked); Marlin: M84."""
        with self._lock:
            self._idle_call("motors off")
            self.position_known = False
            if self.protocol == "grbl":
                self.driver.sleep()
                self.asleep = True
            else:
                self._command("M84")
            self.message = "motors off: set the origin or home before drawing"

    def unlock(self) -> None:
        """The user allows clearing a GRBL alarm ($X); the position stays as uncertain as
        it was."""
        with self._lock:
            self._idle_call("unlock")
            if self.protocol == "grbl":
                self._command("$X")

    @staticmethod
    def list_ports() -> list[PortInfo]:
        return list_ports()

    def __enter__(self) -> Plotter:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
