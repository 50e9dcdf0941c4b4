"""The simulator: deterministic, true to the SPEC's file contracts, its labels match its data,
and its answer key's counts survive an independent recount from the written files."""

from __future__ import annotations

import csv
import doctest
import itertools
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import simulator.config
import simulator.simulation
from simulator import (
    ACCOUNT_COLUMNS,
    ANOMALY_KINDS,
    METER_COLUMNS,
    READ_COLUMNS,
    REJECT_REASONS,
    Label,
    Simulation,
    SimulationConfig,
    write_scenario,
)

GAL_PER_FT3 = 7.48052
# Across the switch to daylight saving time in Chicago (2026-03-08), so local offsets change.
START = datetime(2026, 3, 1, tzinfo=UTC)
CONFIG = SimulationConfig(meters=150, days=21, seed=3, start=START)
CONFIG_15 = SimulationConfig(meters=60, days=12, interval_minutes=15, seed=5, start=START)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_scenario(tmp_path_factory.mktemp("scenario"), CONFIG)


@pytest.fixture(scope="module")
def answer_key(scenario: dict[str, Path]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(scenario["answer_key"].read_text(encoding="utf-8"))
    return data


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


# --- an independent reading of the files, by the SPEC's rules ---------------------------------


def reject_reason(row: dict[str, str]) -> str | None:
    """Why the pipeline must reject this row, or None when it is well formed."""
    if not row["meter_id"]:
        return "missing_meter_id"
    try:
        ts = datetime.fromisoformat(row["ts"])
    except ValueError:
        return "unparseable_timestamp"
    if ts.tzinfo is None:
        return "timestamp_without_offset"
    if row["value"] == "":
        return "missing_value"
    try:
        value = float(row["value"])
    except ValueError:
        return "non_numeric_value"
    if not math.isfinite(value):
        return "non_finite_value"
    if abs(value) > 1_000_000:
        return "absurd_value"
    if row["unit"] not in ("", "gal", "ft3", "m3", "kWh"):
        return "unknown_unit"
    if row["kind"] not in ("", "interval", "register"):
        return "unknown_kind"
    return None


@dataclass
class Spans:
    """A meter's assignments from meters.csv as instants."""

    spans: list[tuple[datetime, datetime | None]]

    def outcome(self, ts: datetime) -> str:
        covering = [s for s in self.spans if s[0] <= ts and (s[1] is None or ts < s[1])]
        if len(covering) == 1:
            return "stored"
        if len(covering) > 1:
            return "ambiguous_assignment"
        if all(end is not None and ts >= end for _, end in self.spans):
            return "retired_meter"
        assert all(ts < start for start, _ in self.spans), "a hole between assignments"
        return "not_yet_installed"


def recount(scenario: dict[str, Path]) -> tuple[dict[str, Any], Counter[str]]:
    spans: dict[str, Spans] = defaultdict(lambda: Spans([]))
    for a in read_csv(scenario["meters"])[1]:
        end = datetime.fromisoformat(a["valid_to"]) if a["valid_to"] else None
        spans[a["meter_id"]].spans.append((datetime.fromisoformat(a["valid_from"]), end))
    rejected: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    seen: set[tuple[str, datetime]] = set()
    well_formed = 0
    _, rows = read_csv(scenario["reads"])
    for row in rows:
        reason = reject_reason(row)
        if reason is not None:
            rejected[reason] += 1
            continue
        well_formed += 1
        key = (row["meter_id"], datetime.fromisoformat(row["ts"]).astimezone(UTC))
        if key in seen:
            continue
        seen.add(key)
        outcomes[spans[key[0]].outcome(key[1]) if key[0] in spans else "unknown_meter"] += 1
    unmatched = {r: outcomes[r] for r in ANSWER_UNMATCHED}
    counts = {
        "deliveries": len(rows),
        "stored": outcomes["stored"],
        "rejected": sum(rejected.values()),
        "unmatched": {"total": sum(unmatched.values()), **unmatched},
        "duplicates": well_formed - len(seen),
    }
    return counts, rejected


ANSWER_UNMATCHED = ("unknown_meter", "retired_meter", "not_yet_installed", "ambiguous_assignment")


# --- reads as series ----------------------------------------------------------------------------


@dataclass
class Series:
    """One meter's clean reads by instant, with interval consumption in gallons."""

    kind: str
    unit: str
    values: dict[datetime, float]  # as reported (register or delta, in the meter's unit)
    texts: dict[datetime, str]

    def gal(self, v: float) -> float:
        return v * GAL_PER_FT3 if self.unit == "ft3" else v

    def deltas(self, step: timedelta, modulus: float | None = None) -> dict[datetime, float]:
        """Consumption per interval (gal); for registers, from consecutive readings."""
        if self.kind != "register":
            return {t: self.gal(v) for t, v in self.values.items()}
        out = {}
        for t, v in self.values.items():
            before = self.values.get(t - step)
            if before is None:
                continue
            d = v - before
            if d < 0 and modulus is not None:
                d += modulus
            out[t] = self.gal(d)
        return out


def series_of(rows: list[dict[str, str]]) -> dict[str, Series]:
    out: dict[str, Series] = {}
    for r in rows:
        s = out.get(r["meter_id"])
        if s is None:
            s = out[r["meter_id"]] = Series(r["kind"] or "interval", r["unit"] or "gal", {}, {})
        t = datetime.fromisoformat(r["ts"]).astimezone(UTC)
        s.values[t] = float(r["value"])
        s.texts[t] = r["value"]
    return out


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return Simulation(CONFIG)


@pytest.fixture(scope="module")
def clean(sim: Simulation) -> dict[str, Series]:
    return series_of(list(sim.clean_reads()))


# --- determinism and contracts ------------------------------------------------------------------


def test_same_seed_gives_the_same_files(tmp_path: Path) -> None:
    cfg = SimulationConfig(meters=40, days=9, seed=21, start=START)
    first = write_scenario(tmp_path / "a", cfg)
    second = write_scenario(tmp_path / "b", cfg)
    for name in ("accounts", "meters", "reads", "answer_key"):
        assert first[name].read_bytes() == second[name].read_bytes(), name
    other = write_scenario(
        tmp_path / "c", SimulationConfig(meters=40, days=9, seed=22, start=START)
    )
    assert other["reads"].read_bytes() != first["reads"].read_bytes()


def test_files_follow_the_spec_contracts(scenario: dict[str, Path]) -> None:
    columns, accounts = read_csv(scenario["accounts"])
    assert tuple(columns) == ACCOUNT_COLUMNS
    assert len({a["account_id"] for a in accounts}) == len(accounts)
    for a in accounts:
        assert a["status"] in ("active", "inactive")
        assert a["customer_class"] in ("residential", "multifamily", "commercial", "irrigation")
        assert 1 <= int(a["cycle_day"]) <= 28
        assert a["phone"] == "" or re.fullmatch(r"\+1\d{3}55501\d{2}", a["phone"])
        assert a["email"] == "" or re.fullmatch(r"[a-z0-9.]+@example\.(com|org)", a["email"])
        assert a["sms_opt_in"] in ("true", "false") and a["email_opt_in"] in ("true", "false")
        for threshold in (a["daily_alert"], a["period_alert"]):
            assert threshold == "" or float(threshold) > 0
        assert a["account_id"].startswith("0")  # identifiers are text, leading zeros and all

    columns, meters = read_csv(scenario["meters"])
    assert tuple(columns) == METER_COLUMNS
    account_ids = {a["account_id"] for a in accounts}
    for m in meters:
        assert m["account_id"] in account_ids
        start = datetime.fromisoformat(m["valid_from"])
        assert start.tzinfo is not None
        if m["valid_to"]:
            assert datetime.fromisoformat(m["valid_to"]) > start

    columns, reads = read_csv(scenario["reads"])
    assert tuple(columns) == READ_COLUMNS
    well_formed = [r for r in reads if reject_reason(r) is None]
    assert {r["unit"] for r in well_formed} == {"", "gal", "ft3"}
    assert {r["kind"] for r in well_formed} == {"", "interval", "register"}
    assert {r["quality"] for r in well_formed} == {"", "A", "E"}
    offsets = {r["ts"][19:] for r in well_formed}
    assert {"Z", "+00:00", "-06:00", "-05:00"} <= offsets


@pytest.mark.parametrize("module", [simulator.config, simulator.simulation])
def test_docstring_examples(module: ModuleType) -> None:
    # pytest collects doctests from tests/ and detectors/ only; run the simulator's here.
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_config_rejects_nonsense_with_the_fix() -> None:
    with pytest.raises(ValueError, match="divisor of a day"):
        SimulationConfig(interval_minutes=7)
    with pytest.raises(ValueError, match="tz-aware"):
        SimulationConfig(start=datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="floor_to_interval"):
        SimulationConfig(start=datetime(2026, 3, 1, 12, 7, tzinfo=UTC))
    with pytest.raises(ValueError, match="unknown kinds"):
        SimulationConfig(anomaly_weights={"leek": 1.0})
    with pytest.raises(ValueError, match="between 0 and 1"):
        SimulationConfig(duplicate_fraction=1.5)


# --- the answer key ------------------------------------------------------------------------------


def test_answer_key_counts_survive_an_independent_recount(
    scenario: dict[str, Path], answer_key: dict[str, Any]
) -> None:
    counts, rejected = recount(scenario)
    assert counts == answer_key["counts"]
    assert dict(rejected) == {r: n for r, n in answer_key["rejected_reasons"].items() if n}
    assert set(answer_key["rejected_reasons"]) == set(REJECT_REASONS)
    # Every kind of defect is really there.
    assert all(answer_key["rejected_reasons"].values())
    assert all(answer_key["counts"]["unmatched"][r] for r in ANSWER_UNMATCHED)
    assert answer_key["counts"]["duplicates"] > 0.02 * answer_key["counts"]["stored"]
    _, reads = read_csv(scenario["reads"])
    for entry in answer_key["rejected_rows"]:
        assert reject_reason(reads[entry["row"] - 1]) == entry["reason"]


def test_duplicates_include_reformatted_timestamps_and_exception_reads(
    scenario: dict[str, Path], answer_key: dict[str, Any]
) -> None:
    _, reads = read_csv(scenario["reads"])
    texts: dict[tuple[str, datetime], set[str]] = defaultdict(set)
    deliveries: Counter[tuple[str, datetime]] = Counter()
    for r in reads:
        if reject_reason(r) is None:
            key = (r["meter_id"], datetime.fromisoformat(r["ts"]).astimezone(UTC))
            texts[key].add(r["ts"])
            deliveries[key] += 1
    assert any(len(t) > 1 for t in texts.values()), "no duplicate written with another offset"
    unknown = {e["meter_id"] for e in answer_key["exceptions"]["unknown_meters"]}
    assert any(n > 1 and key[0] in unknown for key, n in deliveries.items())
    assert answer_key["delivery"]["duplicates_adjacent"] > 0
    assert answer_key["delivery"]["duplicates_later"] > 0
    assert answer_key["delivery"]["late"] > 0 and answer_key["delivery"]["shuffled"] > 0


def test_reads_arrive_mostly_in_order_some_late(scenario: dict[str, Path]) -> None:
    _, reads = read_csv(scenario["reads"])
    stamps = [
        datetime.fromisoformat(r["ts"]).astimezone(UTC) for r in reads if reject_reason(r) is None
    ]
    backwards = sum(1 for a, b in itertools.pairwise(stamps) if b < a)
    assert 0 < backwards < 0.1 * len(stamps)
    # Something arrives more than a day behind the newest read already delivered.
    newest = stamps[0]
    late = 0
    for t in stamps:
        newest = max(newest, t)
        late += newest - t > timedelta(days=1)
    assert late > 0


def test_late_gap_reads_come_at_the_end(
    scenario: dict[str, Path], answer_key: dict[str, Any]
) -> None:
    late = [
        lb
        for lb in answer_key["labels"]["anomalies"]
        if lb["kind"] == "gap" and lb["details"]["late"]
    ]
    assert late, "the scenario has no late gap"
    _, reads = read_csv(scenario["reads"])
    window_end = datetime.fromisoformat(answer_key["window"]["end"])
    for lb in late:
        start, end = (datetime.fromisoformat(lb[x]) for x in ("start", "end"))
        rows = [
            i
            for i, r in enumerate(reads)
            if r["meter_id"] == lb["meter_id"]
            and reject_reason(r) is None
            and start <= datetime.fromisoformat(r["ts"]) <= end
        ]
        assert len({reads[i]["ts"] for i in rows}) >= lb["details"]["intervals"]
        # After every read of the window's last day that was delivered on time.
        last_day = [
            i
            for i, r in enumerate(reads)
            if reject_reason(r) is None
            and datetime.fromisoformat(r["ts"]) > window_end - timedelta(hours=1)
        ]
        assert min(rows) > min(last_day)


# --- labels against data ------------------------------------------------------------------------


def test_every_kind_is_labelled_once_per_meter_after_clean_history(sim: Simulation) -> None:
    labels = sim.labels()
    assert {lb.kind for lb in labels} == set(ANOMALY_KINDS)
    assert len({lb.meter_id for lb in labels}) == len(labels)
    earliest = sim.start + timedelta(days=CONFIG.anomaly_earliest_start_days)
    assignments = {(m["meter_id"], m["account_id"]) for m in sim.meter_assignments()}
    for lb in labels:
        assert lb.start >= earliest, lb
        assert lb.start <= sim.end
        assert lb.end is None or lb.start <= lb.end <= sim.end
        assert (lb.meter_id, lb.account_id) in assignments
    share = len(labels) / CONFIG.meters
    assert 0.12 <= share <= 0.25


def _span(sim: Simulation, lb: Label) -> list[datetime]:
    end = lb.end or sim.end
    out, t = [], lb.start
    while t <= end:
        out.append(t)
        t += sim.interval
    return out


def _local_hour(sim: Simulation, t: datetime) -> int:
    return (t - sim.interval).astimezone(ZoneInfo(CONFIG.timezone)).hour


def test_labels_match_the_data(sim: Simulation, clean: dict[str, Series]) -> None:
    checked = check_labels(sim, clean)
    assert set(checked) == set(ANOMALY_KINDS)


def check_labels(sim: Simulation, clean: dict[str, Series]) -> Counter[str]:
    """Asserts that each label's meter shows what the label says; counts labels by kind."""
    step = sim.interval
    hours = step / timedelta(hours=1)
    late = series_of(list(sim.late_reads()))
    registers = {r["meter_id"]: r for r in sim.register_meters()}
    status = {a["account_id"]: a["status"] for a in sim.accounts()}
    info = sim.meter_info()
    checked: Counter[str] = Counter()
    for lb in sim.labels():
        assert info[lb.meter_id]["role"] == "regular"
        assert info[lb.meter_id]["account_id"] == lb.account_id
        s = clean[lb.meter_id]
        span = _span(sim, lb)
        modulus = None
        if lb.kind == "rollover":
            modulus = float(lb.details["register_max"]) + (
                0.1 if "." in lb.details["register_max"] else 1
            )
        d = s.deltas(step, modulus)
        before = [d[t] for t in d if lb.start - timedelta(days=7) <= t < lb.start]
        # Checks against the history before the label need a day of it (the live demo's
        # anomalies start within hours).
        history = lb.start - sim.start >= timedelta(days=1)
        if lb.kind == "leak":
            rate = lb.details["rate_gal_per_hour"] * hours
            on_h = lb.details.get("on_hours", 1)
            cycle = on_h + lb.details.get("off_hours", 0)
            on = [t for t in span if int((t - lb.start) / timedelta(hours=1)) % cycle < on_h]
            on = [t for t in on if t in d]
            # What the reported numbers can resolve, in gallons: interval values are rounded
            # (half a step each); a register loses at most one count over the whole span.
            resolution = (1.0 if s.kind == "register" else 0.1) if s.unit == "gal" else 0.0
            if s.unit == "ft3":
                resolution = (0.1 if s.kind == "register" else 0.01) * GAL_PER_FT3
            slack = resolution if s.kind == "register" else resolution / 2 * len(on)
            assert sum(d[t] for t in on) >= rate * len(on) - slack - 1e-6
            if s.kind != "register":
                assert min(d[t] for t in on) >= rate - resolution / 2 - 1e-6
            night = [x for t, x in d.items() if t < lb.start and _local_hour(sim, t) < 5]
            if history:
                assert sum(1 for x in night if x == 0) > 0.5 * len(night), "no dry night before"
        elif lb.kind == "burst":
            assert all(d[t] >= 0.85 * lb.details["rate_gal_per_hour"] * hours for t in span)
        elif lb.kind == "stopped_meter":
            assert all(d[t] == 0 for t in span if t in d)
            assert sum(before) > 0 or not history
        elif lb.kind == "reverse_flow":
            assert all(s.values[t] < 0 for t in span)
            assert all(x >= 0 for x in before)
        elif lb.kind == "spike":
            others = [x for t, x in d.items() if t != lb.start]
            assert d[lb.start] >= 19 * max(others)
        elif lb.kind == "gap":
            assert not any(t in s.values for t in span)
            assert lb.start - step in s.values or lb.start - step <= sim.start
            assert lb.end is not None and (lb.end + step in s.values or lb.end >= sim.end)
            if lb.details["late"]:
                assert all(t in late[lb.meter_id].values for t in span)
        elif lb.kind == "rollover":
            prev, now = s.values[lb.start - step], s.values[lb.start]
            top = float(registers[lb.meter_id]["register_max"])
            assert registers[lb.meter_id]["register_max"] == lb.details["register_max"]
            assert now < prev and prev >= 0.99 * top and now <= 0.01 * top
            assert s.texts[lb.start - step] == lb.details["register_before"]
            assert s.texts[lb.start] == lb.details["register_after"]
        elif lb.kind == "inactive_usage":
            assert status[lb.account_id] == "inactive"
            assert all(x == 0 for t, x in d.items() if t < lb.start)
            assert d[lb.start] > 0
        elif lb.kind == "stuck_reading":
            assert {s.texts[t] for t in span if t in s.texts} == {lb.details["value"]}
            if lb.details["variant"] == "interval":
                assert float(lb.details["value"]) > 0
            assert (
                len({s.texts[t] for t in s.texts if lb.start - timedelta(days=1) <= t < lb.start})
                > 1
            )
        elif lb.kind == "usage_anomaly":
            day = [t for t in span if 7 <= _local_hour(sim, t) < 22]
            usual = [x for t, x in d.items() if t < lb.start and 7 <= _local_hour(sim, t) < 22]
            usual_mean = sum(usual) / len(usual)
            # Against an hour-of-week baseline, which takes a week of history.
            week = lb.start - sim.start >= timedelta(days=7)
            assert sum(d[t] for t in day) / len(day) >= 1.5 * usual_mean or not week
            # Not a leak: the night in between stays as dry as ever.
            nights = [d[t] for t in span if _local_hour(sim, t) < 5]
            assert not nights or min(nights) < 0.5 * lb.details["factor"] * usual_mean
        checked[lb.kind] += 1
    return checked


def test_round_the_clock_users_never_read_zero(
    sim: Simulation, clean: dict[str, Series], answer_key: dict[str, Any]
) -> None:
    users = sim.round_the_clock_meters()
    assert users and users == answer_key["labels"]["24/7 users"]
    accounts = {a["account_id"]: a for a in sim.accounts()}
    info = sim.meter_info()
    for meter in users:
        assert accounts[info[meter]["account_id"]]["customer_class"] == "commercial"
        assert info[meter]["anomaly"] is None
        deltas = clean[meter].deltas(sim.interval)
        assert len(deltas) == sim.intervals
        assert min(deltas.values()) > 0


def test_clean_meters_look_clean(sim: Simulation, clean: dict[str, Series]) -> None:
    info = sim.meter_info()
    step = sim.interval
    residential_quiet_zero = []
    for meter, i in info.items():
        if i["role"] != "regular" or i["anomaly"] is not None:
            continue
        s = clean[meter]
        # Every interval of the window, once.
        assert len(s.values) == sim.intervals, meter
        d = s.deltas(step)
        assert min(d.values()) >= 0, f"unlabelled reverse flow or register wrap on {meter}"
        if i["pattern"] == "residential":
            # The industry rule (24 h in a row at >= 1 gal/h) must not fire on a clean home.
            run = longest = 0
            for t in sorted(d):
                run = run + 1 if d[t] >= 1.0 else 0
                longest = max(longest, run)
            assert longest < 24, meter
            quiet = [x for t, x in d.items() if _local_hour(sim, t) < 5]
            residential_quiet_zero.append(sum(1 for x in quiet if x == 0) / len(quiet))
        if i["pattern"] == "irrigation":
            assert sum(1 for x in d.values() if x == 0) > 0.8 * len(d)
    # Most quiet hours are dry, not all (a flush, an ice maker).
    mean_dry = sum(residential_quiet_zero) / len(residential_quiet_zero)
    assert 0.75 < mean_dry < 0.99


def test_exchanges_and_overlaps_are_in_the_cis(sim: Simulation, answer_key: dict[str, Any]) -> None:
    rows = sim.meter_assignments()
    by_meter: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_meter[r["meter_id"]].append(r)
    for e in answer_key["exceptions"]["exchanges"]:
        (old,) = by_meter[e["old_meter_id"]]
        (new,) = by_meter[e["new_meter_id"]]
        assert old["service_point_id"] == new["service_point_id"]
        assert datetime.fromisoformat(old["valid_to"]) == datetime.fromisoformat(new["valid_from"])
    for e in answer_key["exceptions"]["ambiguous_overlaps"]:
        first, second = by_meter[e["meter_id"]]
        assert datetime.fromisoformat(second["valid_from"]) < datetime.fromisoformat(
            first["valid_to"]
        )
    for e in answer_key["exceptions"]["retired_meters"]:
        (row,) = by_meter[e["meter_id"]]
        assert datetime.fromisoformat(row["valid_to"]) < sim.start
    known = set(by_meter)
    assert not any(e["meter_id"] in known for e in answer_key["exceptions"]["unknown_meters"])


# --- the live feed ------------------------------------------------------------------------------


def test_reads_between_is_consistent_with_clean_reads() -> None:
    cfg = SimulationConfig(meters=30, days=4, seed=9, start=START)
    whole = list(Simulation(cfg).clean_reads())
    sim = Simulation(cfg)
    pieces: list[dict[str, str]] = []
    t = sim.start - timedelta(hours=5)
    step = timedelta(minutes=37)  # not a divisor of the interval: spans cut intervals anywhere
    while t < sim.end:
        pieces.extend(sim.reads_between(t, min(t + step, sim.end)))
        t += step
    assert pieces == whole
    assert len(whole) == sim.expected_clean_rows()
    # Past the window the meters keep reading.
    after = list(sim.reads_between(sim.end, sim.end + timedelta(hours=2)))
    assert len(after) >= 2 * 25


def test_demo_settings_start_anomalies_early_and_feed_in_small_steps() -> None:
    now = datetime(2026, 5, 4, 9, 41, 17, tzinfo=UTC)
    cfg = SimulationConfig.live(meters=300, history_days=3, now=now, seed=2)
    start = datetime(2026, 5, 1, 9, tzinfo=UTC)
    assert cfg.start == start
    sim = Simulation(cfg)
    labels = sim.labels()
    assert {"leak", "reverse_flow", "burst"} <= {lb.kind for lb in labels}
    # A usage anomaly waits for the next local morning, inactive usage for the first use.
    for lb in labels:
        late = lb.kind in ("usage_anomaly", "inactive_usage")
        assert lb.start <= start + timedelta(days=2 if late else 1, hours=1), lb
    # 7200x real time, a call every 100 ms: 12 simulated minutes per call. Fed that way, the
    # window holds each read exactly once. (How fast the feed is belongs to the demo's own
    # test: flags within a minute of start.)
    t, step, fed = start, timedelta(minutes=12), []
    while t < sim.end:
        fed.extend((r["meter_id"], r["ts"]) for r in sim.reads_between(t, t + step))
        t += step
    assert len(fed) == len(set(fed))
    assert len(fed) >= 300 * 24 * 3


# --- fifteen-minute reads -----------------------------------------------------------------------


def test_fifteen_minute_scenario_counts_and_labels(tmp_path: Path) -> None:
    paths = write_scenario(tmp_path, CONFIG_15)
    key = json.loads(paths["answer_key"].read_text(encoding="utf-8"))
    counts, _ = recount(paths)
    assert counts == key["counts"]
    sim = Simulation(CONFIG_15)
    clean = series_of(list(sim.clean_reads()))
    stamps = {t for s in clean.values() for t in s.values}
    assert {t.minute for t in stamps} == {0, 15, 30, 45}
    for lb in sim.labels():
        d = clean[lb.meter_id].deltas(sim.interval)
        if lb.kind == "reverse_flow":
            assert all(clean[lb.meter_id].values[t] < 0 for t in _span(sim, lb))
        if lb.kind == "leak" and lb.details["pattern"] == "continuous":
            rate = lb.details["rate_gal_per_hour"] / 4
            on = [d[t] for t in _span(sim, lb) if t in d]
            assert sum(on) >= rate * len(on) - 8
    for meter in sim.round_the_clock_meters():
        assert min(clean[meter].deltas(sim.interval).values()) > 0


# --- size -----------------------------------------------------------------------------------------


def test_writes_a_scenario_and_reports_progress(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    paths = write_scenario(
        tmp_path,
        SimulationConfig(meters=200, days=14, seed=4, start=START),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls and calls[-1][0] == calls[-1][1]
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))
    assert paths["reads"].stat().st_size > 1_000_000
