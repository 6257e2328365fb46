"""Serve a simulated plotter on a pseudo-terminal, so any G-code sender (or ``plotterd plot
--port /dev/pts/N``) can talk to it as to a USB serial board.

Two threads bridge bytes between the pty master and the simulator. A pty has no DTR line, so
opening it does not reset the board: hosts see no banner and soft-reset (GRBL) or handshake
(Marlin) on their own, as with a board whose auto-reset is disabled.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import tty

from plotterd.machine.sim import make_simulator
from plotterd.machine.sim.core import SimConfig, Simulator

log = logging.getLogger("plotterd.machine.sim")


class PtyServer:
    def __init__(self, url_or_cfg: str | SimConfig, baudrate: int = 115200):
        self.sim: Simulator = make_simulator(url_or_cfg)
        self.baudrate = baudrate
        self.path: str | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> str:
        """Open the pty, power the board on, start bridging; returns the slave path."""
        self._master, self._slave = os.openpty()
        # raw mode: no echo, no line editing, bytes pass unchanged (as on a real tty device)
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self.sim.power_on(self.baudrate)
        for target in (self._host_to_sim, self._sim_to_host):
            th = threading.Thread(target=target, daemon=True, name=f"pty-{target.__name__}")
            th.start()
            self._threads.append(th)
        return self.path

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=2)
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        self.sim.close()

    def __enter__(self) -> PtyServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _revive(self) -> None:
        # the simulated device "disappeared" (a disconnect fault): on a pty the path stays,
        # so the board simply comes back after a moment, freshly reset
        time.sleep(0.2)
        try:
            self.sim.power_on(self.baudrate)
        except OSError:
            self._stop.wait(1.0)  # unplugged for good: stay silent

    def _host_to_sim(self) -> None:
        assert self._master is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                return
            if not data:
                continue
            try:
                self.sim.host_write(data)
            except Exception:  # noqa: BLE001 - SerialException from a disconnect fault
                self._revive()

    def _sim_to_host(self) -> None:
        assert self._master is not None
        while not self._stop.is_set():
            try:
                n = self.sim.host_in_waiting()
                data = self.sim.host_read(n, 0) if n else self.sim.host_read(1, 0.05)
            except Exception:  # noqa: BLE001 - SerialException from a disconnect fault
                self._revive()
                continue
            if data:
                try:
                    os.write(self._master, data)
                except OSError:
                    return
