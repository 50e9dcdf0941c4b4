"""One check-suite over every detector, and the detectors against a labelled stream."""

from __future__ import annotations

import copy
import json
import pickle
import random
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from river import stats

from detectors.bank import DetectorBank, default_detectors
from detectors.base import Detector, Interval, MeterContext
from detectors.profile import MeterProfile, slot_of, weekday_of
from detectors.register import RegisterConverter
from detectors.reverse_flow import ReverseFlow
from simulator import SimulationConfig, write_scenario
from simulator.scoring import score_flags
from stream.offline import file_readings, index_from_files, run_offline

HOUR = 3600
START = 1_767_225_600  # 2026-01-01T00:00:00Z, a Thursday


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


def run(
    detector: Detector, intervals: list[Interval], ctx: MeterContext, profile: MeterProfile
) -> list:
    found = []
    for iv in intervals:
        findings = detector.update(iv, ctx, profile)
        found.append(
            [(f.kind, f.started_at, round(f.score, 9), f.severity, f.evidence) for f in findings]
        )
        profile.learn(iv, ctx)
        profile.observe_peak(iv)
    return found


@pytest.fixture(params=[type(d) for d in default_detectors()], ids=lambda c: c.__name__)
def detector_class(request: pytest.FixtureRequest) -> type[Detector]:
    return request.param


def test_pickle_round_trip_mid_stream_gives_identical_results(
    detector_class: type[Detector],
) -> None:
    ctx = MeterContext("residential")
    stream = household(days=12, seed=1, leak_from_day=8)
    expected = run(detector_class(), stream, ctx, MeterProfile())

    detector, profile = detector_class(), MeterProfile()
    first = run(detector, stream[:200], ctx, profile)
    detector, profile = pickle.loads(pickle.dumps((detector, profile)))
    assert first + run(detector, stream[200:], ctx, profile) == expected


def test_state_is_plain_and_independent_of_copies(detector_class: type[Detector]) -> None:
    ctx = MeterContext("residential")
    detector, profile = detector_class(), MeterProfile()
    run(detector, household(days=9, seed=2, leak_from_day=6), ctx, profile)
    state = detector.__getstate__()
    snapshot = copy.deepcopy(state)
    run(detector, household(days=2, seed=3, leak_from_day=0), ctx, profile)
    assert state == snapshot, "__getstate__ must return values the detector never mutates"
    assert len(pickle.dumps(state)) < 512


def test_same_input_same_output(detector_class: type[Detector]) -> None:
    ctx = MeterContext("residential")
    stream = household(days=10, seed=4, leak_from_day=7)
    assert run(detector_class(), stream, ctx, MeterProfile()) == run(
        detector_class(), stream, ctx, MeterProfile()
    )


def test_the_profile_follows_rivers_exponentially_weighted_statistics() -> None:
    """A slot's mean and variance are River's EWMean and EWVar with the same weight (the
    profile starts as a plain mean, whose influence has long faded after 200 values)."""
    profile = MeterProfile(learn_rate=0.1)
    mean, var = stats.EWMean(0.1), stats.EWVar(0.1)
    rng = random.Random(5)
    day = 0
    seen = 0
    while seen < 200:  # the 07:00 slot of 200 working days
        start = START + day * 86_400 + 7 * HOUR
        day += 1
        if weekday_of(start, 0) >= 5:
            continue
        value = rng.uniform(0, 30)
        profile.learn(Interval(start + HOUR, HOUR, value), MeterContext())
        mean.update(value)
        var.update(value)
        seen += 1
    slot = slot_of(START + 7 * HOUR, 0)
    assert profile.mean_at(slot) == pytest.approx(mean.get(), rel=1e-4)
    assert profile.std_at(slot) ** 2 == pytest.approx(var.get(), rel=1e-3)


