"""What a meter normally does: its learned profile, shared by the detectors.

Per local hour of the day and type of day (working day or weekend), an exponentially weighted
mean and variance of the flow rate; per local hour, how often the meter runs at all and the
heaviest flow it has recently had (a sprinkler, a tank filling); per day of the week, how a
whole day compares with what the hours expect (a laundry day); and the meter's peak flow.

The detectors score an interval against the profile before the profile learns it, and the
bank keeps the profile from learning an interval while an anomaly holds ("protect the
detector", as River's `QuantileFilter(protect_anomaly_detector=True)` does), so that a long
leak never becomes the new normal.

The weights follow River's `stats.EWMean` and `stats.EWVar` (`tests/test_detectors.py` checks
they give the same numbers), kept as float32 arrays instead of River objects because each of a
million meters carries about 200 of them and Bytewax copies them at every snapshot: as arrays
they snapshot in about a microsecond and pickle to about 700 bytes.

>>> from detectors.base import Interval, MeterContext
>>> profile = MeterProfile()
>>> ctx = MeterContext()
>>> for day in range(14):
...     for hour in range(24):
...         profile.learn(Interval(((day * 24) + hour + 1) * 3600, 3600,
...                                0.0 if hour < 6 else 10.0), ctx)
>>> round(profile.mean_at(slot_of(7 * 3600, 0)), 1), profile.on_share(3)
(10.0, 0.0)
"""

from __future__ import annotations

from array import array
from typing import Any

from detectors.base import EPOCH_WEEKDAY, Facts, Interval, MeterContext, slot_of, weekday_of

__all__ = ["EPOCH_WEEKDAY", "MeterProfile", "slot_of", "weekday_of"]

SLOTS = 48  # 24 hours x (working day, weekend)
# Flow rate at or above which the meter counts as running (gal/h): below it are the drips
# and the ice maker; a meter's lowest registered step is commonly 0.1 gal.
RUNNING_RATE = 0.4
HEAVY_OF_PEAK = 0.5  # flow over this share of the meter's peak is heavy
HEAVY_FADE = 0.98  # per observation of the hour: about a month to halve
DAY_FACTOR_RATE = 0.3  # EW weight of a new week's day in its weekday's factor
# Flow levels (gal/h) for the meter's baseline minimum: per local hour, how often the hour's
# lowest interval stays at or above each. A household's busy hours still fall below a few
# gal/h now and then (between showers and loads of laundry); a continuous leak lifts every
# hour's minimum above its own rate. From the drip of a faucet to a running toilet.
FLOOR_LEVELS = (0.4, 1.5, 5.0, 15.0)
SHARE_SCALE = 65_535.0  # a share of 1 stored as this in an unsigned 16-bit array


