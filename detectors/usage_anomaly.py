"""Usage anomaly: a day of use far above what this meter normally uses at those hours of the
week.

A household's hour-to-hour use is bursty (a shower, then nothing), so single hours say little;
a day's total says a lot. Through each local day the detector adds up the use of the meter's
non-quiet hours and what its profile expects for the same hours (the mean for that hour of a
working day or a weekend), and standardises the difference by the profile's spread (summed
variances, plus `OVERDISPERSION` of the expectation for the day-to-day swings the hourly
variances do not see). After `MIN_HOURS` counted hours a z-score above `anomaly_z` opens the
flag; it closes when a day ends back under `Z_CLEAR`. Quiet hours are the leak detector's.
While the day looks high the bank keeps it out of the profile, so that a week of doubled use
does not become the new normal.

>>> from detectors.base import Interval, MeterContext
>>> from detectors.profile import MeterProfile
>>> detector, profile, ctx = UsageAnomaly(), MeterProfile(), MeterContext()
>>> def day(d, factor=1.0):
...     found = []
...     for h in range(24):
...         use = (0.0 if h < 6 else 6.0 + (h * 7 + d * 3) % 5) * factor
...         iv = Interval((d * 24 + h + 1) * 3600, 3600, use)
...         found = detector.update(iv, ctx, profile) or found
...         if not detector.suspicious:
...             profile.learn(iv, ctx)
...     return found
>>> any(day(d) for d in range(14))
False
>>> [f.kind for f in day(14, factor=3.0)]
['usage_anomaly']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from detectors.base import NOTHING, Detector, Facts, Finding, Interval, MeterContext, clamp01
from detectors.profile import MeterProfile, weekday_of

MIN_OBSERVATIONS = 5  # per profile slot before it is trusted
MIN_HOURS = 10.0  # counted hours in a day before it can be judged
OVERDISPERSION = 0.15  # extra spread, as a share of the day's expected use
Z_CLEAR = 2.0
# A rise that lasts (guests for a few days, a hose left running in the garden) is seen in the
# days together: two days in a row, each raised, whose z-scores combined as independent
# evidence (Stouffer's sum over the square root of the number of days) reach Z_TWO_DAYS. On
# 1,390 clean simulated meters (30-45 days each) the best two raised days in a row combined
# to 4.2; a pair of days at 2-4 times the use to 4-13.
Z_RAISED = 2.0
Z_TWO_DAYS = 5.0
OUTLIER_PEAKS = 3.0  # an interval above this many peaks is a burst's or a spike's
EXCESS_CAP = 5.0  # spreads (or usual volumes) of excess one interval may add to a day
Z_SUSPICIOUS = 2.5


class UsageAnomaly(Detector):
    """Flags days of use far above the meter's hour-of-week profile."""

    kinds: ClassVar[tuple[str, ...]] = ("usage_anomaly",)

    def __init__(self) -> None:
        self.suspicious = False
        self._day = -1  # local day being added up (days since the epoch)
        self._used = 0.0  # gal used in the day's counted hours
        self._usual = 0.0  # gal the profile expects for them
        self._variance = 0.0  # summed variance of that expectation (gal²)
        self._hours = 0.0  # counted hours
        self._since: int | None = None  # start of the flagged rise
        self._first: int | None = None  # start of the day's first counted interval
        self._z = 0.0
        self._weekday = 0
        self._hourly = 0.0  # what the hourly means alone expect (gal), to learn the weekday
        self._counted = 0.0  # the day's use with each interval's excess capped (gal)
        self._yesterday_z = 0.0
        self._yesterday_first: int | None = None
        self._borrowed = False  # the day is judged (partly) by the other type of day's hours
        self._explained_day = False  # another finding explained some of the day's intervals
        # the current interval's share of the day's sums, until the bank has seen the other
        # findings (not part of the state: the bank calls `explained` within the same update)
        self._last: tuple[float, ...] | None = None

    def update(
        self,
        interval: Interval,
        context: MeterContext,
        profile: MeterProfile,
        at: Facts | None = None,
    ) -> Sequence[Finding]:
        if at is None:
            at = Facts(interval, context)
        limits = at.limits
        start = at.start
        day = at.local_start // 86_400
        if day != self._day:
            self._yesterday_z = self._z if self._hours >= MIN_HOURS else 0.0
            self._yesterday_first = self._first
            if self._hours >= MIN_HOURS:
                if not self._borrowed and not self._explained_day:
                    # Every day teaches how its day of the week runs, flagged or not: a weekly
                    # laundry or watering day is flagged once or twice, then expected. (The
                    # hourly profile stays protected, so a lasting rise is still a rise.)
                    profile.learn_day(self._weekday, self._used, self._hourly)
                if self._since is not None and self._z < Z_CLEAR:
                    self._since = None
            self._day, self._used, self._usual, self._variance, self._hours = (
                day,
                0.0,
                0.0,
                0.0,
                0.0,
            )
            self._first, self._z, self._hourly, self._counted = None, 0.0, 0.0, 0.0
            self._borrowed = self._explained_day = False
            self._weekday = weekday_of(start, context.utc_offset_s)
        self._last = None
        slot = at.slot
        quiet = profile.on_share(at.hour) <= limits.quiet_share
        # A burst-sized interval is the burst or spike detector's; it would swamp the day.
        outlier = at.rate >= max(limits.burst_min_rate, OUTLIER_PEAKS * profile.peak)
        own = profile.observations(slot) >= MIN_OBSERVATIONS
        if not own:
            # a young profile has seen few weekends: judge by the same hour of the other
            # type of day until this one is known
            slot = slot + 24 if slot < 24 else slot - 24
            # The weekday's factor compares the day with its own type of day; against the
            # other type (a business's short Saturday against a full working day) it means
            # nothing, and a factor learned that way would shrink the expectation wrongly
            # once the weekend hours are known. Such a day neither uses nor teaches it.
            self._borrowed = True
        if not quiet and not outlier and profile.observations(slot) >= MIN_OBSERVATIONS:
            hours = interval.seconds / 3600.0
            if self._first is None:
                self._first = start
            factor = 1.0 if self._borrowed else profile.day_factor(self._weekday)
            usual = profile.mean_at(slot) * hours * factor
            spread = profile.std_at(slot) * hours * factor
            # One interval can add at most EXCESS_CAP spreads (or usual volumes) of excess: a
            # single long shower or a first watering is not a day of unusual use.
            excess = min(interval.value - usual, EXCESS_CAP * max(spread, usual, hours))
            added = (interval.value, usual + excess, profile.mean_at(slot) * hours, usual,
                     spread * spread, hours)  # fmt: skip
            self._add(added, 1.0)
            self._last = added
            if self._hours >= MIN_HOURS and self._since is None:
                if self._z >= limits.anomaly_z:
                    self._since = self._first
                elif (
                    min(self._z, self._yesterday_z) >= Z_RAISED
                    and (self._z + self._yesterday_z) / math.sqrt(2.0) >= Z_TWO_DAYS
                ):
                    self._since = self._yesterday_first or self._first
        self.suspicious = self._since is not None or self._z >= Z_SUSPICIOUS
        if self._since is None:
            return NOTHING
        ratio = self._used / self._usual if self._usual > 0 else float("inf")
        return [
            Finding(
                kind="usage_anomaly",
                started_at=self._since,
                score=clamp01(0.5 + 0.05 * (self._z - limits.anomaly_z)),
                severity="low",
                evidence=(
                    f"{self._used:,.0f} gal used today in the hours counted so far, against "
                    f"about {self._usual:,.0f} gal this meter usually uses at these hours of the "
                    f"week ({ratio:,.1f} times as much, z = {self._z:,.1f}); worth a look if the "
                    "customer did not expect it"
                ),
                details={
                    "used": round(self._used, 1),
                    "usual": round(self._usual, 1),
                    "z": round(self._z, 2),
                },
            )
        ]

    def _add(self, added: tuple[float, ...], sign: float) -> None:
        """Add an interval's share to the day (sign 1), or take it off again (sign -1)."""
        used, counted, hourly, usual, variance, hours = added
        self._used += sign * used
        self._counted += sign * counted
        self._hourly += sign * hourly
        self._usual += sign * usual
        self._variance += sign * variance
        self._hours += sign * hours
        day_spread = math.sqrt(max(0.0, self._variance) + (OVERDISPERSION * self._usual) ** 2 + 1.0)
        self._z = (self._counted - self._usual) / day_spread

    def explained(self, kind: str) -> None:
        self._since = None

    def discount(self) -> None:
        """A finding (a burst, a stopped or stuck meter, a leak) explains the interval just
        seen: it is not use, so it leaves the day's sums, and the day does not teach its
        weekday (a week after a stopped day, that weekday would look busy). A mere suspicion
        does not discount: one flush at night keeps the leak test suspicious all next day."""
        self._explained_day = True
        if self._last is not None:
            self._add(self._last, -1.0)
            self._last = None

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self._day,
            self._used,
            self._usual,
            self._variance,
            self._hours,
            self._since,
            self._first,
            self._z,
            self._weekday,
            self._hourly,
            self._counted,
            self._yesterday_z,
            self._yesterday_first,
            self._borrowed,
            self._explained_day,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (
            self._day,
            self._used,
            self._usual,
            self._variance,
            self._hours,
            self._since,
            self._first,
            self._z,
            self._weekday,
            self._hourly,
            self._counted,
            self._yesterday_z,
            self._yesterday_first,
            self._borrowed,
            self._explained_day,
        ) = state
        self._last = None
        self.suspicious = self._since is not None
