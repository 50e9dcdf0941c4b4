"""Billing periods: an account's period starts on its `cycle_day` of every month and ends where
the next one starts. Dates are the utility's local dates; pure functions, no I/O.

A `cycle_day` past the end of a short month starts that month's period on its last day
(cycle day 31 starts on 28 or 29 February, then again on 31 March).

>>> period_containing(date(2026, 3, 10), 15)
Period(cycle_day=15, start=datetime.date(2026, 2, 15), end=datetime.date(2026, 3, 15))
>>> period_containing(date(2026, 2, 28), 31).start, period_containing(date(2026, 2, 28), 31).end
(datetime.date(2026, 2, 28), datetime.date(2026, 3, 31))
>>> [p.start.isoformat() for p in recent_periods(date(2026, 3, 10), 1, 3)]
['2026-03-01', '2026-02-01', '2026-01-01']
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo


@dataclass(frozen=True)
class Period:
    """One billing period: local dates [start, end) of the accounts with `cycle_day`."""

    cycle_day: int
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def bounds(self, tz: tzinfo) -> tuple[datetime, datetime]:
        """The period in UTC: local midnight of `start` and of `end`. A read belongs to the
        period when start < ts <= end, since `ts` is the end of the interval it measures."""
        return local_midnight(self.start, tz), local_midnight(self.end, tz)


def local_midnight(day: date, tz: tzinfo) -> datetime:
    """The instant `day` begins in `tz`, in UTC."""
    return datetime.combine(day, time(), tz).astimezone(UTC)


def cycle_start(year: int, month: int, cycle_day: int) -> date:
    """The day the period of `cycle_day` starts in that month (clamped to the month's end)."""
    _check_cycle_day(cycle_day)
    return date(year, month, min(cycle_day, calendar.monthrange(year, month)[1]))


def _shift_month(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def _check_cycle_day(cycle_day: int) -> None:
    if not 1 <= cycle_day <= 31:
        raise ValueError(f"cycle day {cycle_day} is not a day of the month: use 1-31")


def period_containing(day: date, cycle_day: int) -> Period:
    """The billing period of `cycle_day` that contains the local date `day`."""
    start = cycle_start(day.year, day.month, cycle_day)
    if day < start:
        year, month = _shift_month(day.year, day.month, -1)
        return Period(cycle_day, cycle_start(year, month, cycle_day), start)
    year, month = _shift_month(day.year, day.month, 1)
    return Period(cycle_day, start, cycle_start(year, month, cycle_day))


def period_starting(start: date, cycle_day: int) -> Period:
    """The period of `cycle_day` that starts on `start`; ValueError when no period of that
    cycle day starts then (the message names the nearest one)."""
    period = period_containing(start, cycle_day)
    if period.start != start:
        raise ValueError(
            f"no billing period of cycle day {cycle_day} starts on {start.isoformat()}: the "
            f"period containing it starts on {period.start.isoformat()}"
        )
    return period


def previous_period(period: Period) -> Period:
    """The period just before `period`."""
    return period_containing(period.start - timedelta(days=1), period.cycle_day)


def recent_periods(today: date, cycle_day: int, count: int) -> list[Period]:
    """The period containing `today` and the `count` - 1 before it, newest first."""
    periods = [period_containing(today, cycle_day)]
    while len(periods) < count:
        periods.append(previous_period(periods[-1]))
    return periods
