"""Burst: very high flow for hours — a broken pipe or service line.

Flow far above what this meter passes at that hour (see `burst_bar`), for at least two
hours and two intervals (one long register interval after a late read is not two hours of
flow). Once started, the burst holds while flow stays above `HOLD_SHARE` of the bar it
started against, so that one slightly lower hour does not split it in two (and leave its
last hour looking like a spike). The first high interval is held back from the profile
(`suspicious`), so that a burst never raises the peak it is measured against.

>>> from detectors.base import Interval, MeterContext
>>> from detectors.profile import MeterProfile, slot_of
>>> detector, profile, ctx = Burst(), MeterProfile(), MeterContext()
>>> for h in range(24 * 8):
...     iv = Interval((h + 1) * 3600, 3600, 20.0 if h % 24 == 7 else 1.0)
...     profile.learn(iv, ctx)
...     profile.observe_peak(iv)
>>> [bool(detector.update(Interval((24 * 8 + 1 + h) * 3600, 3600, 300.0), ctx, profile))
...  for h in range(3)]
[False, True, True]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from detectors.base import NOTHING, Detector, Facts, Finding, Interval, MeterContext, clamp01
from detectors.profile import MeterProfile

MIN_BURST_S = 2 * 3600
MIN_INTERVALS = 2
HOLD_SHARE = 0.5  # a started burst holds while flow stays above this share of its bar
SLOT_SPREADS = 8.0
# At an hour with heavy flow of its own the hour-of-week bar needs fewer spreads: the spread
# there already includes the heavy runs.
HEAVY_HOUR_SPREADS = 6.0
SPREAD_FLOOR = 0.25
# The hour-of-week bar is for hours that never see heavy flow. Where the meter has recently
# had heavy flow at this hour of the day (on any day of the week, even in runs kept out of the
# profile) it is measured against that flow instead: a sprinkler that runs on a new day of the
# week, or an irrigation controller's every run after its first, is not a burst.
HABITUAL_OF_PEAK = 0.5
MIN_SLOT_OBSERVATIONS = 5
# Sustained: flow far above what this hour of the week passes (`SLOT_SPREADS` spreads, at
# least the class floor) for this long is a burst even below the meter's peak. The peak
# guards against heavy use that is a habit (a sprinkler, an irrigation controller), and those
# run an hour or three at their own hours; a broken pipe runs until someone shuts it off.
# (the class's `burst_sustained_hours`, and at least this many intervals)
SUSTAINED_INTERVALS = 3
WARMUP_DAYS = 7.0  # a week of history shows the meter's regular heavy use (irrigation days)


def sustained_bar(
    interval: Interval, context: MeterContext, profile: MeterProfile, at: Facts | None = None
) -> float:
    """The flow above which an interval counts towards a sustained burst: `SLOT_SPREADS`
    spreads above this hour of the week's mean, and at least the class's floor."""
    if at is None:
        at = Facts(interval, context)
    limits = at.limits
    slot = at.slot
    if profile.observations(slot) < MIN_SLOT_OBSERVATIONS or math.isinf(
        limits.burst_sustained_hours
    ):
        return math.inf
    # (not the habitual heavy flow: the run's own first hours, kept out of the means, are
    # noted there and would raise the bar against the rest of it)
    mean = profile.mean_at(slot)
    spread = max(profile.std_at(slot), SPREAD_FLOOR * mean)
    return max(limits.burst_min_rate, mean + SLOT_SPREADS * spread)


def burst_bar(
    interval: Interval, context: MeterContext, profile: MeterProfile, at: Facts | None = None
) -> float:
    """The flow above which this interval is burst-sized: at least the class's floor, and
    either `burst_peak_factor` times the meter's peak, or `SLOT_SPREADS` standard deviations
    above what the meter passes at that hour of the week — heavy flow at an hour it never
    comes is the burst's signature, even below the meter's peak (set by its sprinkler); at an
    hour that has recently seen heavy flow, `burst_peak_factor` times that flow."""
    if at is None:
        at = Facts(interval, context)
    limits = at.limits
    slot = at.slot
    habitual = profile.habitual_flow(slot % 24)
    heavy_hour = habitual > 0 and habitual >= HABITUAL_OF_PEAK * profile.peak
    bar = limits.burst_peak_factor * (max(profile.peak, habitual) if heavy_hour else profile.peak)
    if profile.observations(slot) >= MIN_SLOT_OBSERVATIONS:
        mean = profile.mean_at(slot)
        # an EW spread can be tiny on a smooth meter: never less than a share of the mean
        spread = max(profile.std_at(slot), SPREAD_FLOOR * mean)
        spreads = HEAVY_HOUR_SPREADS if heavy_hour else SLOT_SPREADS
        # below the peak bar, but never below the meter's own peak: a burst is flow beyond
        # anything this meter normally passes
        bar = min(bar, max(mean + spreads * spread, profile.peak))
    return max(limits.burst_min_rate, bar)


class Burst(Detector):
    """Flags sustained flow far above anything this meter normally passes."""

    kinds: ClassVar[tuple[str, ...]] = ("burst",)

    def __init__(self) -> None:
        self.suspicious = False
        self._since: int | None = None
        self._volume = 0.0
        self._highest = 0.0
        self._threshold = 0.0
        self._intervals = 0
        self._lowest = 0.0
        self._sustained = False  # the run started below the level bar: it must last
        self._confirmed = False

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
        sustained = self._sustained
        if self._since is None:
            floor = at.limits.burst_min_rate
            # neither bar is ever below the class's floor: under it (most intervals), no bar
            # need be worked out
            if rate < floor:
                threshold = floor
            else:
                threshold = burst_bar(interval, context, profile, at)
                if rate < threshold:
                    bar = sustained_bar(interval, context, profile, at)
                    if rate >= bar:
                        threshold, sustained = bar, True
        elif self._sustained and not self._confirmed:
            # every hour of a sustained run must stand out against its own hour of the week
            threshold = sustained_bar(interval, context, profile, at)
        else:  # the bar the burst was first measured against, with some hold
            threshold = self._threshold * (HOLD_SHARE if self._intervals >= 2 else 1.0)
        if rate >= threshold and profile.days >= WARMUP_DAYS:
            if self._since is None:
                self._since = interval.ts - interval.seconds
                self._volume, self._highest, self._threshold = 0.0, 0.0, threshold
                self._intervals = 0
                self._sustained, self._confirmed = sustained, False
            self._volume += interval.value
            self._highest = max(self._highest, rate)
            self._lowest = min(self._lowest, rate) if self._intervals else rate
            self._intervals += 1
        else:
            self._since = None
        # One heavy interval that merely stands out at its hour (a long shower, a load of
        # laundry) is learned like any other, or the hour's spread would never see it and
        # every such interval would look like the start of a burst; from the second on, the
        # run is kept out of the profile.
        self.suspicious = self._since is not None and (not self._sustained or self._intervals > 1)
        long_s, least = (
            (
                at.limits.burst_sustained_hours * 3600,
                SUSTAINED_INTERVALS,
            )
            if self._sustained
            else (MIN_BURST_S, MIN_INTERVALS)
        )
        if self._since is None or interval.ts - self._since < long_s or self._intervals < least:
            return NOTHING
        self._confirmed = True
        hours = (interval.ts - self._since) / 3600.0
        return [
            Finding(
                kind="burst",
                started_at=self._since,
                score=clamp01(0.6 + 0.1 * hours + rate / 5000.0),
                severity="critical",
                evidence=(
                    f"very high flow for {hours:,.1f} hours: up to {self._highest:,.0f} gal/h, "
                    f"{self._volume:,.0f} gal in all, where this meter's usual peak is "
                    f"{profile.peak:,.0f} gal/h; a burst pipe or service line is likely — shut "
                    "the main valve and check"
                ),
                details={
                    "highest_rate": round(self._highest, 1),
                    "lowest_rate": round(self._lowest, 1),
                    "volume": round(self._volume, 1),
                    "usual_peak": round(profile.peak, 1),
                    "hours": round(hours, 2),
                },
            )
        ]

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self._since,
            self._volume,
            self._highest,
            self._threshold,
            self._intervals,
            self._lowest,
            self._sustained,
            self._confirmed,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (
            self._since,
            self._volume,
            self._highest,
            self._threshold,
            self._intervals,
            self._lowest,
            self._sustained,
            self._confirmed,
        ) = state
        self.suspicious = self._since is not None
