"""Seeded, repeatable fault injection for the simulated plotters.

Syntax (the ``faults=`` query of a ``sim://`` URL, comma separated)::

    kind@N[:arg]     one-shot fault at the N-th line the firmware receives (1-based, counted
                     since the simulator was created, so a fault never fires twice)
    slow[:max_s]     every response is delayed by a seeded random 0..max_s seconds

Kinds: drop_ok, garble, corrupt, error (arg: GRBL error code), resend, resend_loop,
disconnect, unplug, reset, silence, halt, noise (arg: lines), nan_status, mute_status (arg:
seconds), slow. See docs/machine.md.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LINE_FAULTS = (
    "drop_ok",  # the ok for that line is never sent (the line is executed)
    "garble",  # the response to that line is corrupted on the way out
    "corrupt",  # one byte of that line is corrupted on the way in
    "error",  # GRBL answers error:<arg> (default 20) and does not execute the line
    "halt",  # Marlin: "Error:Printer halted. kill() called!" then nothing until a reset
    "resend",  # Marlin asks for that line again (as after line noise)
    "resend_loop",  # Marlin asks for that line again, every time, forever
    "disconnect",  # the device disappears (I/O raises SerialException); reopening works
    "unplug",  # the device disappears and never comes back
    "reset",  # the board resets (banner / "start"); buffered lines are lost
    "silence",  # the board stops answering anything until it is reset (reopen / DTR)
    "noise",  # <arg> lines (default 1) of seeded random bytes go out before that line's answer
    "nan_status",  # GRBL: the next status report gives the position as nan
    "mute_status",  # GRBL: no status reports for <arg> s (firmware time, default 2); oks flow
)
GLOBAL_FAULTS = ("slow",)


@dataclass
class Fault:
    kind: str
    at: int | None = None
    arg: float | None = None
    fired: bool = False


def parse_faults(spec: str) -> list[Fault]:
    """Parse ``drop_ok@120,corrupt@300,slow:0.05``. Raises ValueError naming the bad item."""
    faults: list[Fault] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        head, _, arg_s = item.partition(":")
        kind, _, at_s = head.partition("@")
        kind = kind.strip().lower()
        arg = None
        if arg_s:
            try:
                arg = float(arg_s)
            except ValueError:
                raise ValueError(f"fault {item!r}: argument {arg_s!r} is not a number") from None
        if kind in GLOBAL_FAULTS:
            if at_s:
                raise ValueError(f"fault {item!r}: {kind} applies to every line, no @N")
            faults.append(Fault(kind, None, arg))
            continue
        if kind not in LINE_FAULTS:
            known = ", ".join(LINE_FAULTS + GLOBAL_FAULTS)
            raise ValueError(f"fault {item!r}: unknown kind {kind!r} (known: {known})")
        try:
            at = int(at_s)
        except ValueError:
            raise ValueError(f"fault {item!r}: expected {kind}@<line number>") from None
        if at < 1:
            raise ValueError(f"fault {item!r}: line numbers start at 1")
        faults.append(Fault(kind, at, arg))
    return faults


class FaultPlan:
    """The faults of one simulator and the seeded random source they draw from."""

    def __init__(self, faults: list[Fault], seed: int = 0):
        self.faults = faults
        self.rng = random.Random(seed)
        self.fired: list[tuple[str, int | None]] = []
        slow = [f for f in faults if f.kind == "slow"]
        self.slow_max = (slow[0].arg if slow[0].arg is not None else 0.05) if slow else 0.0

    def take(self, kind: str, line_no: int) -> Fault | None:
        """The unfired fault of ``kind`` at ``line_no`` (marked fired), or None."""
        for f in self.faults:
            if f.kind == kind and f.at == line_no and not f.fired:
                f.fired = True
                self.fired.append((kind, line_no))
                return f
        return None

    def delay(self) -> float:
        return self.rng.uniform(0.0, self.slow_max) if self.slow_max > 0 else 0.0

    def noise_line(self) -> str:
        """3 to 24 seeded random bytes, none an end of line, the first outside ASCII (no
        firmware sends it), as the host's latin-1 reading sees them."""
        n = self.rng.randint(2, 23)
        body = bytes(self.rng.choice([b for b in range(256) if b not in (10, 13)])
                     for _ in range(n))
        return (bytes([self.rng.randint(0x80, 0xFF)]) + body).decode("latin-1")

    def corrupt(self, line: bytes, bad: bytes) -> bytes:
        """Replace one seeded-chosen byte of ``line`` with one of ``bad``."""
        if not line:
            return line
        i = self.rng.randrange(len(line))
        b = bad[self.rng.randrange(len(bad))]
        return line[:i] + bytes([b]) + line[i + 1:]
