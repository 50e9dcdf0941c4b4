"""The days and billing periods alert rules count usage over, in the utility's time zone.

A read's `ts` is the END of the interval it measures, so a read stamped at local midnight is
consumption of the day before: a read belongs to day D when midnight(D) < ts <= midnight(D + 1).
A billing period starts on the account's `cycle_day` of each month (clamped to the month's
length: cycle day 31 starts on 28 February) and runs up to the day before the next start. The
same rules as `billing.periods` (tests/test_alerts_rules.py checks that both agree), kept here
so that alerts depend on no other package's internals.

>>> from zoneinfo import ZoneInfo
>>> chicago = ZoneInfo("America/Chicago")
>>> read_day(datetime(2026, 3, 2, 6, 0, tzinfo=UTC), chicago)  # local midnight: the day before
datetime.date(2026, 3, 1)
>>> billing_period(date(2026, 3, 1), 31)
BillingPeriod(start=datetime.date(2026, 2, 28), end=datetime.date(2026, 3, 30))
>>> billing_period(date(2026, 3, 20), 15).days
31
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

_TICK = timedelta(microseconds=1)


def read_day(ts: datetime, tz: tzinfo) -> date:
    """The local date whose consumption a read stamped `ts` (interval end) measures."""
    return (ts - _TICK).astimezone(tz).date()


def local_midnight(day: date, tz: tzinfo) -> datetime:
    """The instant `day` begins in `tz`, in UTC."""
    return datetime.combine(day, time(), tz).astimezone(UTC)


def day_bounds(day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """(lo, hi] in UTC: the reads of `day` are those with lo < ts <= hi."""
    return local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)


def cycle_start(year: int, month: int, cycle_day: int) -> date:
    """The day a period of `cycle_day` starts in that month, clamped to the month's length."""
    return date(year, month, min(cycle_day, calendar.monthrange(year, month)[1]))


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + months
    return index // 12, index % 12 + 1


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    """One billing period: the local dates `start` to `end`, both included."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def bounds(self, tz: tzinfo) -> tuple[datetime, datetime]:
        """(lo, hi] in UTC: the reads of this period are those with lo < ts <= hi."""
        return local_midnight(self.start, tz), local_midnight(self.end + timedelta(days=1), tz)


def billing_period(day: date, cycle_day: int) -> BillingPeriod:
    """The billing period of an account with `cycle_day` (1-31) that contains local date `day`."""
    if not 1 <= cycle_day <= 31:
        raise ValueError(f"cycle day {cycle_day} is not a day of the month: use 1-31")
    start = cycle_start(day.year, day.month, cycle_day)
    if day < start:
        year, month = _add_months(day.year, day.month, -1)
        return BillingPeriod(cycle_start(year, month, cycle_day), start - timedelta(days=1))
    year, month = _add_months(day.year, day.month, 1)
    return BillingPeriod(start, cycle_start(year, month, cycle_day) - timedelta(days=1))
