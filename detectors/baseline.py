"""The industry's leak rule, as a yardstick: flow at or above 1 gal/h in every hour for 24
consecutive hours (the continuous-flow alert of AMI customer portals). `meterwatch bench
detect` measures meterwatch's detectors against it on the same data; it is not in the bank.

>>> from detectors.base import Interval, MeterContext
>>> from detectors.profile import MeterProfile
>>> rule, ctx, profile = TwentyFourHourRule(), MeterContext(), MeterProfile()
>>> found = [rule.update(Interval((h + 1) * 3600, 3600, 1.5), ctx, profile) for h in range(24)]
>>> found[22], [f.kind for f in found[23]]
([], ['leak'])
"""

from __future__ import annotations

from typing import Any, ClassVar

from detectors.base import Detector, Facts, Finding, Interval, MeterContext
from detectors.profile import MeterProfile


class TwentyFourHourRule(Detector):
    """Leak when every hour of the last `hours` had at least `min_rate` gal/h."""

    kinds: ClassVar[tuple[str, ...]] = ("leak",)

    def __init__(self, min_rate: float = 1.0, hours: float = 24.0) -> None:
        self.min_rate = min_rate
        self.hours = hours
        self._since: int | None = None

    def update(
        self,
        interval: Interval,
        context: MeterContext,
        profile: MeterProfile,
        at: Facts | None = None,
    ) -> list[Finding]:
        if interval.rate >= self.min_rate:
            if self._since is None:
                self._since = interval.ts - interval.seconds
        else:
            self._since = None
        if self._since is None or interval.ts - self._since < self.hours * 3600:
            return []
        return [
            Finding(
                kind="leak",
                started_at=self._since,
                score=1.0,
                severity="medium",
                evidence=f"flow of at least {self.min_rate} gal/h for {self.hours:.0f} hours",
            )
        ]

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.min_rate, self.hours, self._since)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.min_rate, self.hours, self._since = state
