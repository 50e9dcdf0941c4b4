"""One check-suite over every detector: pickling, determinism, small state."""

from __future__ import annotations

import copy
import pickle
import random

import pytest

from detectors.bank import DetectorBank, default_detectors
from detectors.base import Detector, Interval, MeterContext
from detectors.leak import ContinuousFlowLeak
from detectors.register import RegisterConverter
from detectors.reverse_flow import ReverseFlow

HOUR = 3600
START = 1_767_225_600  # 2026-01-01T00:00:00Z


def household(days: int, seed: int, leak_from_day: int | None = None) -> list[Interval]:
    """Hourly use of a household: quiet nights, busy mornings and evenings, some noise."""
    rng = random.Random(seed)
    intervals = []
    for h in range(days * 24):
        hour = h % 24
        use = 0.0 if hour < 5 else rng.choice([0.0, 0.0, 2.0, 6.0, 15.0])
        if 6 <= hour <= 8 or 18 <= hour <= 21:
            use += rng.uniform(5, 25)
        if rng.random() < 0.03:
            use = -rng.uniform(0.5, 3)  # the odd backflow hour
        if leak_from_day is not None and h >= leak_from_day * 24:
            use += 1.5
        intervals.append(Interval(START + (h + 1) * HOUR, HOUR, round(use, 1)))
    return intervals


def run(detector: Detector, intervals: list[Interval], ctx: MeterContext) -> list:
    return [
        [
            (f.kind, f.started_at, round(f.score, 9), f.severity, f.evidence)
            for f in detector.update(iv, ctx)
        ]
        for iv in intervals
    ]


@pytest.fixture(params=[type(d) for d in default_detectors()], ids=lambda c: c.__name__)
def detector_class(request: pytest.FixtureRequest) -> type[Detector]:
    return request.param


def test_pickle_round_trip_mid_stream_gives_identical_results(
    detector_class: type[Detector],
) -> None:
    ctx = MeterContext("residential")
    stream = household(days=10, seed=1, leak_from_day=6)
    straight = detector_class()
    expected = run(straight, stream, ctx)

    resumed = detector_class()
    first = run(resumed, stream[:150], ctx)
    resumed = pickle.loads(pickle.dumps(resumed))
    assert first + run(resumed, stream[150:], ctx) == expected


def test_state_is_plain_and_independent_of_copies(detector_class: type[Detector]) -> None:
    ctx = MeterContext("residential")
    detector = detector_class()
    run(detector, household(days=3, seed=2), ctx)
    state = detector.__getstate__()
    snapshot = copy.deepcopy(state)
    run(detector, household(days=1, seed=3), ctx)
    assert state == snapshot, "__getstate__ must return values the detector never mutates"
    assert len(pickle.dumps(state)) < 2048


def test_same_input_same_output(detector_class: type[Detector]) -> None:
    ctx = MeterContext("residential")
    stream = household(days=8, seed=4, leak_from_day=5)
    assert run(detector_class(), stream, ctx) == run(detector_class(), stream, ctx)


def test_the_leak_detector_finds_a_steady_leak_and_not_the_household() -> None:
    ctx = MeterContext("residential")
    clean = [f for iv in household(days=20, seed=5) for f in ContinuousFlowLeak().update(iv, ctx)]
    detector = ContinuousFlowLeak()
    found = [
        f for iv in household(days=20, seed=5, leak_from_day=10) for f in detector.update(iv, ctx)
    ]
    assert not clean
    assert found and found[0].kind == "leak"
    assert found[0].started_at >= START + 10 * 24 * HOUR - HOUR


def test_reverse_flow_holds_through_short_breaks() -> None:
    ctx = MeterContext()
    detector = ReverseFlow()
    values = [1.0, -2.0, 1.0, -1.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    held = [
        bool(detector.update(Interval(START + (i + 1) * HOUR, HOUR, v), ctx))
        for i, v in enumerate(values)
    ]
    assert held == [False, True, True, True, True, True, True, False, False]


def test_a_register_that_runs_backwards_a_little_is_reverse_flow_not_a_reset() -> None:
    conv = RegisterConverter()
    conv.convert(0, 5_000.0)
    assert conv.convert(3600, 4_998.0) == (-2.0, None)


def test_a_register_reset_gives_no_consumption_and_a_rollover_flag() -> None:
    conv = RegisterConverter()
    conv.convert(0, 52_000.0)
    delta, finding = conv.convert(3600, 10.0)
    assert delta is None
    assert finding is not None and finding.details["reset"] is True


def test_the_bank_keeps_every_detector_through_a_snapshot() -> None:
    bank = DetectorBank()
    ctx = MeterContext()
    for iv in household(days=3, seed=6):
        bank.update(iv, ctx)
    restored = DetectorBank.__new__(DetectorBank)
    restored.__setstate__(bank.__getstate__())
    assert restored.kinds == bank.kinds
    more = household(days=4, seed=7)[-24:]
    assert [bank.update(iv, ctx).keys() for iv in more] == [
        restored.update(iv, ctx).keys() for iv in more
    ]
