"""Register-to-interval conversion, with rollover and reset detection.

Register meters report the cumulative reading of their dial; the interval consumption is the
difference between consecutive registers. A register that wraps past its capacity (999,999 →
000,120) is a rollover, not a huge negative reading: the consumption is what was used up to the
capacity plus what was used after it. A register that goes back by more than reverse flow could
explain, without being near the capacity, was reset or replaced: its interval is unknown.

>>> conv = RegisterConverter()
>>> conv.convert(0, 999_800.0)
(None, None)
>>> delta, finding = conv.convert(3600, 999_950.0)
>>> delta, finding
(150.0, None)
>>> delta, finding = conv.convert(7200, 120.0)
>>> delta, finding.kind, finding.details["capacity"]
(170.0, 'rollover', 1000000)
"""

from __future__ import annotations

from typing import Any

from detectors.base import Finding

# Where a register must be, as a fraction of its capacity, for a drop to be read as a wrap.
WRAP_FROM = 0.9
WRAP_TO = 0.1
# A drop of at most this fraction of the capacity is the meter running backwards (reverse
# flow), which the reverse-flow detector reports.
REVERSE_DROP = 0.001


def register_capacity(largest_seen: float) -> int:
    """The dial's capacity, from the number of integer digits of the largest reading seen."""
    return 10 ** max(1, len(str(int(abs(largest_seen)))))


class RegisterConverter:
    """Turns one meter's registers, in time order, into interval consumption."""

    __slots__ = ("largest", "last_register", "last_ts")

    def __init__(self) -> None:
        self.last_ts: int | None = None
        self.last_register = 0.0
        self.largest = 0.0

    def convert(self, ts: int, register: float) -> tuple[float | None, Finding | None]:
        """The consumption since the previous register (in the register's unit), and a
        `rollover` finding when the register wrapped or was reset."""
        previous, previous_ts = self.last_register, self.last_ts
        self.last_ts, self.last_register = ts, register
        self.largest = max(self.largest, register)
        if previous_ts is None:
            return None, None
        if register >= previous:
            return register - previous, None
        capacity = register_capacity(self.largest)
        drop = previous - register
        if previous >= WRAP_FROM * capacity and register <= WRAP_TO * capacity:
            used = capacity - previous + register
            return used, Finding(
                kind="rollover",
                started_at=previous_ts,
                ended_at=ts,
                score=1.0,
                severity="low",
                evidence=(
                    f"register wrapped past its capacity of {capacity:,}: from {previous:,.0f} "
                    f"to {register:,.0f}; {used:,.1f} used in the interval"
                ),
                details={"capacity": capacity, "from": previous, "to": register, "used": used},
            )
        if drop <= REVERSE_DROP * capacity:
            return register - previous, None
        return None, Finding(
            kind="rollover",
            started_at=previous_ts,
            ended_at=ts,
            score=1.0,
            severity="medium",
            evidence=(
                f"register went back from {previous:,.0f} to {register:,.0f} without reaching "
                f"its capacity of {capacity:,}: the register was reset or the meter replaced; "
                "the interval's consumption is unknown"
            ),
            details={"capacity": capacity, "from": previous, "to": register, "reset": True},
        )

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.last_ts, self.last_register, self.largest)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.last_ts, self.last_register, self.largest = state