def test_reverse_flow_holds_through_short_breaks() -> None:
    ctx, profile, detector = MeterContext(), MeterProfile(), ReverseFlow()
    values = [1.0, -2.0, 1.0, -1.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    held = [
        bool(detector.update(Interval(START + (i + 1) * HOUR, HOUR, v), ctx, profile))
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
    for iv in household(days=9, seed=6):
        bank.update(iv, ctx)
    restored = pickle.loads(pickle.dumps(bank))
    assert restored.kinds == bank.kinds
    more = household(days=12, seed=7, leak_from_day=10)[-72:]
    assert [bank.update(iv, ctx).keys() for iv in more] == [
        restored.update(iv, ctx).keys() for iv in more
    ]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, dict]:
    config = SimulationConfig(meters=150, days=28, seed=21)
    paths = write_scenario(tmp_path_factory.mktemp("labelled"), config)
    key = json.loads(Path(paths["answer_key"]).read_text())
    tz = ZoneInfo(config.timezone)
    index = index_from_files(paths["accounts"], paths["meters"], tz)
    flags = run_offline(file_readings(paths["reads"]), index, tz)
    return flags, key


def test_every_kind_beats_chance_on_a_labelled_stream(labelled: tuple[list, dict]) -> None:
    """Each kind present in the scenario is found more often than not, and most of its flags
    are right: far above what flagging meters at random would score."""
    flags, key = labelled
    scores = score_flags(key["labels"]["anomalies"], flags)
    for kind, score in scores.items():
        if score.labels:
            assert score.recall is not None and score.recall >= 0.5, (kind, score)
        if score.flags >= 3:
            assert score.precision is not None and score.precision >= 0.5, (kind, score)


def test_no_leak_on_round_the_clock_users_and_no_false_flow_at_rollovers(
    labelled: tuple[list, dict],
) -> None:
    flags, key = labelled
    round_the_clock = set(key["labels"]["24/7 users"])
    assert not [f for f in flags if f.kind == "leak" and f.meter_id in round_the_clock]
    register_meters = {m["meter_id"] for m in key["labels"]["register_meters"]}
    rolled = {r["meter_id"] for r in key["labels"]["rollovers"]}
    assert rolled <= register_meters
    assert not [f for f in flags if f.kind in ("spike", "reverse_flow") and f.meter_id in rolled]


# --- feedback: expected use teaches the meter's detectors ---------------------------------------


def leaks_found(intervals: list[Interval], bank: DetectorBank, ctx: MeterContext) -> list[int]:
    """Indices of the intervals at which the bank reports a leak."""
    return [i for i, iv in enumerate(intervals) if "leak" in bank.update(iv, ctx)]


def with_cooler(intervals: list[Interval], from_day: int, rate: float) -> list[Interval]:
    """The household's intervals with `rate` gal/h of continuous flow from `from_day` on."""
    return [
        Interval(iv.ts, iv.seconds, iv.value + (rate if i >= from_day * 24 else 0.0))
        for i, iv in enumerate(intervals)
    ]


def test_a_dismissed_leak_teaches_the_bank_but_a_bigger_leak_still_alarms() -> None:
    from detectors.feedback import from_dismissed_flag

    ctx = MeterContext("residential")
    base = [iv for iv in household(28, seed=11) if iv.value >= 0]
    # an evaporative cooler runs 6 gal/h from day 8; from day 18 a 4 gal/h leak comes on top
    flows = [
        Interval(
            iv.ts,
            iv.seconds,
            iv.value + (6.0 if i >= 8 * 24 else 0.0) + (4.0 if i >= 18 * 24 else 0.0),
        )
        for i, iv in enumerate(base)
    ]
    bank = DetectorBank()
    leak_at: list[int] = []
    for i, iv in enumerate(flows):
        found = bank.update(iv, ctx)
        if "leak" in found:
            leak_at.append(i)
            if bank.expected is None:  # staff dismiss the first flag as expected use
                bank.expect(from_dismissed_flag("leak", found["leak"].details, None))
    first = leak_at[0]
    assert 8 * 24 <= first < 10 * 24, "the cooler looks like a leak until it is taught"
    cleared = [i for i in leak_at if i < 18 * 24]
    assert max(cleared) < first + 24, "after the dismissal the cooler no longer alarms"
    assert any(i >= 18 * 24 for i in leak_at), "a leak beyond the cooler still alarms"
    # the allowance survives a snapshot, as Bytewax takes them
    assert pickle.loads(pickle.dumps(bank)).expected == bank.expected


def seed_two_households(conn: psycopg.Connection, valid_from: str) -> None:
    """Customers C1 and C2, each with one active residential account (A1, A2), service point
    (S1, S2) and meter (M1, M2) installed from `valid_from`."""
    conn.execute("INSERT INTO customers (customer_id, name) VALUES ('C1', 'Ada'), ('C2', 'Bo')")
    conn.execute(
        """INSERT INTO accounts (account_id, customer_id, status, customer_class, cycle_day)
           VALUES ('A1', 'C1', 'active', 'residential', 1),
                  ('A2', 'C2', 'active', 'residential', 1)"""
    )
    conn.execute("INSERT INTO service_points VALUES ('S1'), ('S2')")
    conn.execute("INSERT INTO meters VALUES ('M1'), ('M2')")
    conn.execute(
        """INSERT INTO meter_assignments (meter_id, service_point_id, account_id, valid_from)
           VALUES ('M1', 'S1', 'A1', %(from)s), ('M2', 'S2', 'A2', %(from)s)""",
        {"from": valid_from},
    )


def test_dismissed_flags_and_declarations_reach_the_bank_from_the_database(
    database_url: str,
) -> None:

    from stream.feedback import FeedbackCache, load_allowances

    with psycopg.connect(database_url) as conn:
        seed_two_households(conn, "2025-01-01")
        # staff dismissed M1's leak as expected use (an evaporative cooler)
        conn.execute(
            """INSERT INTO flags (meter_id, account_id, kind, started_at, detected_at, severity,
                                  score, evidence, details, status, expected_use)
               VALUES ('M1', 'A1', 'leak', '2026-01-09', '2026-01-09 06:00', 'medium', 0.7,
                       'water kept running', '{"leak_rate": 5.5, "lowest_flow": 5.8}',
                       'dismissed', true)"""
        )
        conn.commit()
        cache = FeedbackCache(database_url, refresh_s=0.0)
        assert set(cache.allowances()) == {"M1"}
        # the customer of A2 declares irrigation for every meter of the account, mornings
        conn.execute(
            """INSERT INTO declared_usage (account_id, kind, description, rate_gph, schedule,
                                           declared_by)
               VALUES ('A2', 'irrigation', 'drip line', 300, '5-7 am', 'customer:A2')"""
        )
        conn.commit()
        allowances = load_allowances(conn)
    assert cache.allowance_for("M2") == allowances["M2"]  # reloaded: the feedback changed
    assert [h for h in range(24) if allowances["M2"][h]] == [5, 6]
    assert allowances["M1"][3] == pytest.approx(5.8 * 1.1, abs=0.01)

    # the bank of a meter whose cooler was dismissed (from day 8) stays quiet about it
    ctx = MeterContext("residential")
    cooler = with_cooler([iv for iv in household(24, seed=11) if iv.value >= 0], 8, 5.8)
    bank = DetectorBank()
    for iv in cooler[: 8 * 24]:
        bank.update(iv, ctx)
    bank.expect(cache.allowance_for("M1"))
    assert leaks_found(cooler[8 * 24 :], bank, ctx) == []
    untaught = DetectorBank()
    assert leaks_found(cooler, untaught, ctx), "without the feedback the cooler alarms"


def test_the_dataflow_feeds_declared_use_to_the_meter_detectors(
    database_url: str, tmp_path: Path
) -> None:
    """Two meters with the same evaporative cooler (6 gal/h from day 8): the one whose
    customer declared it raises no leak flag through the dataflow; the other does."""
    from datetime import UTC, datetime

    from pipeline_fixtures import run_file

    with psycopg.connect(database_url) as conn:
        seed_two_households(conn, "2025-12-01")
        conn.execute(
            """INSERT INTO declared_usage (account_id, meter_id, kind, description, rate_gph,
                                           declared_by)
               VALUES ('A2', 'M2', 'cooling', 'evaporative cooler', 6.5, 'customer:A2')"""
        )
    cooler = with_cooler([iv for iv in household(16, seed=11) if iv.value >= 0], 8, 6.0)
    reads = tmp_path / "reads.csv"
    with reads.open("w") as handle:
        handle.write("meter_id,ts,value\n")
        for iv in cooler:
            ts = datetime.fromtimestamp(iv.ts, UTC).isoformat()
            handle.write(f"M1,{ts},{iv.value}\nM2,{ts},{iv.value}\n")
    run_file(database_url, reads)
    with psycopg.connect(database_url) as conn:
        leaks = conn.execute(
            "SELECT meter_id, count(*) FROM flags WHERE kind = 'leak' GROUP BY meter_id"
        ).fetchall()
    assert dict(leaks) == {"M1": 1}
