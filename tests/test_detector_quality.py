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


def household_with_sprinkler(days: int, rng: random.Random) -> list[list[float]]:
    """A household that waters its lawn at 400 gal/h for an hour on two mornings a week:
    its peak is the sprinkler's."""
    out = []
    for day in range(days):
        hours = [household_hour(h, rng) for h in range(24)]
        if day % 7 in (1, 4):
            hours[6] += 400.0
        out.append(hours)
    return out


def burst_flags(bank: DetectorBank, ctx: MeterContext, days: list[list[float]]) -> list[int]:
    """The hours (from the start) at which a burst holds."""
    held = []
    for day, hours in enumerate(days):
        for hour, use in enumerate(hours):
            iv = Interval(MONDAY + (day * 24 + hour + 1) * HOUR, HOUR, use)
            if "burst" in bank.update(iv, ctx):
                held.append(day * 24 + hour)
    return held


def test_a_night_long_burst_below_the_sprinklers_peak_is_a_burst() -> None:
    rng = random.Random(2)
    days = household_with_sprinkler(21, rng)
    # a broken pipe at 180 gal/h from 22:00 to 05:00: below the sprinkler's 400 gal/h, but far
    # above anything this household passes at those hours, for seven hours
    for hour in range(22, 24):
        days[19][hour] += 180.0
    for hour in range(0, 5):
        days[20][hour] += 180.0
    held = burst_flags(DetectorBank(), MeterContext(), days)
    assert held and 19 * 24 + 22 <= held[0] <= 20 * 24 + 2


def test_an_irrigation_controllers_long_runs_are_not_bursts() -> None:
    # three hours at 500 gal/h before dawn on Monday, Wednesday and Friday, none on weekends:
    # the weekend hours never see it, and that is how the controller works
    days = [[0.0] * 24 for _ in range(42)]
    for day in range(42):
        if day % 7 in (0, 2, 4):
            for hour in (3, 4, 5):
                days[day][hour] = 500.0 * (0.95 + 0.1 * ((day * 7 + hour) % 5) / 4)
    days[40][3:6] = [0.0, 0.0, 0.0]
    days[40 - 40 % 7 + 5][3:6] = [500.0, 510.0, 495.0]  # a Saturday run (a skipped Friday)
    assert burst_flags(DetectorBank(), MeterContext("irrigation"), days) == []


QUARTER = 900


def quarter_hours(days: int, rng: random.Random, leak_from: int | None = None) -> list[Interval]:
    """A household read every 15 minutes: still nights but for the odd flush, and through the
    day draws (a tap, a shower, a load of laundry) with still quarter hours between them.
    `leak_from`: the quarter hour from which a 2 gal/h leak adds 0.5 gal to every read."""
    out = []
    for q in range(days * 96):
        hour = (q // 4) % 24
        if hour < 6:
            use = 1.6 if rng.random() < 0.02 else 0.0
        else:
            use = round(rng.uniform(0.5, 5.0), 1) if rng.random() < 0.35 else 0.0
        if leak_from is not None and q >= leak_from:
            use += 0.5
        out.append(Interval(MONDAY + (q + 1) * QUARTER, QUARTER, use))
    return out


def leak_detected_at(intervals: list[Interval]) -> int | None:
    bank, ctx = DetectorBank(), MeterContext()
    for iv in intervals:
        if "leak" in bank.update(iv, ctx):
            return iv.ts
    return None


def test_a_leak_read_every_quarter_hour_is_flagged_the_same_day() -> None:
    # From 9:00 on day 21 a 2 gal/h leak keeps every quarter hour running: the meter no longer
    # returns to zero between the household's draws, which it did in almost every hour of
    # the day before. That is found within the day, not at the first quiet night.
    start = 21 * 96 + 9 * 4
    detected = leak_detected_at(quarter_hours(28, random.Random(5), leak_from=start))
    assert detected is not None
    hours = (detected - (MONDAY + start * QUARTER)) / HOUR
    assert hours <= 9, hours  # before 18:00, hours before the night's quiet hours


def test_busy_evenings_read_every_quarter_hour_are_not_a_leak() -> None:
    # Once a week an evening of cooking, dishes and showers keeps every quarter hour running
    # for three hours (17-20): a streak of busy hours, not a leak.
    rng = random.Random(11)
    intervals = quarter_hours(42, rng)
    busy = []
    for iv in intervals:
        q = (iv.ts - MONDAY) // QUARTER - 1
        day, hour = q // 96, (q // 4) % 24
        if day % 7 == 3 and 17 <= hour < 20 and iv.value < 1.0:
            iv = Interval(iv.ts, iv.seconds, round(rng.uniform(1.0, 4.0), 1))
        busy.append(iv)
    assert leak_detected_at(busy) is None


def test_the_profile_learns_how_low_each_hour_falls() -> None:
    # per local hour, how often the hour's lowest quarter hour stays at or above each level
    profile, ctx = MeterProfile(), MeterContext()
    for q in range(14 * 96):
        hour = (q // 4) % 24
        use = 0.0 if hour < 6 else (3.0 if q % 4 == 0 else 0.6) if hour == 10 else 2.0
        profile.learn(Interval(MONDAY + (q + 1) * QUARTER, QUARTER, use), ctx)
    # 10:00 never falls below 0.6 gal a quarter (2.4 gal/h), however much it draws; night
    # hours are still; noon passes 2 gal a quarter (8 gal/h) throughout
    shares = {h: [profile.floor_share(level, h) for level in range(4)] for h in (3, 10, 12)}
    assert [share > 0.9 for share in shares[10]] == [True, True, False, False]
    assert shares[10][2:] == [0.0, 0.0]
    assert shares[3] == [0.0, 0.0, 0.0, 0.0]
    assert [share > 0.9 for share in shares[12]] == [True, True, True, False]
