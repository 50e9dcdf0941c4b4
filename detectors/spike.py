"""Spike: one interval implausibly high for this meter — a meter or head-end error.

An interval above `spike_factor` times the meter's own peak (and at least `MIN_SPIKE_RATE`),
or above the class's physical maximum flow, that is alone: the intervals before and after it
are not burst-sized. (Two such intervals in a row are a burst, not a spike, and so is the
last hour of a burst.) The flag is raised at the interval after the spike, which is when it
is known to stand alone. A read that arrives late, after newer ones, is judged on its own by
`late` (its neighbours have already been seen).

>>> from detectors.base import Interval, MeterContext
>>> from detectors.profile import MeterProfile
>>> detector, profile, ctx = Spike(), MeterProfile(), MeterContext()
>>> for h in range(24 * 8):
...     iv = Interval((h + 1) * 3600, 3600, 30.0 if h % 24 == 7 else 1.0)
...     profile.learn(iv, ctx)
...     profile.observe_peak(iv)
>>> detector.update(Interval((24 * 8 + 1) * 3600, 3600, 2000.0), ctx, profile)  # not yet
()
>>> [f.kind for f in detector.update(Interval((24 * 8 + 2) * 3600, 3600, 1.0), ctx, profile)]
['spike']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from detectors.base import NOTHING, Detector, Facts, Finding, Interval, MeterContext
from detectors.profile import MeterProfile

MIN_SPIKE_RATE = 60.0  # gal/h: below this nothing is implausible, however quiet the meter
WARMUP_DAYS = 7.0  # a week of history shows the meter's regular heavy use


class Spike(Detector):
    """Flags a lone interval far above the meter's peak or its physical maximum."""

    kinds: ClassVar[tuple[str, ...]] = ("spike",)

    def __init__(self) -> None:
        self.suspicious = False
        # start, end, value, bar, and the flow rate of the interval before it
        self._pending: tuple[int, int, float, float, float] | None = None
        self._previous = 0.0  # flow rate of the interval before the current one (gal/h)

    def is_spike(
        self,
        interval: Interval,
        context: MeterContext,
        profile: MeterProfile,
        at: Facts | None = None,
    ) -> float:
        """The bar the interval clears (0 when it clears none): the class's physical maximum,
        or `spike_factor` times the meter's peak or its recent heavy flow at that hour."""
        if at is None:
            at = Facts(interval, context)
        rate = at.rate
        limits = at.limits
        if rate > limits.max_rate:
            return limits.max_rate
        if rate < MIN_SPIKE_RATE or profile.days < WARMUP_DAYS:
            return 0.0  # below every bar (none is under MIN_SPIKE_RATE), or too early to say
        habitual = profile.habitual_flow(at.hour)
        bar = max(MIN_SPIKE_RATE, limits.spike_factor * max(profile.peak, habitual))
        return bar if rate >= bar else 0.0

    def update(
        self,
        interval: Interval,
        context: MeterContext,
        profile: MeterProfile,
        at: Facts | None = None,
    ) -> Sequence[Finding]:
        if at is None:
            at = Facts(interval, context)
        rate = at.rate
        found: Sequence[Finding] = NOTHING
        pending = self._pending
        if pending is not None:
            self._pending = None
            limits = at.limits
            burst_bar = max(limits.burst_min_rate, limits.burst_peak_factor * profile.peak)
            start, end, value, bar, before = pending
            if rate < burst_bar and before < burst_bar:
                found = [self._finding(start, end, value, bar, profile)]
        # flow under MIN_SPIKE_RATE and the class's maximum clears no bar (see `is_spike`)
        bar = (
            self.is_spike(interval, context, profile, at)
            if rate >= MIN_SPIKE_RATE or rate > at.limits.max_rate
            else 0.0
        )
        if bar:
            start = interval.ts - interval.seconds
            self._pending = (start, interval.ts, interval.value, bar, self._previous)
        self._previous = rate
        self.suspicious = self._pending is not None
        return found

    def late(
        self, interval: Interval, context: MeterContext, profile: MeterProfile
    ) -> Finding | None:
        """Judge a read that arrived after newer ones: a spike if it clears the bar."""
        bar = self.is_spike(interval, context, profile)
        if not bar:
            return None
        return self._finding(
            interval.ts - interval.seconds, interval.ts, interval.value, bar, profile
        )

    @staticmethod
    def _finding(start: int, end: int, value: float, bar: float, profile: MeterProfile) -> Finding:
        return Finding(
            kind="spike",
            started_at=start,
            ended_at=end,
            score=min(1.0, 0.6 + value / (bar * 10)),
            severity="medium",
            evidence=(
                f"one interval recorded {value:,.1f} gal — "
                f"{value / max(profile.peak * (end - start) / 3600, 0.1):,.0f} times this "
                "meter's usual peak — and the intervals around it were normal: a meter or "
                "head-end error, not water used; estimate the interval before billing"
            ),
            details={"value": value, "usual_peak": round(profile.peak, 1)},
        )

    def __getstate__(self) -> tuple[Any, ...]:
        return (self._pending, self._previous)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._pending, self._previous = state
        self.suspicious = self._pending is not None
