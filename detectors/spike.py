"""Spike: one interval implausibly high for this meter — a meter or head-end error.

An interval above `spike_factor` times the meter's own peak (and at least `MIN_SPIKE_RATE`),
or above the class's physical maximum flow, that is alone: the next interval is back to
normal. (Two such intervals in a row are a burst, not a spike.) The flag is raised at the
interval after the spike, which is when it is known to stand alone.

>>> from detectors.base import Interval, MeterContext
>>> from detectors.profile import MeterProfile
>>> detector, profile, ctx = Spike(), MeterProfile(), MeterContext()
>>> for h in range(24 * 8):
...     iv = Interval((h + 1) * 3600, 3600, 30.0 if h % 24 == 7 else 1.0)
...     profile.learn(iv, ctx)
...     profile.observe_peak(iv)
>>> detector.update(Interval((24 * 8 + 1) * 3600, 3600, 2000.0), ctx, profile)
[]
>>> [f.kind for f in detector.update(Interval((24 * 8 + 2) * 3600, 3600, 1.0), ctx, profile)]
['spike']
"""

from __future__ import annotations

from typing import Any, ClassVar

from detectors.base import Detector, Finding, Interval, MeterContext
from detectors.config import thresholds_for
from detectors.profile import MeterProfile

MIN_SPIKE_RATE = 60.0  # gal/h: below this nothing is implausible, however quiet the meter
WARMUP_DAYS = 7.0  # a week of history shows the meter's regular heavy use


class Spike(Detector):
    """Flags a lone interval far above the meter's peak or its physical maximum."""

    kinds: ClassVar[tuple[str, ...]] = ("spike",)

    def __init__(self) -> None:
        self.suspicious = False
        self._pending: tuple[int, int, float, float] | None = None  # start, end, value, bar

    def is_spike(self, rate: float, context: MeterContext, profile: MeterProfile) -> float:
        """The bar `rate` clears (0 when it clears none)."""
        limits = thresholds_for(context.customer_class)
        if rate > limits.max_rate:
            return limits.max_rate
        if profile.days < WARMUP_DAYS:
            return 0.0
        bar = max(MIN_SPIKE_RATE, limits.spike_factor * profile.peak)
        return bar if rate >= bar else 0.0

    def update(
        self, interval: Interval, context: MeterContext, profile: MeterProfile
    ) -> list[Finding]:
        rate = interval.rate
        found: list[Finding] = []
        pending = self._pending
        if pending is not None:
            self._pending = None
            limits = thresholds_for(context.customer_class)
            burst_bar = max(limits.burst_min_rate, limits.burst_peak_factor * profile.peak)
            if rate < burst_bar:
                start, end, value, bar = pending
                found.append(
                    Finding(
                        kind="spike",
                        started_at=start,
                        ended_at=end,
                        score=min(1.0, 0.6 + value / (bar * 10)),
                        severity="medium",
                        evidence=(
                            f"one interval recorded {value:,.1f} gal — "
                            f"{value / max(profile.peak * (end - start) / 3600, 0.1):,.0f} times "
                            "this meter's usual peak — and the next was back to normal: a "
                            "meter or head-end error, not water used; estimate the interval "
                            "before billing"
                        ),
                        details={"value": value, "usual_peak": round(profile.peak, 1)},
                    )
                )
        bar = self.is_spike(rate, context, profile)
        if bar:
            self._pending = (interval.ts - interval.seconds, interval.ts, interval.value, bar)
        self.suspicious = self._pending is not None
        return found

    def __getstate__(self) -> tuple[Any, ...]:
        return (self._pending,)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self._pending,) = state
        self.suspicious = self._pending is not None
