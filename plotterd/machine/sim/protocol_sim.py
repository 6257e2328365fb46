"""pyserial URL handler for ``sim://grbl?...`` and ``sim://marlin?...``.

pyserial's ``serial_for_url`` imports ``<package>.protocol_<scheme>`` for every package in
``serial.protocol_handler_packages``; ``plotterd.machine`` appends this package there. The
class follows pyserial's own ``loop://`` handler (serial/urlhandler/protocol_loop.py).

Opening the port powers the simulated board on (like the DTR pulse that resets an Arduino);
closing and reopening the same instance keeps the simulator, its head position and what it
drew, so a host that reconnects after a (simulated) disconnect finds the same machine.
"""

from __future__ import annotations

import numbers

from serial.serialutil import PortNotOpenError, SerialBase, SerialException, to_bytes

from plotterd.machine.sim import make_simulator
from plotterd.machine.sim.core import Simulator


class Serial(SerialBase):
    """A serial port whose other end is a simulated plotter (``port.simulator``)."""

    BAUDRATES = (9600, 19200, 38400, 57600, 115200, 230400, 250000, 500000, 1000000)

    def __init__(self, *args, **kwargs):
        self.simulator: Simulator | None = None
        self._sim_url: str | None = None
        self._last_dtr = True
        super().__init__(*args, **kwargs)

    def open(self) -> None:
        if self.is_open:
            raise SerialException("Port is already open.")
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.simulator is None or self._sim_url != self._port:
            try:
                self.simulator = make_simulator(self._port)
            except ValueError as e:
                raise SerialException(f"could not open port {self._port!r}: {e}") from e
            self._sim_url = self._port
        self._reconfigure_port()
        try:
            self.simulator.power_on(self._baudrate)
        except OSError as e:
            raise SerialException(f"could not open port {self._port!r}: {e}") from e
        self.is_open = True
        self._last_dtr = self._dtr_state

    def close(self) -> None:
        self.is_open = False
        super().close()

    def _reconfigure_port(self) -> None:
        if not isinstance(self._baudrate, numbers.Integral) or not 0 < self._baudrate < 2**32:
            raise ValueError(f"invalid baudrate: {self._baudrate!r}")

    def _sim(self) -> Simulator:
        if not self.is_open or self.simulator is None:
            raise PortNotOpenError()
        return self.simulator

    @property
    def in_waiting(self) -> int:
        return self._sim().host_in_waiting()

    def read(self, size: int = 1) -> bytes:
        sim = self._sim()
        timeout = self._timeout
        return sim.host_read(size, 0.0 if timeout == 0 else timeout)

    def write(self, data) -> int:
        data = to_bytes(data)
        self._sim().host_write(data)
        return len(data)

    def reset_input_buffer(self) -> None:
        self._sim().host_reset_input()

    def reset_output_buffer(self) -> None:
        self._sim()

    @property
    def out_waiting(self) -> int:
        return 0

    def _update_break_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        # DTR going high resets the board, as on an Arduino
        if self.is_open and self._dtr_state and not self._last_dtr and self.simulator:
            self.simulator.power_on(self._baudrate)
        self._last_dtr = self._dtr_state

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True
