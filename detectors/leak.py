"""Continuous-flow leak: water that keeps running through the hours a meter is normally quiet.

Daytime use can keep a meter turning for many hours in a row, so "flow for N hours" alone
cries wolf. What a leak changes is the quiet hours: in most homes flow drops to (near) zero
for some hours every night, and a leak keeps it up. This detector learns, per meter and hour
of day, the usual flow (an exponentially weighted mean, not updated while a leak is running,
so that a long leak never becomes the new normal); an hour whose usual flow is below the
class's minimum flow is a quiet hour. It flags a leak when flow has not dropped below the
minimum flow since before `quiet_hours_needed` quiet hours, and for at least the class's
minimum span.

A meter with no quiet hour (a hotel, a hospital, a 24/7 plant) is never flagged by this rule.

>>> from detectors.base import Interval, MeterContext
>>> detector = ContinuousFlowLeak()
>>> ctx = MeterContext("residential")
>>> hour = 3600
>>> def day_of_use(day, extra=0.0):
...     found = []
...     for h in range(24):
...         use = (0.0 if h < 6 else 12.0) + extra
...         found = detector.update(Interval((day * 24 + h + 1) * hour, hour, use), ctx)
...     return found
>>> for day in range(3):
...     _ = day_of_use(day)
>>> day_of_use(3)
[]
>>> [(f.kind, f.details["leak_rate"]) for f in day_of_use(4, extra=2.0)]
[('leak', 2.0)]
"""

from __future__ import annotations

from typing import Any, ClassVar

from detectors.base import Detector, Finding, Interval, MeterContext, clamp01
from detectors.config import thresholds_for


class ContinuousFlowLeak(Detector):
    """Flags flow that does not drop during the meter's quiet hours.

    Parameters: `learn_rate` weighs each new interval into its hour's usual flow;
    `warmup_hours` of history are needed before a meter can be flagged;
    `quiet_hours_needed` is how many normally quiet hours must have had flow.
    """

    kinds: ClassVar[tuple[str, ...]] = ("leak",)

    def __init__(
        self, learn_rate: float = 0.15, warmup_hours: int = 48, quiet_hours_needed: float = 3.0
    ) -> None:
        self.learn_rate = learn_rate
        self.warmup_hours = warmup_hours
        self.quiet_hours_needed = quiet_hours_needed
        self._usual: tuple[float, ...] = (0.0,) * 24  # usual flow by hour of day (gal/h)
        self._learned_s = 0  # history learned (seconds)
        self._run_start: int | None = None
        self._run_low = 0.0  # lowest flow since the run began (gal/h)
        self._run_quiet_s = 0  # quiet-hour time with flow during the run (seconds)
        self._run_excess = 0.0  # volume above the usual flow during the run (gal)

    def update(self, interval: Interval, context: MeterContext) -> list[Finding]:
        limits = thresholds_for(context.customer_class)
        rate = interval.rate
        hour = ((interval.ts - interval.seconds) // 3600) % 24
        usual = self._usual[hour]
        quiet = usual < limits.leak_min_flow
        if rate >= limits.leak_min_flow:
            if self._run_start is None:
                self._run_start = interval.ts - interval.seconds
                self._run_low = rate
                self._run_quiet_s = 0
                self._run_excess = 0.0
            self._run_low = min(self._run_low, rate)
            if quiet:
                self._run_quiet_s += interval.seconds
            self._run_excess += max(0.0, rate - usual) * interval.seconds / 3600.0
        else:
            self._run_start = None

        finding = self._finding(interval.ts, limits.leak_min_hours)
        if finding is None:  # protect the model: a running leak is not learned as usual flow
            usuals = list(self._usual)
            usuals[hour] = usual + self.learn_rate * (rate - usual)
            self._usual = tuple(usuals)
            self._learned_s += interval.seconds
        return [finding] if finding is not None else []

    def _finding(self, now: int, min_hours: float) -> Finding | None:
        if self._run_start is None or self._learned_s < self.warmup_hours * 3600:
            return None
        hours = (now - self._run_start) / 3600.0
        quiet_hours = self._run_quiet_s / 3600.0
        if hours < min_hours or quiet_hours < self.quiet_hours_needed:
            return None
        leak_rate = self._run_low
        severity = (
            "critical"
            if leak_rate >= 50
            else "high"
            if leak_rate >= 10
            else "medium"
            if leak_rate >= 1
            else "low"
        )
        return Finding(
            kind="leak",
            started_at=self._run_start,
            score=clamp01(0.4 + 0.3 * quiet_hours / 6.0 + 0.3 * leak_rate / 10.0),
            severity=severity,
            evidence=(
                f"flow never dropped below {self._run_low:,.1f} gal/h for {hours:,.0f} hours, "
                f"including {quiet_hours:,.0f} hours when this meter is normally quiet "
                f"(near 0 gal/h); about {self._run_excess:,.0f} gal above its usual use so far"
            ),
            details={
                "leak_rate": round(leak_rate, 3),
                "hours": round(hours, 2),
                "quiet_hours": round(quiet_hours, 2),
                "volume_lost": round(self._run_excess, 1),
            },
        )

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self.learn_rate,
            self.warmup_hours,
            self.quiet_hours_needed,
            self._usual,
            self._learned_s,
            self._run_start,
            self._run_low,
            self._run_quiet_s,
            self._run_excess,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (
            self.learn_rate,
            self.warmup_hours,
            self.quiet_hours_needed,
            self._usual,
            self._learned_s,
            self._run_start,
            self._run_low,
            self._run_quiet_s,
            self._run_excess,
        ) = state
