"""How many CPU cores are free right now, for choosing the optimiser's threads.

On a lab machine the optimiser shares the cores with a plot stream, a browser or another
job. torch's threads spin-wait on each other, so two threads on a machine with one busy core
run slower than one (measured here: 10 iterations of the paper pipeline took 17.9 s with 2
threads and 8.1 s with 1 while another process kept one of 2 cores busy; 5.1 s and 6.4 s
quiet). Linux's /proc/stat gives the idle share over a short window; elsewhere, or when it
cannot be read, every core counts as free.
"""

from __future__ import annotations

import os
import time

__all__ = ["available_cores", "free_cores", "auto_threads"]


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])


def free_cores(window_s: float = 0.3) -> float:
    """Idle cores (fractional) over ``window_s``."""
    n = available_cores()
    a = _cpu_times()
    if a is None:
        return float(n)
    time.sleep(window_s)
    b = _cpu_times()
    if b is None or b[1] <= a[1]:
        return float(n)
    share = (b[0] - a[0]) / (b[1] - a[1])
    return max(0.0, min(1.0, share)) * (os.cpu_count() or n)


def auto_threads(window_s: float = 0.3) -> int:
    """Threads for the optimiser: the cores idle now (at least 1, at most those we may use)."""
    return max(1, min(available_cores(), int(free_cores(window_s) + 0.3)))
