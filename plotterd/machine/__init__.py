"""Program -> plotter: pyserial transport, GRBL and Marlin drivers, the streamer (pause,
resume, cancel, resume from a stroke) and simulated plotters (``sim://`` URLs).

Importing this package registers the ``sim://`` pyserial URL handler.
"""

from __future__ import annotations

import serial

if "plotterd.machine.sim" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("plotterd.machine.sim")

from plotterd.machine.base import Timeouts  # noqa: E402
from plotterd.machine.plotter import (  # noqa: E402
    MachineOptions,
    Plotter,
    PlotterStatus,
    PortInfo,
    list_ports,
)
from plotterd.machine.stream import StreamControl, StreamResult, stream  # noqa: E402

__all__ = ["stream", "StreamControl", "StreamResult", "Timeouts", "Plotter", "PlotterStatus",
           "MachineOptions", "PortInfo", "list_ports"]
