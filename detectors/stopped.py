"""Stopped meter (and stuck register): no consumption where the meter's history says there
should be some.

A run of intervals with (near) zero consumption on an active account, lasting the class's
`stopped_days`, during which the profile expects at least `stopped_min_volume`. A vacant home,
or a business closed for the weekend, expects nothing and is not flagged. On a register meter
the same run means the register is not moving: that is reported as `stuck_reading`.

>>> from detectors.base import Interval, MeterContext
>>> from detectors.profile import MeterProfile
>>> detector, profile, ctx = StoppedMeter(), MeterProfile(), MeterContext()
>>> for h in range(24 * 7):
...     profile.learn(Interval((h + 1) * 3600, 3600, 0.0 if h % 24 < 6 else 8.0), ctx)
>>> found = [detector.update(Interval((24 * 7 + h + 1) * 3600, 3600, 0.0), ctx, profile)
...          for h in range(48)]
>>> [f.kind for f in found[-1]]
['stopped_meter']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from detectors.base import NOTHING, Detector, Facts, Finding, Interval, MeterContext, clamp01
from detectors.profile import MeterProfile

ZERO = 0.05  # gal in an interval: below this the meter did not move
WARMUP_DAYS = 3.0


class StoppedMeter(Detector):
    """Flags a meter that stopped registering use (`stopped_meter`, or `stuck_reading` for a
    register that stopped moving)."""

    kinds: ClassVar[tuple[str, ...]] = ("stopped_meter", "stuck_reading")

    def __init__(self) -> None:
        self.suspicious = False
        self._since: int | None = None
        self._expected = 0.0  # volume the profile expected since the run began (gal)

    def update(
        self,
        interval: Interval,
        context: MeterContext,
        profile: MeterProfile,
        at: Facts | None = None,
    ) -> Sequence[Finding]:
        if abs(interval.value) >= ZERO or not context.active or profile.days < WARMUP_DAYS:
            self._since, self._expected = None, 0.0
            self.suspicious = False
            return NOTHING
        if at is None:
            at = Facts(interval, context)
        limits = at.limits
        start = at.start
        if self._since is None:
            self._since, self._expected = start, 0.0
        self._expected += profile.mean_at(at.slot) * interval.seconds / 3600.0
        days = (interval.ts - self._since) / 86_400
        # Keep a suspicious stretch of zeros out of the profile, so that it does not learn
        # that the meter is normally still.
        self.suspicious = days >= 0.25 and self._expected >= limits.stopped_min_volume / 4
        needed_days = limits.stuck_register_days if context.register else limits.stopped_days
        if days < needed_days or self._expected < limits.stopped_min_volume:
            return NOTHING
        kind = "stuck_reading" if context.register else "stopped_meter"
        what = (
            "the register has not moved"
            if context.register
            else "the meter has recorded no consumption"
        )
        return [
            Finding(
                kind=kind,
                started_at=self._since,
                score=clamp01(0.5 + days / 10 + self._expected / 1000),
                severity="high" if days >= 3 else "medium",
                evidence=(
                    f"{what} for {days:,.1f} days on an active account, where its history "
                    f"says it would have passed about {self._expected:,.0f} gal; check the "
                    "meter and its register before billing (an estimate may be needed)"
                ),
                details={"days": round(days, 2), "expected_volume": round(self._expected, 1)},
            )
        ]

    def __getstate__(self) -> tuple[Any, ...]:
        return (self._since, self._expected)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._since, self._expected = state
        self.suspicious = False
