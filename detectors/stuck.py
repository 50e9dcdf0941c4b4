"""Stuck reading: the same non-zero value, interval after interval, where use varies.

Real consumption varies from one interval to the next; a head-end or meter that repeats the
last value it had is stuck. A run of identical non-zero values counts once it lasts
`MIN_HOURS` and spans hours in which this meter's use normally varies (its profile's spread
averages at least `MIN_SPREAD`). A leak in a still house repeats its rate only through the
quiet hours, and a register that stops moving is reported by the stopped-meter detector.

>>> from detectors.base import Interval, MeterContext
>>> from detectors.profile import MeterProfile
>>> detector, profile, ctx = StuckReading(), MeterProfile(), MeterContext()
>>> for h in range(24 * 5):
...     profile.learn(Interval((h + 1) * 3600, 3600, [0.0, 3.0, 9.0, 1.0][(h + h // 24) % 4]),
...                   ctx)
>>> found = [detector.update(Interval((120 + h + 1) * 3600, 3600, 4.2), ctx, profile)
...          for h in range(14)]
>>> [f.kind for f in found[-1]]
['stuck_reading']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from detectors.base import NOTHING, Detector, Facts, Finding, Interval, MeterContext
from detectors.profile import MeterProfile

MIN_HOURS = 12.0
MIN_INTERVALS = 6  # a single long interval (a register read after a gap) is not a repeat
MIN_SPREAD = 0.5  # gal/h: mean standard deviation of the profile over the run
BUSY_SHARE = 0.5


class StuckReading(Detector):
    """Flags identical non-zero values repeated where use normally varies."""

    kinds: ClassVar[tuple[str, ...]] = ("stuck_reading",)

    def __init__(self) -> None:
        self.suspicious = False
        self._value = 0.0
        self._since: int | None = None
        self._count = 0
        self._spread = 0.0  # sum of the profile's standard deviations over the run
        self._busy = 0  # intervals of the run at hours when the meter is usually running

    def update(
        self,
        interval: Interval,
        context: MeterContext,
        profile: MeterProfile,
        at: Facts | None = None,
    ) -> Sequence[Finding]:
        if at is None:
            at = Facts(interval, context)
        spread = profile.std_at(at.slot)
        if interval.value > 0.05 and interval.value == self._value and self._since is not None:
            self._count += 1
            self._spread += spread
            self._busy += profile.on_share(at.hour) >= BUSY_SHARE
        else:
            # a new value starts a run of one, shorter than MIN_INTERVALS: nothing to report
            # (the common case)
            self._value, self._since, self._count = interval.value, at.start, 1
            self._spread, self._busy = spread, 0
            self.suspicious = False
            return NOTHING
        hours = (interval.ts - self._since) / 3600.0
        # Repeating a value through an hour when use normally varies is already suspicious:
        # it holds back a leak that the same repeats would seem to show at night. (A real
        # leak's steady night-time flow starts with the quiet hours, not before them.)
        self.suspicious = self._count >= 3 and self._busy >= 1 and interval.value > 0.05
        if (
            hours < MIN_HOURS
            or self._count < MIN_INTERVALS
            or self._spread / self._count < MIN_SPREAD
            or profile.days < 2
        ):
            return NOTHING
        return [
            Finding(
                kind="stuck_reading",
                started_at=self._since,
                score=min(1.0, 0.6 + hours / 100),
                severity="medium",
                evidence=(
                    f"the same value, {self._value:,.1f} gal, was reported in {self._count} "
                    f"intervals in a row ({hours:,.0f} hours) where this meter's use normally "
                    "varies: the meter or head-end is repeating a stale reading; these "
                    "intervals need estimating"
                ),
                details={"value": self._value, "intervals": self._count, "hours": round(hours, 2)},
            )
        ]

    def __getstate__(self) -> tuple[Any, ...]:
        return (self._value, self._since, self._count, self._spread, self._busy)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._value, self._since, self._count, self._spread, self._busy = state
        self.suspicious = False
