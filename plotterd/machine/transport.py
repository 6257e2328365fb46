"""The serial link, through pyserial for everything: device paths, ``/dev/serial/by-id/...``,
pyserial URLs (``socket://``, ``rfc2217://``) and the simulated plotters (``sim://``)."""

from __future__ import annotations

import logging
import re
import time

import serial

import plotterd.machine  # noqa: F401 - registers the sim:// URL handler
from plotterd.machine.base import LinkLost, Timeouts

log = logging.getLogger("plotterd.machine")

READ_SLICE = 0.02  # s; reads block at most this long so the streamer stays responsive
_EOL = re.compile(rb"[\r\n]")
LINE_CAP = 1024  # bytes without an end of line are handed on as one (garbled) line


class Transport:
    """A pyserial port with line reading, clear errors and reconnection."""

    def __init__(self, port: str | serial.SerialBase, baudrate: int = 115200,
                 timeouts: Timeouts | None = None):
        """``port``: a device path or pyserial URL, or a pyserial port object (opened here
        if it is not open yet; reconnecting closes and reopens that same object)."""
        self.ser: serial.SerialBase | None = None
        if isinstance(port, str):
            self.port = port
        else:
            self.ser = port
            self.port = str(getattr(port, "port", None) or port)
        self.baudrate = baudrate
        self.timeouts = timeouts or Timeouts()
        self._buf = bytearray()
        self.log: list[tuple[float, str, str]] = []  # (time, ">" sent / "<" received, text)
        self._t0 = time.monotonic()
        self._last_rx = self._t0

    @property
    def simulator(self):
        """The simulated plotter behind a sim:// port, else None."""
        return getattr(self.ser, "simulator", None)

    def open(self) -> None:
        try:
            if self.ser is None:
                self.ser = serial.serial_for_url(self.port, baudrate=self.baudrate,
                                                 timeout=READ_SLICE, write_timeout=5.0,
                                                 do_not_open=True)
            # opening asserts DTR, which resets most Arduino-based boards: the caller waits
            # for the banner
            # reads must never block for long, whoever made the port object
            self.ser.timeout = READ_SLICE
            self.ser.write_timeout = 5.0
            if not self.ser.is_open:
                self.ser.open()
            self.ser.reset_input_buffer()
            self._last_rx = time.monotonic()
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkLost(f"cannot open {self.port}: {e}") from e
        self._buf.clear()

    def close(self) -> None:
        if self.ser is not None:
            try:
                self.ser.close()
            except (serial.SerialException, OSError):
                pass

    def reconnect(self) -> None:
        """Close, then reopen with exponential backoff; LinkLost when every attempt fails."""
        self.close()
        delay = self.timeouts.reconnect_backoff
        last: Exception | None = None
        for attempt in range(1, self.timeouts.reconnect_attempts + 1):
            time.sleep(delay)
            try:
                self.open()
                log.info("reconnected to %s (attempt %d)", self.port, attempt)
                return
            except LinkLost as e:
                last = e
                log.warning("reconnect %d/%d to %s failed: %s", attempt,
                            self.timeouts.reconnect_attempts, self.port, e)
            delay = min(delay * 2, 8.0)
        raise LinkLost(f"{self.port}: gave up after {self.timeouts.reconnect_attempts} "
                       f"reconnection attempts ({last})")

    def write(self, data: bytes) -> None:
        if self.ser is None or not self.ser.is_open:
            raise LinkLost(f"{self.port}: port is not open")
        try:
            self.ser.write(data)
        except (serial.SerialException, OSError) as e:
            raise LinkLost(f"{self.port}: write failed: {e}") from e
        if data not in (b"?",):
            self._note(">", data.decode("latin-1").rstrip())

    def _note(self, direction: str, text: str) -> None:
        self.log.append((time.monotonic() - self._t0, direction, text))
        if len(self.log) > 2000:
            del self.log[:1000]

    def readline(self, timeout: float) -> str | None:
        """One line without its end-of-line characters, or None after ``timeout`` seconds.
        Empty lines are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._pop_line()
            if line is not None:
                return line
            if self.ser is None or not self.ser.is_open:
                raise LinkLost(f"{self.port}: port is not open")
            try:
                waiting = self.ser.in_waiting
                if waiting:
                    data = self.ser.read(waiting)
                elif time.monotonic() < deadline:
                    data = self.ser.read(1)  # blocks at most READ_SLICE
                else:
                    return None
                self._empty_reads = 0
            except (serial.SerialException, OSError) as e:
                if self._spurious(e):
                    continue
                raise LinkLost(f"{self.port}: read failed: {e}") from e
            if data:
                self._last_rx = time.monotonic()
            self._buf += data

    def quiet_for(self) -> float:
        """Seconds since the last byte of any kind arrived (or since the port opened): what
        says a link is alive, whatever the firmware is answering."""
        return time.monotonic() - self._last_rx
    def _spurious(self, e: Exception) -> bool:
        """A pseudo-terminal (socat, ser2net, a firmware simulator) can report readiness a
        moment before its data can be read; pyserial then raises "returned no data", which is
        also how an unplugged USB device looks. Once is a race; a few in a row is a loss."""
        if "returned no data" not in str(e):
            return False
        self._empty_reads = getattr(self, "_empty_reads", 0) + 1
        if self._empty_reads > 3:
            return False
        time.sleep(0.01)
        return True

    def _pop_line(self) -> str | None:
        while True:
            m = _EOL.search(self._buf)
            if m is None and len(self._buf) < LINE_CAP:
                return None
            i = m.start() if m is not None else LINE_CAP
            raw = bytes(self._buf[:i])
            del self._buf[: i + 1 if m is not None else i]
            text = raw.decode("latin-1").strip()
            if text:
                self._note("<", text)
                return text
