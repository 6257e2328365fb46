"""Simulated plotters (GRBL 1.1, Marlin 2) that sit under pyserial as the ``sim://`` URL
handler, exactly where a real port sits:

    import plotterd.machine   # registers the handler
    port = serial.serial_for_url("sim://grbl?speed=instant&seed=1&faults=drop_ok@12")
    port.simulator.segments   # what was drawn (mm, machine coordinates)

See docs/machine.md for the URL options and the fault syntax.
"""

from __future__ import annotations

from plotterd.machine.sim.core import SimConfig, Simulator, parse_url
from plotterd.machine.sim.faults import Fault, parse_faults

__all__ = ["SimConfig", "Simulator", "parse_url", "Fault", "parse_faults", "make_simulator"]


def make_simulator(url_or_cfg: str | SimConfig) -> Simulator:
    """A simulator for a ``sim://`` URL (or a parsed config)."""
    cfg = parse_url(url_or_cfg) if isinstance(url_or_cfg, str) else url_or_cfg
    if cfg.firmware == "grbl":
        from plotterd.machine.sim.grbl import GrblSim

        return GrblSim(cfg)
    from plotterd.machine.sim.marlin import MarlinSim

    return MarlinSim(cfg)
