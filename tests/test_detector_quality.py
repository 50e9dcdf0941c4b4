"""Behaviour of the leak, burst and usage-anomaly detectors on the patterns that used to fool
them (issue 3's quality targets): each test describes real water use."""

from __future__ import annotations

import random

from detectors.bank import DetectorBank
from detectors.base import Interval, MeterContext
from detectors.profile import MeterProfile
from detectors.usage_anomaly import UsageAnomaly

HOUR = 3600
MONDAY = 1_767_571_200  # 2026-01-05T00:00:00Z, a Monday


def business_hours(day: int, hour: int, rng: random.Random) -> float:
    """A shop: open 7-18 on working days, a short Saturday morning, closed on Sunday."""
    weekday = day % 7
    if weekday < 5 and 7 <= hour < 18:
        return 40.0 * rng.gammavariate(3.0, 1 / 3)
    if weekday == 5 and 8 <= hour < 15:
        return 20.0 * rng.gammavariate(3.0, 1 / 3)
    return 0.0


def household_hour(hour: int, rng: random.Random, factor: float = 1.0) -> float:
    """A household: still nights, use in events through the day."""
    if hour < 6:
        return 0.0
    if rng.random() < 0.1:
        return 0.0
    return factor * rng.uniform(4.0, 12.0)


def usage_flag_days(bank: DetectorBank, ctx: MeterContext, days: list[list[float]]) -> set[int]:
    flagged = set()
    for day, hours in enumerate(days):
        for hour, use in enumerate(hours):
            iv = Interval(MONDAY + (day * 24 + hour + 1) * HOUR, HOUR, use)
            if "usage_anomaly" in bank.update(iv, ctx):
                flagged.add(day)
    return flagged


def test_a_business_saturday_is_not_a_usage_anomaly_once_weekends_are_known() -> None:
    # The first weekends are judged by the working-day hours; once the weekend hours are known
    # the short Saturday must not look like a rise (a weekday factor learned against the
    # working day made it look four times its usual use).
    rng = random.Random(3)
    days = [[business_hours(d, h, rng) for h in range(24)] for d in range(56)]
    assert usage_flag_days(DetectorBank(), MeterContext("commercial"), days) == set()


def test_two_raised_days_in_a_row_flag_where_one_alone_does_not() -> None:
    # a household whose daytime use doubles for two days (guests): each day alone stays
    # below the one-day bar; together they are a rise
    rng = random.Random(7)
    normal = [[household_hour(h, rng) for h in range(24)] for _ in range(28)]
    raised = [[household_hour(h, rng, 2.0) for h in range(24)] for _ in range(2)]
    after = [[household_hour(h, rng) for h in range(24)] for _ in range(3)]
    ctx = MeterContext()
    one_day = usage_flag_days(DetectorBank(), ctx, normal + raised[:1] + after)
    two_days = usage_flag_days(DetectorBank(), ctx, normal + raised + after)
    assert one_day == set()
    assert two_days & {28, 29}


def test_an_explained_interval_leaves_the_usage_day() -> None:
    # A burst's or a stopped meter's hours are not use: discounting the interval just seen
    # puts the day's sums back where they were.
    profile, ctx, detector = MeterProfile(), MeterContext(), UsageAnomaly()
    rng = random.Random(1)
    for h in range(24 * 14):
        iv = Interval(MONDAY + (h + 1) * HOUR, HOUR, household_hour(h % 24, rng))
        detector.update(iv, ctx, profile)
        profile.learn(iv, ctx)
    for h in range(24 * 14, 24 * 14 + 12):
        detector.update(Interval(MONDAY + (h + 1) * HOUR, HOUR, 6.0), ctx, profile)
    before = detector.__getstate__()
    detector.update(Interval(MONDAY + (24 * 14 + 13) * HOUR, HOUR, 60.0), ctx, profile)
    assert detector.__getstate__() != before
    detector.discount()
    after = detector.__getstate__()
    # the sums (used, usual, variance, hours) and z are back; only "explained today" is set
    assert [round(v, 6) for v in after[1:5]] == [round(v, 6) for v in before[1:5]]
    assert round(after[7], 6) == round(before[7], 6)
    assert after[-1] is True
