"""Expected use: what a meter's customer or the staff said is normal, as the detectors use it.

A flag dismissed as expected use ("that's my evaporative cooler"), or use a customer declares
up front ("irrigation, about 300 gal/h, 6-9 am"), becomes an *allowance*: per local hour of
the day, a flow (gal/h) the meter may pass on top of its learned profile without alarm. The
bank takes the allowance off each interval before the leak, burst and usage-anomaly tests and
before the profile learns it, so the declared pattern no longer alarms, while a leak that
grows beyond it still does (its excess is flow like any other). Raw values still go to the
checks that need them (reverse flow, spikes, stopped and stuck meters).

>>> allowance = from_declaration(rate_gph=10.0, schedule="evenings 6-10 pm")
>>> [h for h in range(24) if allowance[h]]
[18, 19, 20, 21]
>>> from_dismissed_flag("leak", {"leak_rate": 2.4, "lowest_flow": 2.9}, hours=None)[3]
3.19
>>> combine([from_declaration(5.0, None), from_declaration(300.0, "6-9")])[7]
300.0
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

Allowance = tuple[float, ...]  # 24 flows (gal/h), local hours 0-23

# A dismissed flag's flow is allowed with this margin: the same pattern varies a little.
MARGIN = 1.1
_RANGE = re.compile(r"(\d{1,2})(?::\d\d)?\s*(am|pm)?\s*(?:-|–|to)\s*(\d{1,2})(?::\d\d)?\s*(am|pm)?")


def _hour(value: str, suffix: str | None) -> int:
    hour = int(value) % 24
    if suffix == "pm" and hour < 12:
        hour += 12
    if suffix == "am" and hour == 12:
        hour = 0
    return hour


def schedule_hours(schedule: str | None) -> set[int] | None:
    """The local hours a schedule in words names ('Saturdays 6-9 am', '18:00-22:00'), or None
    (every hour) when it names none."""
    if not schedule:
        return None
    hours: set[int] = set()
    for first, first_suffix, last, last_suffix in _RANGE.findall(schedule.lower()):
        last_suffix = last_suffix or None
        start = _hour(first, first_suffix or last_suffix)
        end = _hour(last, last_suffix)
        hour = start
        while hour != end:
            hours.add(hour)
            hour = (hour + 1) % 24
    return hours or None


def _allowance(rate: float, hours: Iterable[int] | None) -> Allowance:
    chosen = set(range(24)) if hours is None else set(hours)
    return tuple(round(rate, 3) if h in chosen else 0.0 for h in range(24))


def from_declaration(rate_gph: float | None, schedule: str | None) -> Allowance:
    """A declared use: `rate_gph` (gal/h) at the hours of `schedule` (every hour if none).
    A declaration without a rate allows nothing: the detectors need a flow to allow."""
    return _allowance(rate_gph or 0.0, schedule_hours(schedule))


def from_dismissed_flag(
    kind: str, details: Mapping[str, Any], hours: Iterable[int] | None
) -> Allowance:
    """What a flag dismissed as expected use allows: for a leak, its flow at every hour; for
    a burst or a usage anomaly, its highest flow at the local hours it spanned (`hours`)."""
    if kind == "leak":
        rate = max(float(details.get("leak_rate", 0.0)), float(details.get("lowest_flow", 0.0)))
        return _allowance(rate * MARGIN, None)
    if kind == "burst":
        return _allowance(float(details.get("highest_rate", 0.0)) * MARGIN, hours)
    if kind == "usage_anomaly":
        used, usual = float(details.get("used", 0.0)), float(details.get("usual", 0.0))
        hours_list = list(range(24)) if hours is None else list(hours)
        extra = max(0.0, used - usual) / max(1, len(hours_list))
        return _allowance(extra * MARGIN, hours_list)
    return _allowance(0.0, None)


def combine(allowances: Iterable[Allowance]) -> Allowance | None:
    """The hour-by-hour largest of several allowances (None when there is none)."""
    result: list[float] | None = None
    for allowance in allowances:
        if result is None:
            result = list(allowance)
        else:
            result = [max(a, b) for a, b in zip(result, allowance, strict=True)]
    if result is None or not any(result):
        return None
    return tuple(result)