class MeterProfile:
    """The learned normal behaviour of one meter.

    `learn_rate` is the EW weight of a new observation once a slot has seen `1/learn_rate`
    observations; before that each slot is a plain running mean, so that a new meter's
    profile is usable after a few days instead of weeks.
    """

    __slots__ = (
        "_count",
        "_day_factor",
        "_floor",
        "_heavy",
        "_hour",
        "_mean",
        "_on",
        "_var",
        "days",
        "learn_rate",
        "learned_s",
        "peak",
        "step_s",
    )

    def __init__(self, learn_rate: float = 0.1) -> None:
        self.learn_rate = learn_rate
        self._mean = array("f", bytes(4 * SLOTS))  # mean flow rate (gal/h)
        self._var = array("f", bytes(4 * SLOTS))  # variance of the flow rate
        self._count = array("H", bytes(2 * SLOTS))  # observations per slot (capped)
        self._on = array("f", bytes(4 * 24))  # share of intervals running, by local hour
        # the heaviest recent flow by local hour (gal/h), fading by `HEAVY_FADE` at each
        # later observation of that hour (about a month to halve)
        self._heavy = array("f", bytes(4 * 24))
        # share of clock hours whose lowest interval stayed at or above each of
        # `FLOOR_LEVELS`, by local hour (level-major: index level * 24 + hour), scaled by
        # `SHARE_SCALE` (two bytes each: this array is a tenth of the meter's state)
        self._floor = array("H", bytes(2 * 24 * len(FLOOR_LEVELS)))
        # how each day of the week compares with the hourly profile (a laundry or a watering
        # day): an EW mean of the day's use over what the hourly means expected, Monday first
        self._day_factor = array("f", [1.0] * 7)
        self.learned_s = 0  # history learned (seconds)
        # the same in days: an attribute, not a property, as four detectors read it at every
        # interval (kept equal to learned_s / 86_400 wherever learned_s changes)
        self.days = 0.0
        self.peak = 0.0  # the meter's peak flow (gal/h), see `observe_peak`
        self.step_s = 3600  # the meter's read interval (seconds), as last learned
        # the local clock hour being added up to judge whether the meter ran in it: hour
        # index (-1: none), volume, seconds, whether it is held back, and its lowest
        # interval's flow rate (gal/h)
        self._hour: list[Any] = [-1, 0.0, 0, 0, 0.0]

    # --- reading the profile ------------------------------------------------------------------

    def mean_at(self, slot: int) -> float:
        return self._mean[slot]

    def std_at(self, slot: int) -> float:
        return self._var[slot] ** 0.5  # (an array item is already a Python float)

    def observations(self, slot: int) -> int:
        return self._count[slot]

    def on_share(self, hour: int) -> float:
        """How often the meter runs in this local hour (0..1; share of clock hours in which
        it passed at least `RUNNING_RATE`)."""
        return self._on[hour]

    def floor_share(self, level: int, hour: int) -> float:
        """How often the lowest interval of this local hour stays at or above
        `FLOOR_LEVELS[level]` (0..1): the meter's own baseline minimum flow at that hour."""
        return self._floor[level * 24 + hour] / SHARE_SCALE

    def habitual_flow(self, hour: int) -> float:
        """The heaviest flow the meter has recently had in this local hour or the ones beside
        it (gal/h; fading by half over about a month): what its sprinkler or tank filling
        passes, even where those runs were kept out of the means."""
        heavy = self._heavy
        return max(heavy[(hour - 1) % 24], heavy[hour], heavy[(hour + 1) % 24])

    def day_factor(self, weekday: int) -> float:
        return self._day_factor[weekday]

    # --- learning ---------------------------------------------------------------------------

    def learn(
        self,
        interval: Interval,
        context: MeterContext,
        hold_running: bool = False,
        at: Facts | None = None,
    ) -> None:
        """Learn one interval. `hold_running` leaves how often the meter runs at this hour
        alone: a leak the detector is gathering evidence for must not teach the profile that
        the meter runs at night. `at`: the interval's `Facts`, if the caller has them."""
        if at is None:
            at = Facts(interval, context)
        slot = at.slot
        rate = at.rate
        n = self._count[slot]
        weight = 1.0 / (n + 1)
        if not weight > self.learn_rate:  # max(learn_rate, 1 / (n + 1)), without a call
            weight = self.learn_rate
        mean = self._mean[slot]
        diff = rate - mean
        # River's EWVar: var = (1 - a) * (var + a * diff^2); a new mean moves by a * diff
        self._var[slot] = (1.0 - weight) * (self._var[slot] + weight * diff * diff)
        self._mean[slot] = mean + weight * diff
        if n < 65_535:
            self._count[slot] = n + 1
        hour = at.hour
        self._count_running(at.local_start, interval, hold_running)
        heavy = self._heavy[hour] * HEAVY_FADE
        self._heavy[hour] = heavy if heavy > rate else rate  # max(rate, heavy), without a call
        self.learned_s += interval.seconds
        self.days = self.learned_s / 86_400
        self.step_s = interval.seconds

    def _count_running(self, local_start: int, interval: Interval, hold: bool) -> None:
        """Whether the meter ran is judged per clock hour, whatever the read interval: a
        15-minute meter is still in three quarters of a busy hour and runs in the fourth.
        Intervals add up into their local hour, which counts once it is complete."""
        hour_index = local_start // 3600
        acc = self._hour
        if hour_index != acc[0]:  # a new hour: what was added up before is left behind
            volume = 0.0 + interval.value
            seconds = interval.seconds
            held = hold
            lowest = 0.0  # (an hour of one read: the floor shares are not learned)
            if (local_start + seconds) % 3600:
                lowest = interval.value * 3600.0 / seconds
        else:
            volume = acc[1] + interval.value
            seconds = acc[2] + interval.seconds
            held = acc[3] or hold
            rate = interval.value * 3600.0 / interval.seconds
            lowest = acc[4] if acc[4] < rate else rate
        if (local_start + interval.seconds) % 3600 and seconds < 3600:
            # the hour is not complete yet
            self._hour = [hour_index, volume, seconds, held, lowest]
            return
        if acc[0] != -1:
            self._hour = [-1, 0.0, 0, 0, 0.0]
        if held:
            return
        hour = hour_index % 24
        count = self._count
        # `hours_observed(hour)`, inline: this runs for every hour of every meter
        observed = (count[hour] + count[hour + 24]) * self.step_s / 3600.0
        weight = max(self.learn_rate, 1.0 / (observed + 1.0))
        running = 1.0 if volume * 3600.0 / seconds >= RUNNING_RATE else 0.0
        self._on[hour] += weight * (running - self._on[hour])
        if seconds == interval.seconds:
            return  # an hour of one read has no lowest interval to learn (the leak test's floor)
        floor = self._floor
        if lowest < RUNNING_RATE and not floor[hour]:
            return  # a still hour at an hour that is never above the levels: nothing moves
        keep, add = 1.0 - weight, weight * SHARE_SCALE
        i = hour
        for level in FLOOR_LEVELS:
            share = floor[i]
            if lowest >= level:
                floor[i] = int(share * keep + add + 0.5)
            elif share:
                floor[i] = int(share * keep + 0.5)
            else:
                return  # the shares fall with the level: the higher ones are nought too
            i += 24

    def hours_observed(self, hour: int) -> float:
        """How many times this local hour has been learned (hours, whatever the interval)."""
        return (self._count[hour] + self._count[hour + 24]) * self.step_s / 3600.0

    def note_heavy(
        self, interval: Interval, context: MeterContext, at: Facts | None = None
    ) -> None:
        """Remember heavy flow at this local hour without learning the interval otherwise:
        an outlier kept out of the means (a sprinkler's first run, or its first run on a new
        day) still shows what this hour of the day can pass."""
        if at is None:
            at = Facts(interval, context)
        self._heavy[at.hour] = max(self._heavy[at.hour], at.rate)

    def learn_day(self, weekday: int, used: float, expected: float) -> None:
        """Learn how a whole day of the week compared with what the hourly means expected."""
        if expected > 0:
            ratio = min(used / expected, 10.0)
            self._day_factor[weekday] += DAY_FACTOR_RATE * (ratio - self._day_factor[weekday])

    def observe_peak(self, interval: Interval, rate: float | None = None) -> None:
        """Follow the meter's peak flow: the highest rate seen, decaying by about 1 % a day.
        (The bank keeps bursts and spikes out of it.) `rate`: the interval's, if known."""
        decay = 1.0 - 0.0004 * interval.seconds / 3600.0
        if rate is None:
            rate = interval.rate
        held = self.peak * decay
        self.peak = held if held > rate else rate  # max(rate, held), without a call

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self.learn_rate,
            self._mean.tobytes(),
            self._var.tobytes(),
            self._count.tobytes(),
            self._on.tobytes(),
            self._heavy.tobytes(),
            self._floor.tobytes(),
            self._day_factor.tobytes(),
            self.learned_s,
            self.peak,
            self.step_s,
            tuple(self._hour),
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        if len(state) == 11:  # a snapshot from before the floor shares: none learned yet
            state = (*state[:6], bytes(2 * 24 * len(FLOOR_LEVELS)), *state[6:])
        (
            self.learn_rate,
            mean,
            var,
            count,
            on,
            heavy,
            floor,
            factor,
            self.learned_s,
            self.peak,
            self.step_s,
            hour,
        ) = state
        self._hour = [*hour, 0.0][:5]  # (a snapshot from before kept no lowest rate)
        self._mean, self._var, self._count = array("f", mean), array("f", var), array("H", count)
        self._on, self._heavy = array("f", on), array("f", heavy)
        self._floor = array("H", floor)
        self._day_factor = array("f", factor)
        self.days = self.learned_s / 86_400
