"""The invariants the detectors' quick exits rely on.

The bank works an interval's facts out once (`detectors.base.Facts`), and some detectors skip
work an ordinary interval does not need: the burst detector works out no bar for flow under
the class's floor, the spike detector none under `MIN_SPIKE_RATE`, the stuck-reading detector
does not judge a run of one. Each of these is exact only while what it skips could not have
mattered; these tests say so, so that a change to a bar that breaks it fails here.
"""

from __future__ import annotations

import random

import pytest

from detectors.base import Facts, Interval, MeterContext
from detectors.burst import burst_bar
from detectors.config import THRESHOLDS, thresholds_for
from detectors.profile import MeterProfile, slot_of
from detectors.spike import MIN_SPIKE_RATE, Spike
from detectors.stuck import MIN_INTERVALS

HOUR = 3600
START = 1_767_225_600  # 2026-01-01T00:00:00Z, a Thursday


def _learned_profiles(customer_class: str, seed: int) -> list[tuple[Interval, MeterProfile]]:
    """Profiles of a meter of very different sizes at many points of its history."""
    rng = random.Random(seed)
    ctx = MeterContext(customer_class)
    scale = rng.choice([0.05, 1.0, 20.0, 200.0])
    profile = MeterProfile()
    seen = []
    for h in range(24 * 12):
        use = 0.0 if h % 24 < 5 else rng.choice([0.0, 1.0, 6.0, 15.0, 40.0]) * scale
        iv = Interval(START + (h + 1) * HOUR, HOUR, use)
        profile.observe_peak(iv)
        profile.learn(iv, ctx)
        if h % 7 == 0:
            seen.append((iv, profile))
    return seen


@pytest.mark.parametrize("customer_class", sorted(THRESHOLDS))
def test_no_burst_bar_is_below_the_class_floor(customer_class: str) -> None:
    """`Burst.update` takes flow under the class's `burst_min_rate` as below the bar without
    working the bar out."""
    floor = thresholds_for(customer_class).burst_min_rate
    ctx = MeterContext(customer_class)
    for seed in range(4):
        for iv, profile in _learned_profiles(customer_class, seed):
            for value in (0.0, floor / 2, floor, floor * 3):
                probe = Interval(iv.ts + HOUR, HOUR, value)
                assert burst_bar(probe, ctx, profile) >= floor


@pytest.mark.parametrize("customer_class", sorted(THRESHOLDS))
def test_no_spike_bar_is_below_the_minimum_spike_rate(customer_class: str) -> None:
    """`Spike.is_spike` takes flow under `MIN_SPIKE_RATE` as no spike without working the bar
    out: no bar may be lower (the class's physical maximum included)."""
    assert thresholds_for(customer_class).max_rate >= MIN_SPIKE_RATE
    ctx = MeterContext(customer_class)
    for seed in range(4):
        for iv, profile in _learned_profiles(customer_class, seed):
            bar = Spike().is_spike(Interval(iv.ts + HOUR, HOUR, 1e9), ctx, profile)
            assert bar >= MIN_SPIKE_RATE


def test_a_run_of_one_value_is_never_a_stuck_reading() -> None:
    """`StuckReading.update` reports nothing at the first interval of a run."""
    assert MIN_INTERVALS > 1


def test_facts_agree_with_the_profile_slots_at_any_offset() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        ts = START + rng.randrange(0, 400 * 86_400, 900)
        seconds = rng.choice([900, 3600, 7200])
        offset = rng.choice([-6 * HOUR, -5 * HOUR, 0, 3 * HOUR + 1800, 10 * HOUR])
        at = Facts(Interval(ts, seconds, 2.5), MeterContext("commercial", utc_offset_s=offset))
        assert at.start == ts - seconds
        assert at.local_start == ts - seconds + offset
        assert at.slot == slot_of(ts - seconds, offset)
        assert at.hour == at.slot % 24
        assert at.rate == Interval(ts, seconds, 2.5).rate
        assert at.limits is thresholds_for("commercial")
