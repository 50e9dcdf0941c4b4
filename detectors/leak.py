"""Leak: water that keeps running when this meter is normally still.

Daytime use can keep a meter turning for many hours in a row, so "flow for N hours" cries
wolf on busy households and 24/7 businesses, and "one dry hour resets it" misses a toilet
flapper that leaks on and off. What a leak changes is how often the meter stands still: a
leak keeps it running at hours of the day when this meter usually stands still at least now
and then, and above all in its quiet hours.

Sequential likelihood-ratio tests (CUSUMs) run side by side, each against the meter's
profile, which says how often the meter runs at each local hour (p, shrunk towards a prior
while the meter is new):

- steady: "the meter runs `STEADY_RUNNING` of the time" (a continuous leak), over every hour
  in which the meter normally stands still at least now and then (p ≤ `STEADY_MAX_P`). A
  running interval adds log(0.97 / p), a still one log(0.03 / (1 - p)): one still hour wipes
  out a day of weak evidence, while each quiet hour of a leak adds about 3;
- intermittent: "the meter runs `INTERMITTENT_RUNNING` of the time", over the quiet hours
  only (p ≤ the class's `quiet_share`), for a flapper that leaks on and off;
- floor: per level of `FLOOR_LEVELS` (0.4, 1.5, 5, 15 gal/h), "the hour's lowest interval
  no longer drops below it", against how often it stays above at this local hour (the
  meter's own baseline minimum flow, learned in the profile), over the hours in which it
  usually does drop below (stays above ≤ `FLOOR_MAX_P` of the time). Read every 15 minutes, a
  household returns to zero between draws in almost every hour of the day, so a leak shows
  within hours of starting; one hour below a level resets that level's test, and the run
  must span `MIN_FLOOR_HOURS` judged hours. Only for reads shorter than an hour: an hourly
  read's total hides whether the flow fell back between draws, and a busy day lifts a whole
  afternoon above the levels.

A leak is flagged when any of them reaches the class's evidence (9 for a home: odds of about
8,000 : 1). A 24/7 business never stands still and is never flagged; intervals at burst rates
are left to the burst detector; an inactive account's use is inactive usage, not a leak.

>>> from detectors.base import Interval, MeterContext
>>> from detectors.profile import MeterProfile
>>> detector, profile, ctx = QuietHourLeak(), MeterProfile(), MeterContext("residential")
>>> def day(d, extra=0.0):
...     found = []
...     for h in range(24):
...         use = (0.0 if h < 6 else 12.0 if h % 3 == 0 else 0.0) + extra
...         iv = Interval((d * 24 + h + 1) * 3600, 3600, use)
...         found = detector.update(iv, ctx, profile)
...         if not found and not detector.suspicious:
...             profile.learn(iv, ctx)
...     return found
>>> for d in range(7):
...     _ = day(d)
>>> day(7)
()
>>> [(f.kind, f.details["leak_rate"]) for f in day(8, extra=2.0)]
[('leak', 2.0)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from detectors.base import NOTHING, Detector, Facts, Finding, Interval, MeterContext, clamp01
from detectors.profile import FLOOR_LEVELS, RUNNING_RATE, MeterProfile

STEADY_RUNNING = 0.97  # a continuous leak keeps the meter running nearly always
STEADY_MAX_P = 0.5  # hours in which the meter runs more often than this tell too little
INTERMITTENT_RUNNING = 0.4  # a flapper leak runs some of the time
# A week of history before judging: weekend nights differ from working-day nights (up late on
# Friday and Saturday), and five days need not include a weekend: most false leaks opened then.
WARMUP_DAYS = 7.0
# The steady test's evidence must span this many hours of the meter's still-prone hours, and
# the intermittent test's more than one night.
MIN_STEADY_HOURS = 4.0
MIN_STEADY_QUIET = 2  # running intervals in the meter's quietest hours the steady test needs
# Hours the floor test must have judged: more than the steady test's, as a household's busy
# hours come in streaks (an evening of cooking, dishes and showers can keep every quarter
# hour running for three hours), where its night hours are each a chance of their own.
MIN_FLOOR_HOURS = 6
# The floor test judges only hours whose lowest interval stays above the level at most this
# share of the time: at busier hours a run above the level says too little against the
# streaks of a busy day (at 0.5, and on hourly reads, it raised hundreds of false leaks).
FLOOR_MAX_P = 0.2
# no floor evidence at any level: shared, and a tuple so that it cannot change; checked by
# identity at every interval (most meters never have any)
NO_FLOOR: tuple[float, ...] = (0.0,) * len(FLOOR_LEVELS)
MIN_INTERMITTENT_S = 20 * 3600
# The profile's share of running intervals is shrunk towards this prior (a Beta(0.5, 2.5)),
# so that three still nights do not make a single running hour look like proof.
PRIOR_ON, PRIOR_N = 0.5, 3.0
# Nobody's nights are certain: someone is up now and then. However still a meter's nights
# have been, an hour of running then is never taken as stronger evidence than this allows.
MIN_CHANCE = 0.06
EFFECTIVE_N = 19.0  # an EW mean with weight 0.1 remembers about this many observations
# Scattered evidence of the intermittent test fades (half-life about a month).
DECAY_PER_HOUR = 0.999
# Evidence past this share of what is needed keeps intervals out of the profile: a leak that is
# building up must not teach the profile that the meter runs at night.
SUSPICIOUS = 0.2


def pooled_chance(profile: MeterProfile, hour: int, share_at: Callable[[int], float]) -> float:
    """How likely something the profile counts per local hour (`share_at(hour)`, a share of
    that hour's observations) is at this hour: the share pooled with the neighbouring hours
    (weights 1-2-1, since habits shift by an hour from day to day) and shrunk towards the
    prior by how much the profile has seen."""
    share = n = 0.0
    for h, weight in ((hour - 1) % 24, 1.0), (hour, 2.0), ((hour + 1) % 24, 1.0):
        seen = min(profile.hours_observed(h), EFFECTIVE_N)
        share += weight * seen * share_at(h)
        n += weight * seen
    n /= 2.0  # the weights sum to 4: the pool is worth about two hours' observations
    return min(max((share / 2.0 + PRIOR_ON) / (n + PRIOR_N), 0.02), 0.98)


def running_chance(profile: MeterProfile, hour: int) -> float:
    """How likely the meter is to be running in this local hour (see `pooled_chance`)."""
    return pooled_chance(profile, hour, profile.on_share)


def floor_chance(profile: MeterProfile, level: int, hour: int) -> float:
    """How likely this local hour's lowest interval is to stay at or above
    `FLOOR_LEVELS[level]` (see `pooled_chance`)."""
    return pooled_chance(profile, hour, lambda h: profile.floor_share(level, h))


class QuietHourLeak(Detector):
    """Flags a meter that keeps running through its quiet hours (see the module docstring)."""

    kinds: ClassVar[tuple[str, ...]] = ("leak",)

    def __init__(self) -> None:
        self.suspicious = False
        self._steady = 0.0  # CUSUM of the steady test
        self._steady_since: int | None = None
        self._steady_hours = 0.0  # hours of the steady test's run
        self._steady_quiet = 0  # running quiet-hour intervals in the steady test's run
        self._flapping = 0.0  # CUSUM of the intermittent test
        self._flapping_since: int | None = None
        self._active = False
        self._since: int | None = None  # start of the flagged leak
        self._rate = 0.0  # EW of the excess flow in running quiet intervals (gal/h)
        self._lowest = 0.0  # lowest running flow since the flag (gal/h; the lowest interval's)
        self._volume = 0.0  # estimated volume lost since the flag's start (gal)
        self._quiet_running = 0  # quiet intervals running since the flag's start
        self._quiet_seen = 0  # quiet intervals since the flag's start
        # CUSUM and start of the floor test at each of `FLOOR_LEVELS`
        self._floor: Sequence[float] = NO_FLOOR
        self._floor_since: list[int | None] = [None] * len(FLOOR_LEVELS)
        self._floor_hours = [0] * len(FLOOR_LEVELS)  # hours tested in each level's run
        # the hour just completed: its lowest interval's flow rate (gal/h), and whether it
        # was read in several intervals
        self._hour_lowest = 0.0
        self._hour_split = False
        # the local clock hour being added up: hour index (-1: none), start, volume, seconds
        self._hour: list[Any] = [-1, 0, 0.0, 0]

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
        needed = limits.leak_evidence
        if not context.active or profile.days < WARMUP_DAYS or at.rate >= limits.burst_min_rate:
            if not context.active:
                self._close()
            self._hour = [-1, 0, 0.0, 0, 0.0]
            self.suspicious = self._building(needed)
            return self._findings(needed, interval.ts)
        hourly = self._add_to_hour(interval, context.utc_offset_s)
        if hourly is not None:
            # an hour of one interval has that interval's facts
            hourly_at = at if hourly.seconds == interval.seconds else Facts(hourly, context)
            self._test(hourly, context, profile, needed, hourly_at)
        self.suspicious = self._building(needed)
        return self._findings(needed, interval.ts)

    def _add_to_hour(self, interval: Interval, utc_offset_s: int) -> Interval | None:
        """Add the interval to its local clock hour; the whole hour once it is complete.
        The tests judge clock hours whatever the read interval, as the profile does."""
        start = interval.ts - interval.seconds
        hour_index = (start + utc_offset_s) // 3600
        if hour_index != self._hour[0]:
            if (interval.ts + utc_offset_s) % 3600 == 0 or interval.seconds >= 3600:
                # the hour is this one interval (hourly reads): nothing to add up
                if self._hour[0] != -1:
                    self._hour = [-1, 0, 0.0, 0, 0.0]
                self._hour_split = False  # (the hour's lowest is the interval's own rate)
                return interval
            self._hour = [hour_index, start, 0.0, 0, math.inf]
        acc = self._hour
        acc[2] += interval.value
        acc[3] += interval.seconds
        rate = interval.value * 3600.0 / interval.seconds
        if rate < acc[4]:
            acc[4] = rate
        if (interval.ts + utc_offset_s) % 3600 and acc[3] < 3600:
            return None
        self._hour = [-1, 0, 0.0, 0, 0.0]
        self._hour_lowest, self._hour_split = acc[4], True
        return Interval(interval.ts, acc[3], acc[2])

    def _test(
        self,
        interval: Interval,
        context: MeterContext,
        profile: MeterProfile,
        needed: float,
        at: Facts,
    ) -> None:
        """One complete hour through both tests, and the flag's bookkeeping."""
        limits = at.limits
        rate = interval.rate
        start = at.start
        hours = interval.seconds / 3600.0
        slot = at.slot
        hour = at.hour
        share = profile.on_share(hour)
        p = max(running_chance(profile, hour), MIN_CHANCE)
        running = rate >= RUNNING_RATE
        cap = 1.5 * needed if self._active else math.inf
        if share <= STEADY_MAX_P:
            step = (
                math.log(STEADY_RUNNING / p)
                if running
                else math.log((1.0 - STEADY_RUNNING) / (1.0 - p))
            )
            if self._steady <= 0.0:
                self._steady_since, self._steady_hours, self._steady_quiet = start, 0.0, 0
            self._steady = min(max(0.0, self._steady + step), cap)
            self._steady_hours += hours
            if share <= limits.quiet_share:
                if running:
                    self._steady_quiet += 1
                else:  # a continuous leak never lets the meter stand still in its quiet hours
                    self._steady = 0.0
        elif not running:
            # A still interval at a busy hour says as much against a continuous leak as one at
            # night; a running one says little (busy hours run in streaks), so it is ignored.
            step = math.log((1.0 - STEADY_RUNNING) / (1.0 - min(p, 0.97)))
            self._steady = max(0.0, self._steady + step)
        if self._hour_split:
            # An hourly read is a sum of draws: whether the flow fell back to zero between
            # them is out of sight, and a busy day lifts a whole afternoon above the levels.
            self._test_floor(profile, hour, start, cap)
        quiet = share <= limits.quiet_share
        self._flapping *= DECAY_PER_HOUR**hours
        if quiet:
            # A leak running a share D of the time makes the meter run with probability
            # 1 - (1 - p)(1 - D) where it would otherwise run with probability p.
            with_leak = 1.0 - (1.0 - p) * (1.0 - INTERMITTENT_RUNNING)
            step = math.log(with_leak / p) if running else math.log(1.0 - INTERMITTENT_RUNNING)
            if self._flapping <= 0.0:
                self._flapping_since = start
            self._flapping = min(max(0.0, self._flapping + step), cap)

        if not self._active and self._convinced(needed, interval.ts):
            self._open(start)
        if self._active:
            if (
                self._steady <= 0.0
                and self._flapping <= 0.0
                and (self._floor is NO_FLOOR or max(self._floor) <= 0.0)
            ):
                self._close()
            else:
                self._observe(rate, hours, quiet, running, profile.mean_at(slot))

    def _test_floor(self, profile: MeterProfile, hour: int, start: int, cap: float) -> None:
        """The floor test at each level: the hour's lowest interval stayed at or above it,
        where this meter's flow normally drops below it at this hour now and then. One hour
        below a level resets that level's test: a continuous leak never lets it fall there."""
        lowest = self._hour_lowest
        if lowest < RUNNING_RATE:  # a still hour: no level holds (the common case)
            self._floor = NO_FLOOR
            return
        floor = self._floor if isinstance(self._floor, list) else [0.0] * len(FLOOR_LEVELS)
        self._floor = floor
        since, tested = self._floor_since, self._floor_hours
        for level, bar in enumerate(FLOOR_LEVELS):
            if lowest < bar:
                for higher in range(level, len(FLOOR_LEVELS)):  # the levels rise
                    floor[higher] = 0.0
                return
            if profile.floor_share(level, hour) > FLOOR_MAX_P:
                continue  # an hour that usually stays above the level tells too little
            p = floor_chance(profile, level, hour)
            if p < MIN_CHANCE:
                p = MIN_CHANCE
            if floor[level] <= 0.0:
                since[level], tested[level] = start, 0
            tested[level] += 1
            evidence = floor[level] + math.log(STEADY_RUNNING / p)
            floor[level] = 0.0 if evidence < 0.0 else cap if evidence > cap else evidence

    def _convinced(self, needed: float, now: int) -> bool:
        """Enough evidence, gathered over long enough that one night-time errand (a cluster
        of two or three running hours) cannot make it alone."""
        steady = (
            self._steady >= needed
            and self._steady_hours >= MIN_STEADY_HOURS
            and self._steady_quiet >= MIN_STEADY_QUIET
        )
        flapping = (
            self._flapping >= needed
            and self._flapping_since is not None
            and now - self._flapping_since >= MIN_INTERMITTENT_S
        )
        if steady or flapping:
            return True
        if self._floor is NO_FLOOR or max(self._floor) < needed:
            return False
        for evidence, tested in zip(self._floor, self._floor_hours, strict=True):
            if evidence >= needed and tested >= MIN_FLOOR_HOURS:
                return True
        return False

    def _building(self, needed: float) -> bool:
        if self._active or max(self._steady, self._flapping) >= SUSPICIOUS * needed:
            return True
        return self._floor is not NO_FLOOR and max(self._floor) >= SUSPICIOUS * needed

    def _open(self, now: int) -> None:
        starts = [
            since
            for since, evidence in (
                (self._steady_since, self._steady),
                (self._flapping_since, self._flapping),
                *zip(self._floor_since, self._floor, strict=True),
            )
            if since is not None and evidence > 0
        ]
        self._active, self._since = True, min(starts, default=now)
        self._rate, self._lowest, self._volume = 0.0, 0.0, 0.0
        self._quiet_running = self._quiet_seen = 0

    def _observe(self, rate: float, hours: float, quiet: bool, running: bool, usual: float) -> None:
        excess = max(0.0, rate - usual)
        if running:
            # read in quarter hours, the lowest of them is the flow between uses
            low = (
                self._hour_lowest
                if self._hour_split and self._hour_lowest >= RUNNING_RATE
                else rate
            )
            self._lowest = min(self._lowest, low) if self._lowest > 0 else low
        if quiet:
            self._quiet_seen += 1
            if running:
                self._quiet_running += 1
                self._rate = (
                    excess
                    if self._quiet_running == 1
                    else (self._rate + 0.3 * (excess - self._rate))
                )
        leak_rate = self._rate if self._quiet_running else self._lowest
        self._volume += min(excess, leak_rate) * hours

    def explained(self, kind: str) -> None:
        self._close()

    def held_back(self, kind: str) -> None:
        """A suspected stuck reading (three equal reads in a busy hour) only holds a leak back:
        read every 15 minutes, a leak repeats its rate between a household's draws, and a
        stuck register that goes on repeating becomes a stuck-reading finding, which explains
        the leak away."""

    def _close(self) -> None:
        self._active, self._since = False, None
        self._steady = self._flapping = 0.0
        self._floor = NO_FLOOR

    def _findings(self, needed: float, now: int) -> Sequence[Finding]:
        if not self._active or self._since is None:
            return NOTHING
        rate = self._rate if self._quiet_running else self._lowest
        severity = (
            "critical" if rate >= 50 else "high" if rate >= 10 else "medium" if rate >= 1 else "low"
        )
        share = self._quiet_running / max(1, self._quiet_seen)
        if self._quiet_seen:
            seen = (
                f"water kept running in {self._quiet_running} of {self._quiet_seen} hours "
                f"when this meter is normally still ({share:.0%}); "
            )
        else:  # found by the floor test, before any quiet hour
            seen = (
                f"the flow has not dropped below {self._lowest:,.1f} gal/h for "
                f"{(now - self._since) / 3600:,.0f} hours, at hours of the day when this "
                "meter's flow normally falls back to near zero between uses; "
            )
        return [
            Finding(
                kind="leak",
                started_at=self._since,
                score=clamp01(
                    0.5
                    + 0.5 * (max(self._steady, self._flapping, *self._floor) - needed) / needed
                    + rate / 40
                ),
                severity=severity,
                evidence=(
                    f"{seen}about {rate:,.1f} gal/h more than usual, lowest flow "
                    f"{self._lowest:,.1f} gal/h; an estimated {self._volume:,.0f} gal lost "
                    "so far. Check toilets (flapper), outdoor taps, irrigation and the service "
                    "line."
                ),
                details={
                    "leak_rate": round(rate, 3),
                    "lowest_flow": round(self._lowest, 3),
                    "quiet_running_share": round(share, 3),
                    "volume_lost": round(self._volume, 1),
                    "evidence": round(max(self._steady, self._flapping, *self._floor), 2),
                },
            )
        ]

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self._steady,
            self._steady_since,
            self._steady_hours,
            self._steady_quiet,
            self._flapping,
            self._flapping_since,
            self._active,
            self._since,
            self._rate,
            self._lowest,
            self._volume,
            self._quiet_running,
            self._quiet_seen,
            tuple(self._hour),
            tuple(self._floor),
            tuple(self._floor_since),
            tuple(self._floor_hours),
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        if len(state) == 14:  # a snapshot from before the floor test: no evidence yet
            levels = len(FLOOR_LEVELS)
            state = (*state, (0.0,) * levels, (None,) * levels, (0,) * levels)
        (
            self._steady,
            self._steady_since,
            self._steady_hours,
            self._steady_quiet,
            self._flapping,
            self._flapping_since,
            self._active,
            self._since,
            self._rate,
            self._lowest,
            self._volume,
            self._quiet_running,
            self._quiet_seen,
            hour,
            floor,
            floor_since,
            floor_hours,
        ) = state
        self._hour = [*hour, 0.0][:5]
        self._floor = list(floor) if any(floor) else NO_FLOOR
        self._floor_since = list(floor_since)
        self._floor_hours = list(floor_hours)
        self._hour_lowest, self._hour_split = 0.0, False
        self.suspicious = self._active
