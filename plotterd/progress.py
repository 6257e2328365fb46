"""Progress reporting shared by long-running stages.

Every long-running call takes an optional ``progress`` callable receiving a
:class:`Progress`. The CLI turns it into a progress bar, the daemon into the job
record. A callback may raise :class:`Cancelled` to stop the work cleanly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    stage: str  # "optimise", "vectorise", "plot", ...
    done: float  # units completed (iterations, lines, ...)
    total: float  # units in all
    elapsed_s: float = 0.0
    eta_s: float | None = None
    info: dict[str, Any] = field(default_factory=dict)  # e.g. {"loss": 0.12}

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


ProgressCallback = Callable[[Progress], None]


class Cancelled(Exception):
    """Raised by a progress callback (or a control object) to stop work cleanly."""
