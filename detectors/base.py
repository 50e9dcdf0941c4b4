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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from detectors.config import THRESHOLDS, ClassThresholds, thresholds_for

if TYPE_CHECKING:
    from detectors.profile import MeterProfile

SEVERITIES = ("low", "medium", "high", "critical")
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def weekday_of(start: int, utc_offset_s: int) -> int:
    """Local day of the week of an interval starting at `start` (Monday = 0)."""
    return ((start + utc_offset_s) // 86_400 + EPOCH_WEEKDAY) % 7


def slot_of(start: int, utc_offset_s: int) -> int:
    """The profile slot of an interval starting at `start` (epoch seconds, UTC): its local
    hour, + 24 on a weekend."""
    local = start + utc_offset_s
    hour = (local // 3600) % 24
    weekend = (local // 86_400 + EPOCH_WEEKDAY) % 7 >= 5
    return hour + (24 if weekend else 0)


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


class Facts:
    """What the detectors work out from an interval's times and its meter's class: its start
    (epoch seconds), its local start (the utility's clock, as epoch seconds), the local hour,
    the profile slot (local hour, + 24 on a weekend: see `slot_of`), the flow rate
    (per hour) and the class's thresholds.

    The bank works them out once per interval and hands them to every detector and to the
    profile (eight detectors each working out the same slot and thresholds cost more than
    the tests themselves); a detector or profile called on its own makes its own.

    >>> at = Facts(Interval(8 * 3600, 3600, 5.0), MeterContext(utc_offset_s=-3600))
    >>> at.start, at.local_start, at.hour, at.slot, at.rate, at.limits.max_rate
    (25200, 21600, 6, 6, 5.0, 1200.0)
    """

    __slots__ = ("hour", "limits", "local_start", "rate", "slot", "start")

    def __init__(self, interval: Interval, context: MeterContext) -> None:
        start = interval.ts - interval.seconds
        local = start + context.utc_offset_s
        hour = (local // 3600) % 24
        self.start = start
        self.local_start = local
        self.hour = hour
        self.slot = slot_of(start, context.utc_offset_s)
        self.rate = interval.value * 3600.0 / interval.seconds
        # `thresholds_for`, without a call for the known classes
        self.limits: ClassThresholds = THRESHOLDS.get(context.customer_class) or thresholds_for(
            context.customer_class
        )

    def with_rate(self, interval: Interval) -> Facts:
        """The same facts for another value over the same interval (expected use taken off)."""
        other = Facts.__new__(Facts)
        other.start, other.local_start = self.start, self.local_start
        other.hour, other.slot, other.limits = self.hour, self.slot, self.limits
        other.rate = interval.value * 3600.0 / interval.seconds
        return other


class Detector(ABC):
    """One algorithm over one meter's intervals.

    `update` scores the interval against the meter's learned `profile` (which the bank
    updates afterwards, and only while nothing abnormal holds) and against the detector's own
    state, and returns the findings of the kinds in `kinds` that hold at this interval; a kind
    absent from the result does not hold (an open flag of that kind closes). Most intervals
    hold nothing: returning `NOTHING` then spares a list.
    """

    kinds: ClassVar[tuple[str, ...]]
    # Set by `update` when the interval looks abnormal even though no finding holds yet (the
    # first hour of a possible burst): the bank then keeps it out of the profile.
    suspicious: bool = False

    @abstractmethod
    def update(
        self,
        interval: Interval,
        context: MeterContext,
        profile: MeterProfile,
        at: Facts | None = None,
    ) -> Sequence[Finding]:
        """`at` is `Facts(interval, context)`, when the caller has it already (the bank)."""

    def explained(self, kind: str) -> None:  # noqa: B027  (most detectors keep no evidence)
        """Another finding explains this detector's `kind` away (a stuck reading explains the
        'leak' its repeated values look like): forget the evidence gathered for it."""

    def held_back(self, kind: str) -> None:
        """Another detector's suspicion holds this detector's `kind` back (a run of repeated
        values may be a stuck register): by default its evidence goes as if explained."""
        self.explained(kind)

    @abstractmethod
    def __getstate__(self) -> tuple[Any, ...]:
        """The detector's whole state as a tuple of plain immutable values."""

    @abstractmethod
    def __setstate__(self, state: tuple[Any, ...]) -> None: ...


NOTHING: tuple[Finding, ...] = ()  # no finding holds (shared: an empty tuple cannot change)


def clamp01(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value
