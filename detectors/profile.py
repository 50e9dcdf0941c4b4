"""What a meter normally does: its learned profile, shared by the detectors.

Per local hour of the day and type of day (working day or weekend), an exponentially weighted
mean and variance of the flow rate; per local hour, how often the meter runs at all and how
recently it had heavy flow (a sprinkler, a tank filling); per day of the week, how a whole day
compares with what the hours expect (a laundry day); and the meter's peak flow.

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

from detectors.base import Interval, MeterContext

SLOTS = 48  # 24 hours x (working day, weekend)
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)
# Flow rate at or above which the meter counts as running (gal/h): below it are the drips
# and the ice maker; a meter's lowest registered step is commonly 0.1 gal.
RUNNING_RATE = 0.4
HEAVY_OF_PEAK = 0.5  # flow over this share of the meter's peak is heavy
HEAVY_FADE = 0.98
DAY_FACTOR_RATE = 0.3  # EW weight of a new week's day in its weekday's factor


def weekday_of(start: int, utc_offset_s: int) -> int:
    """Local day of the week of an interval starting at `start` (Monday = 0)."""
    return ((start + utc_offset_s) // 86_400 + EPOCH_WEEKDAY) % 7


def slot_of(start: int, utc_offset_s: int) -> int:
    """The profile slot of an interval starting at `start` (epoch seconds, UTC)."""
    local = start + utc_offset_s
    hour = (local // 3600) % 24
    weekend = (local // 86_400 + EPOCH_WEEKDAY) % 7 >= 5
    return hour + (24 if weekend else 0)


class MeterProfile:
    """The learned normal behaviour of one meter.

    `learn_rate` is the EW weight of a new observation once a slot has seen `1/learn_rate`
    observations; before that each slot is a plain running mean, so that a new meter's
    profile is usable after a few days instead of weeks.
    """

    __slots__ = (
        "_count",
        "_day_factor",
        "_heavy",
        "_mean",
        "_on",
        "_var",
        "learn_rate",
        "learned_s",
        "peak",
    )

    def __init__(self, learn_rate: float = 0.1) -> None:
        self.learn_rate = learn_rate
        self._mean = array("f", bytes(4 * SLOTS))  # mean flow rate (gal/h)
        self._var = array("f", bytes(4 * SLOTS))  # variance of the flow rate
        self._count = array("H", bytes(2 * SLOTS))  # observations per slot (capped)
        self._on = array("f", bytes(4 * 24))  # share of intervals running, by local hour
        # recent heavy flow by local hour: 1 when the hour last had heavy flow, fading by
        # `HEAVY_FADE` at each later observation of that hour (about a month to halve)
        self._heavy = array("f", bytes(4 * 24))
        # how each day of the week compares with the hourly profile (a laundry or a watering
        # day): an EW mean of the day's use over what the hourly means expected, Monday first
        self._day_factor = array("f", [1.0] * 7)
        self.learned_s = 0  # history learned (seconds)
        self.peak = 0.0  # the meter's peak flow (gal/h), see `observe_peak`

    # --- reading the profile ------------------------------------------------------------------

    def mean_at(self, slot: int) -> float:
        return self._mean[slot]

    def std_at(self, slot: int) -> float:
        return float(self._var[slot]) ** 0.5

    def observations(self, slot: int) -> int:
        return self._count[slot]

    def on_share(self, hour: int) -> float:
        """How often the meter is running in this local hour (0..1)."""
        return self._on[hour]

    def heavy_recently(self, hour: int) -> float:
        """How recently the meter had heavy flow in this local hour or the ones beside it
        (1: at the last observation; fading towards 0 over the following weeks)."""
        heavy = self._heavy
        return max(heavy[(hour - 1) % 24], heavy[hour], heavy[(hour + 1) % 24])

    def day_factor(self, weekday: int) -> float:
        return self._day_factor[weekday]

    @property
    def days(self) -> float:
        return self.learned_s / 86_400

    # --- learning ---------------------------------------------------------------------------

    def learn(
        self, interval: Interval, context: MeterContext, *, hold_running: bool = False
    ) -> None:
        """Learn one interval. `hold_running` leaves how often the meter runs at this hour
        alone: a leak the detector is gathering evidence for must not teach the profile that
        the meter runs at night."""
        start = interval.ts - interval.seconds
        slot = slot_of(start, context.utc_offset_s)
        rate = interval.rate
        n = self._count[slot]
        weight = max(self.learn_rate, 1.0 / (n + 1))
        mean = self._mean[slot]
        diff = rate - mean
        # River's EWVar: var = (1 - a) * (var + a * diff^2); a new mean moves by a * diff
        self._var[slot] = (1.0 - weight) * (self._var[slot] + weight * diff * diff)
        self._mean[slot] = mean + weight * diff
        if n < 65_535:
            self._count[slot] = n + 1
        hour = slot % 24
        hour_weight = max(self.learn_rate, 1.0 / (self._count[hour] + self._count[hour + 24]))
        if not hold_running:
            running = 1.0 if rate >= RUNNING_RATE else 0.0
            self._on[hour] += hour_weight * (running - self._on[hour])
        if self.peak > 0 and rate >= HEAVY_OF_PEAK * self.peak:
            self._heavy[hour] = 1.0
        else:
            self._heavy[hour] *= HEAVY_FADE
        self.learned_s += interval.seconds

    def learn_day(self, weekday: int, used: float, expected: float) -> None:
        """Learn how a whole day of the week compared with what the hourly means expected."""
        if expected > 0:
            ratio = min(used / expected, 10.0)
            self._day_factor[weekday] += DAY_FACTOR_RATE * (ratio - self._day_factor[weekday])

    def observe_peak(self, interval: Interval) -> None:
        """Follow the meter's peak flow: the highest rate seen, decaying by about 1 % a day.
        (The bank keeps bursts and spikes out of it.)"""
        decay = 1.0 - 0.0004 * interval.seconds / 3600.0
        self.peak = max(interval.rate, self.peak * decay)

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self.learn_rate,
            self._mean.tobytes(),
            self._var.tobytes(),
            self._count.tobytes(),
            self._on.tobytes(),
            self._heavy.tobytes(),
            self._day_factor.tobytes(),
            self.learned_s,
            self.peak,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.learn_rate, mean, var, count, on, heavy, factor, self.learned_s, self.peak = state
        self._mean, self._var, self._count = array("f", mean), array("f", var), array("H", count)
        self._on, self._heavy = array("f", on), array("f", heavy)
        self._day_factor = array("f", factor)
