"""The detector interface: pure per-meter models with no I/O and no engine.

A detector sees one meter's intervals in time order and says, at each interval, which of its
conditions hold. The dataflow turns that sequence into flags (opened once, extended while the
condition holds, closed when it clears: see `FlagTracker`); `meterwatch score` runs the same
detectors offline over a file.

Conventions, as in River: constructor arguments are stored under their own names; every
detector pickles (Bytewax snapshots it), and its pickled state is a small tuple of plain
values, because a utility has a million meters and the dataflow snapshots the state of every
meter it touched each epoch. A detector scores an interval before it learns from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from detectors.profile import MeterProfile

SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(slots=True, frozen=True)
class Interval:
    """One interval of consumption as a detector sees it.

    `ts` is the end of the interval in epoch seconds (UTC); `seconds` its length; `value` the
    consumption over it in the commodity's base unit (gallons, or kWh), negative for reverse
    flow.
    """

    ts: int
    seconds: int
    value: float

    @property
    def rate(self) -> float:
        """Mean flow over the interval, per hour (gal/h or kW)."""
        return self.value * 3600.0 / self.seconds


@dataclass(slots=True, frozen=True)
class MeterContext:
    """What a detector may know about the meter and its account: the customer class, whether
    the account is active, the utility's offset from UTC at this interval (seconds: hours of
    the day are local hours), and whether the meter reports a register."""

    customer_class: str = "residential"
    active: bool = True
    utc_offset_s: int = 0
    register: bool = False


@dataclass(slots=True)
class Finding:
    """A condition that holds at the current interval.

    `started_at` is when the condition began (epoch seconds, data time); `score` in [0, 1]
    grows with the strength of the evidence; `evidence` is a sentence a billing clerk can read;
    `details` carries the numbers behind it. `ended_at` is set for a finding that is complete
    as soon as it is seen (a rollover, a single spike): its flag opens and closes at once.
    """

    kind: str
    started_at: int
    score: float
    severity: str
    evidence: str
    details: dict[str, Any] = field(default_factory=dict)
    ended_at: int | None = None


class Detector(ABC):
    """One algorithm over one meter's intervals.

    `update` scores the interval against the meter's learned `profile` (which the bank
    updates afterwards, and only while nothing abnormal holds) and against the detector's own
    state, and returns the findings of the kinds in `kinds` that hold at this interval; a kind
    absent from the result does not hold (an open flag of that kind closes).
    """

    kinds: ClassVar[tuple[str, ...]]
    # Set by `update` when the interval looks abnormal even though no finding holds yet (the
    # first hour of a possible burst): the bank then keeps it out of the profile.
    suspicious: bool = False

    @abstractmethod
    def update(
        self, interval: Interval, context: MeterContext, profile: MeterProfile
    ) -> list[Finding]: ...

    def explained(self, kind: str) -> None:  # noqa: B027  (most detectors keep no evidence)
        """Another finding explains this detector's `kind` away (a stuck reading explains the
        'leak' its repeated values look like): forget the evidence gathered for it."""

    @abstractmethod
    def __getstate__(self) -> tuple[Any, ...]:
        """The detector's whole state as a tuple of plain immutable values."""

    @abstractmethod
    def __setstate__(self, state: tuple[Any, ...]) -> None: ...


def clamp01(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value
