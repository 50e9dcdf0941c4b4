"""How much water a service point uses in each interval: the usage model behind every read.

A `UsageProfile` describes one service point (its customer class, size and habits); `day_usage`
turns it into the true consumption of one day of intervals, in gallons. Each (profile, day)
has its own random stream, so any day can be generated on its own, in any order, and always
gives the same numbers: the live demo asks for one day at a time, the file writer for all.

The patterns follow published end-use studies in outline, not in detail:

- residential: morning and evening peaks, later mornings at weekends, nothing at night except
  the odd toilet flush or ice-maker refill; some households water a lawn on fixed mornings;
- multifamily: many households at once, so the night never quite empties;
- commercial: business hours on weekdays, a short Saturday, closed on Sunday;
- round-the-clock commercial (hotels, hospitals): flow in every interval, day and night;
- irrigation: a controller waters a few mornings a week, skips a day after rain, and the
  meter is still otherwise;
- vacant: nothing at all.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

RESIDENTIAL = "residential"
MULTIFAMILY = "multifamily"
COMMERCIAL = "commercial"
ROUND_THE_CLOCK = "commercial_24h"
IRRIGATION = "irrigation"
VACANT = "vacant"

PATTERNS = (RESIDENTIAL, MULTIFAMILY, COMMERCIAL, ROUND_THE_CLOCK, IRRIGATION, VACANT)

#: Gallons in one cubic foot.
GALLONS_PER_FT3 = 7.48052

# Residential relative use by local hour (index 0 = 00:00-00:59). Hours 0-4 are quiet and are
# modelled as occasional small events instead; these weights only share the day's use among
# hours 5-23.
_RES_WEEKDAY = (0, 0, 0, 0, 0, 0.6, 2.2, 3.0, 2.2, 1.4, 1.0, 0.9, 1.0, 0.9, 0.8, 0.9, 1.1, 1.6,
                2.0, 2.1, 1.8, 1.4, 0.9, 0.5)  # fmt: skip
_RES_WEEKEND = (0, 0, 0, 0, 0, 0.2, 0.6, 1.5, 2.4, 2.6, 2.0, 1.6, 1.4, 1.2, 1.1, 1.1, 1.2, 1.5,
                1.9, 2.0, 1.8, 1.5, 1.0, 0.6)  # fmt: skip
# Commercial: open 7-18 on weekdays with a lunch bump; Saturday morning only; Sunday closed.
_COM_WEEKDAY = (0, 0, 0, 0, 0, 0, 0.4, 1.0, 1.0, 1.0, 1.0, 1.3, 1.3, 1.0, 1.0, 1.0, 1.0, 0.9,
                0.8, 0.3, 0, 0, 0, 0)  # fmt: skip
_COM_SATURDAY = (0, 0, 0, 0, 0, 0, 0, 0, 0.4, 0.5, 0.5, 0.5, 0.5, 0.4, 0.3, 0, 0, 0, 0, 0, 0, 0,
                 0, 0)  # fmt: skip
# A whole-day curve for places that never sleep (hotels, hospitals, apartment blocks).
_ALL_DAY = (0.5, 0.4, 0.35, 0.35, 0.4, 0.7, 1.4, 1.8, 1.6, 1.3, 1.1, 1.0, 1.0, 0.95, 0.9, 0.95,
            1.0, 1.2, 1.4, 1.4, 1.3, 1.1, 0.9, 0.7)  # fmt: skip


def _shares(weights: Sequence[float]) -> tuple[float, ...]:
    total = sum(weights)
    return tuple(w / total for w in weights)


RES_WEEKDAY = _shares(_RES_WEEKDAY)
RES_WEEKEND = _shares(_RES_WEEKEND)
ALL_DAY = _shares(_ALL_DAY)
# Commercial shares are of a full weekday; Saturday keeps that scale, so it is a short day.
_COM_TOTAL = sum(_COM_WEEKDAY)
COM_WEEKDAY = tuple(w / _COM_TOTAL for w in _COM_WEEKDAY)
COM_SATURDAY = tuple(w / _COM_TOTAL for w in _COM_SATURDAY)

#: Local hours (start of the interval) in which residential use is only the odd small event.
QUIET_HOURS = range(0, 5)


@dataclass(frozen=True)
class UsageProfile:
    """The habits of one service point. `seed` makes its random stream its own."""

    pattern: str
    seed: int
    # Average use on a day with no lawn or irrigation watering (gallons).
    daily_gal: float = 0.0
    # Lawn watering of a household, or the schedule of an irrigation controller: local
    # weekdays (0 = Monday), first local hour, number of hours, and flow while on (gal/h).
    water_days: frozenset[int] = frozenset()
    water_hour: int = 5
    water_hours: int = 1
    water_gal_per_hour: float = 0.0

    @property
    def has_water_schedule(self) -> bool:
        return bool(self.water_days) and self.water_gal_per_hour > 0


def random_profile(pattern: str, rng: random.Random) -> UsageProfile:
    """A plausible profile of the given pattern, drawn from `rng`."""
    seed = rng.getrandbits(48)
    if pattern == RESIDENTIAL:
        # US single-family homes: median ~220 gal/day indoors, wide spread by household size.
        daily = min(900.0, max(60.0, rng.lognormvariate(math.log(220.0), 0.45)))
        if rng.random() < 0.35:
            days = frozenset(rng.sample(range(7), 2))
            return UsageProfile(
                pattern,
                seed,
                daily,
                water_days=days,
                water_hour=rng.choice((5, 6)),
                water_hours=1,
                water_gal_per_hour=rng.uniform(150.0, 450.0),
            )
        return UsageProfile(pattern, seed, daily)
    if pattern == MULTIFAMILY:
        units = rng.randint(6, 60)
        return UsageProfile(pattern, seed, units * rng.lognormvariate(math.log(60.0), 0.2))
    if pattern == COMMERCIAL:
        return UsageProfile(pattern, seed, rng.lognormvariate(math.log(800.0), 0.6))
    if pattern == ROUND_THE_CLOCK:
        return UsageProfile(pattern, seed, rng.lognormvariate(math.log(8000.0), 0.5))
    if pattern == IRRIGATION:
        first = rng.randrange(2)
        return UsageProfile(
            pattern,
            seed,
            0.0,
            water_days=frozenset({first, first + 2, first + 4}),
            water_hour=rng.randint(3, 6),
            water_hours=rng.randint(1, 3),
            water_gal_per_hour=rng.uniform(300.0, 1200.0),
        )
    if pattern == VACANT:
        return UsageProfile(pattern, seed)
    raise ValueError(f"unknown usage pattern {pattern!r}: use one of {PATTERNS}")


def day_usage(
    profile: UsageProfile, day: int, slots: Sequence[tuple[int, int]], hours: float
) -> list[float]:
    """True consumption (gallons) of each interval of day block `day`.

    `slots` gives, for each interval of the block, the local (hour, weekday) at which the
    interval starts; `hours` is the interval length in hours. The result depends only on the
    profile, the day number and the slots, never on what was generated before.
    """
    rng = random.Random((profile.seed << 20) + day)
    pattern = profile.pattern
    if pattern == RESIDENTIAL:
        out = _residential(profile, rng, slots, hours)
    elif pattern == MULTIFAMILY:
        out = _smooth(profile, rng, slots, hours, shape=5.0, floor=0.0)
    elif pattern == ROUND_THE_CLOCK:
        out = _smooth(profile, rng, slots, hours, shape=8.0, floor=0.35)
    elif pattern == COMMERCIAL:
        out = _commercial(profile, rng, slots, hours)
    elif pattern == IRRIGATION:
        out = [0.0] * len(slots)
    else:
        return [0.0] * len(slots)
    if profile.has_water_schedule:
        _water(profile, rng, slots, hours, out)
    return out


def _residential(
    p: UsageProfile, rng: random.Random, slots: Sequence[tuple[int, int]], hours: float
) -> list[float]:
    rnd = rng.random
    gamma = rng.gammavariate
    # Chances per interval of an ice-maker refill or a toilet flush in the quiet hours.
    p_ice = 0.05 * hours
    p_flush = p_ice + 0.04 * hours
    out: list[float] = []
    for hour, weekday in slots:
        if hour < 5:
            u = rnd()
            if u < p_ice:
                v = 0.1 + 0.3 * rnd()
            elif u < p_flush:
                v = 1.2 + 2.2 * rnd()
            else:
                v = 0.0
        else:
            share = (RES_WEEKEND if weekday >= 5 else RES_WEEKDAY)[hour]
            mean = p.daily_gal * share * hours
            # Water use comes in events (a shower, a load of laundry); the busier the hour, the
            # likelier at least one event falls into the interval.
            p_zero = math.exp(-(0.6 + 1.2 * 24 * share) * hours)
            v = 0.0 if rnd() < p_zero else mean / (1.0 - p_zero) * gamma(2.0, 0.5)
        out.append(v)
    return out


def _smooth(
    p: UsageProfile,
    rng: random.Random,
    slots: Sequence[tuple[int, int]],
    hours: float,
    shape: float,
    floor: float,
) -> list[float]:
    # Many independent users: the total varies little around the daily curve. `floor` keeps a
    # share of the mean in every interval (a hospital never stops).
    gamma = rng.gammavariate
    scale = 1.0 / shape
    out: list[float] = []
    for hour, _weekday in slots:
        mean = p.daily_gal * ALL_DAY[hour] * hours
        out.append(mean * max(floor, gamma(shape, scale)))
    return out


def _commercial(
    p: UsageProfile, rng: random.Random, slots: Sequence[tuple[int, int]], hours: float
) -> list[float]:
    rnd = rng.random
    gamma = rng.gammavariate
    p_cleaning = 0.03 * hours
    out: list[float] = []
    for hour, weekday in slots:
        if weekday < 5:
            share = COM_WEEKDAY[hour]
        elif weekday == 5:
            share = COM_SATURDAY[hour]
        else:
            share = 0.0
        if share == 0.0:
            v = 2.0 + 8.0 * rnd() if rnd() < p_cleaning else 0.0
        else:
            v = p.daily_gal * share * hours * gamma(3.0, 1.0 / 3.0)
        out.append(v)
    return out


def _water(
    p: UsageProfile,
    rng: random.Random,
    slots: Sequence[tuple[int, int]],
    hours: float,
    out: list[float],
) -> None:
    # The controller skips about one watering in seven (rain, a holiday).
    if rng.random() < 0.15:
        return
    last = p.water_hour + p.water_hours
    for i, (hour, weekday) in enumerate(slots):
        if weekday in p.water_days and p.water_hour <= hour < last:
            out[i] += p.water_gal_per_hour * hours * rng.uniform(0.95, 1.05)
