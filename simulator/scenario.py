"""Writing a scenario to disk: the CIS export, the head-end's reads file with every delivery
defect a real one has, and the answer key that says what a correct pipeline must make of it.

The reads file is the clean stream of `Simulation.clean_reads()` run through a delivery that
re-orders a few rows locally, holds some back for days, sends some twice (right away or much
later, a few with the timestamp written with another offset), slips in malformed rows, and
appends the late-arriving reads of some gaps at the very end.

The answer key's counts are not taken from the construction. They follow from the rows as
written, by the pipeline's rules (see `ExpectedCounts`), so they stay right whatever the
delivery did to them.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from simulator.config import ANOMALY_KINDS, SimulationConfig
from simulator.simulation import (
    ACCOUNT_COLUMNS,
    METER_COLUMNS,
    READ_COLUMNS,
    Simulation,
    iso_utc,
)

#: Why a delivered row is rejected, one class per kind of malformation the simulator makes.
REJECT_REASONS = (
    "unparseable_timestamp",
    "timestamp_without_offset",
    "non_numeric_value",
    "non_finite_value",
    "absurd_value",
    "unknown_unit",
    "missing_meter_id",
    "missing_value",
    "unknown_kind",
)
#: Why a well-formed read goes to the exception queue instead of to an account.
UNMATCHED_REASONS = ("unknown_meter", "retired_meter", "not_yet_installed", "ambiguous_assignment")

#: The counting rules, written into the answer key next to the numbers they produce.
COUNTING_RULES = {
    "deliveries": "data rows in reads.csv",
    "well_formed": "meter_id present; ts ISO 8601 with an offset; value a finite decimal with "
    "|value| <= 1,000,000; unit empty, gal, ft3, m3 or kWh; kind empty, interval or register",
    "rejected": "malformed rows, each delivery counted (a malformed row sent twice counts twice)",
    "stored": "distinct (meter_id, ts instant) among well-formed rows whose meter has exactly "
    "one assignment with valid_from <= ts < valid_to (empty valid_to = open)",
    "unmatched": "distinct (meter_id, ts instant) among well-formed rows without exactly one "
    "covering assignment: unknown_meter (not in meters.csv), retired_meter (ts at or after "
    "the meter's last valid_to), not_yet_installed (ts before its first valid_from), "
    "ambiguous_assignment (two or more accounts cover ts)",
    "duplicates": "well-formed deliveries minus (stored + unmatched): every further delivery "
    "of an already-seen (meter_id, ts instant)",
    "assumes": "the window lies in the past when the file is loaded (no read is in the future) "
    "and after 2000-01-01, so no plausibility check on time rejects a well-formed row",
}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Delivery:
    """One row of reads.csv and what it is: `reject_reason` for a malformed row, otherwise
    the meter and interval number it reads (its identity for de-duplication)."""

    row: tuple[str, ...]
    meter_id: str
    k: int
    reject_reason: str | None = None


class ExpectedCounts:
    """The pipeline's counting rules applied to deliveries one at a time.

    Assignments are taken from meters.csv rows (strings, as written) and compared with the
    read's instant, the end of its interval. Since every read of the scenario ends an
    interval, a span [valid_from, valid_to) is turned once into the interval numbers it
    covers: k is covered when `first <= k < stop`, where `first` is the first interval ending
    at or after valid_from and `stop` the first ending at or after valid_to.
    """

    def __init__(self, sim: Simulation, assignments: Iterable[Mapping[str, str]]) -> None:
        self._sim = sim
        self._spans: dict[str, list[tuple[int, int | None]]] = {}
        for a in assignments:
            valid_to = datetime.fromisoformat(a["valid_to"]) if a["valid_to"] else None
            self._spans.setdefault(a["meter_id"], []).append(
                (
                    self._first_at_or_after(datetime.fromisoformat(a["valid_from"])),
                    None if valid_to is None else self._first_at_or_after(valid_to),
                )
            )
        # One byte per interval and meter: a set of (meter, ts) pairs would not fit in memory
        # for ten thousand meters.
        self._seen: dict[str, bytearray] = {}
        self._size = sim.intervals + 1
        self.deliveries = 0
        self.rejected: Counter[str] = Counter()
        self.stored = 0
        self.unmatched: Counter[str] = Counter()
        self.duplicates = 0

    def _first_at_or_after(self, t: datetime) -> int:
        """The smallest k with ts_k >= t (ts_k = start + k * interval)."""
        k = -((self._sim.start - t) // self._sim.interval)  # ceiling division
        assert self._sim.ts_of(k) >= t > self._sim.ts_of(k - 1)
        return k

    def add(self, delivery: Delivery) -> None:
        self.deliveries += 1
        if delivery.reject_reason is not None:
            self.rejected[delivery.reject_reason] += 1
            return
        seen = self._seen.get(delivery.meter_id)
        if seen is None:
            seen = self._seen[delivery.meter_id] = bytearray(self._size)
        if seen[delivery.k]:
            self.duplicates += 1
            return
        seen[delivery.k] = 1
        outcome = self.classify(delivery.meter_id, delivery.k)
        if outcome == "stored":
            self.stored += 1
        else:
            self.unmatched[outcome] += 1

    def classify(self, meter_id: str, k: int) -> str:
        """'stored', or the reason the read of interval k goes to the exception queue."""
        spans = self._spans.get(meter_id)
        if not spans:
            return "unknown_meter"
        covering = sum(1 for first, stop in spans if first <= k and (stop is None or k < stop))
        if covering == 1:
            return "stored"
        if covering:
            return "ambiguous_assignment"
        if all(stop is not None and k >= stop for _, stop in spans):
            return "retired_meter"
        if all(k < first for first, _ in spans):
            return "not_yet_installed"
        # The simulator never leaves a hole between two assignments of one meter.
        raise AssertionError(f"meter {meter_id} has no assignment at {self._sim.ts_of(k)}")

    def as_json(self) -> dict[str, Any]:
        unmatched = {reason: self.unmatched[reason] for reason in UNMATCHED_REASONS}
        return {
            "deliveries": self.deliveries,
            "stored": self.stored,
            "rejected": sum(self.rejected.values()),
            "unmatched": {"total": sum(unmatched.values()), **unmatched},
            "duplicates": self.duplicates,
        }


def deliveries(
    sim: Simulation, progress: Progress | None = None, stats: Counter[str] | None = None
) -> Iterator[Delivery]:
    """The rows of reads.csv, in file order: the clean stream with the delivery defects.

    Most rows go out as the clean stream reaches them. A delayed row gets a place measured
    in intervals (a few intervals on for a locally shuffled row, one to three days on for a
    late one, up to two days on for a later duplicate) and waits in a heap until the stream
    has passed it; the reads of late gaps come after everything else. An adjacent duplicate
    and a malformed copy follow their row directly. `stats`, if given, counts what the
    delivery did.
    """
    cfg = sim.config
    rng = random.Random(f"delivery/{cfg.seed}")
    rnd = rng.random
    per_day = sim.per_day
    waiting: list[tuple[float, int, Delivery]] = []
    order = itertools.count()
    stats = Counter() if stats is None else stats
    total = sim.expected_clean_rows()
    late, shuffled = cfg.late_fraction, cfg.late_fraction + cfg.shuffle_fraction

    def send(place: float, item: Delivery, now: bool) -> Iterator[Delivery]:
        if now:
            yield item
        else:
            heapq.heappush(waiting, (place, next(order), item))
        if rnd() >= cfg.duplicate_fraction:
            return
        copy = item
        if item.reject_reason is None and rnd() < cfg.reformatted_duplicate_share:
            # Same instant, another way of writing it: a duplicate only to a pipeline that
            # compares instants, not strings.
            other = [s for s in sim.ts_texts(item.k) if s != item.row[1]]
            copy = Delivery((item.row[0], rng.choice(other), *item.row[2:]), item.meter_id, item.k)
            stats["duplicates_reformatted"] += 1
        if rnd() < 0.5:
            stats["duplicates_adjacent"] += 1
            if now:
                yield copy
            else:
                heapq.heappush(waiting, (place, next(order), copy))
        else:
            stats["duplicates_later"] += 1
            heapq.heappush(waiting, (place + rng.uniform(1.0, 2.0 * per_day), next(order), copy))

    for done, (k, _dev, row) in enumerate(sim.indexed_reads(1, sim.intervals), start=1):
        while waiting and waiting[0][0] <= k:
            yield heapq.heappop(waiting)[2]
        u = rnd()
        place = float(k)
        if u < late:
            place += rng.uniform(1.0, 3.0) * per_day
            stats["late"] += 1
        elif u < shuffled:
            place += rng.uniform(0.05, 3.0)
            stats["shuffled"] += 1
        now = place == k
        yield from send(place, Delivery(row, row[0], k), now)
        if rnd() < cfg.malformed_fraction:
            bad, reason = malform(sim, row, k, rng)
            stats["malformed"] += 1
            yield from send(place, Delivery(bad, bad[0], k, reason), now)
        if progress is not None and done % 20_000 == 0:
            progress(done, total)
    end = float(sim.intervals + 4 * per_day)
    for k, _dev, row in sim.indexed_late_reads():
        stats["late_gap_reads"] += 1
        yield from send(end, Delivery(row, row[0], k), False)
    while waiting:
        yield heapq.heappop(waiting)[2]
    if progress is not None:
        progress(total, total)


def malform(
    sim: Simulation, row: tuple[str, ...], k: int, rng: random.Random
) -> tuple[tuple[str, ...], str]:
    """A corrupted copy of `row` with exactly one defect, and the defect's reason class."""
    meter_id, ts, value, unit, kind, quality = row
    reasons = [r for r in REJECT_REASONS if not (r == "absurd_value" and kind == "register")]
    reason = rng.choice(reasons)
    instant = sim.ts_of(k)
    local = instant.astimezone(sim.tz)
    if reason == "unparseable_timestamp":
        ts = rng.choice(
            (
                local.strftime("%m/%d/%Y %H:%M"),  # a US spreadsheet's idea of a date
                instant.strftime("%Y-13-%dT%H:%M:%SZ"),  # month 13
                local.strftime("%d.%m.%Y %H:%M:%S"),
                "not a time",
            )
        )
    elif reason == "timestamp_without_offset":
        ts = local.replace(tzinfo=None).isoformat()
    elif reason == "non_numeric_value":
        decimal_comma = value.replace(".", ",") if "." in value else value + ",5"
        value = rng.choice((decimal_comma, "N/A", "#VALUE!"))
    elif reason == "non_finite_value":
        value = rng.choice(("NaN", "nan", "inf", "-inf", "Infinity"))
    elif reason == "absurd_value":
        value = rng.choice(("5000000000", "5e9", "2.5e12", "-7.5e8"))
    elif reason == "unknown_unit":
        unit = rng.choice(("litres", "CCF", "L"))
    elif reason == "missing_meter_id":
        meter_id = ""
    elif reason == "missing_value":
        value = ""
    else:
        kind = rng.choice(("cumulative", "delta", "daily"))
    return (meter_id, ts, value, unit, kind, quality), reason


def answer_key(
    sim: Simulation,
    counts: ExpectedCounts,
    delivery: Mapping[str, int],
    rejected_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """The answer key of a written scenario (see the module docstring of `simulator`)."""
    labels = sim.labels()
    info = sim.meter_info()
    rollovers = [
        {"meter_id": lb.meter_id, "ts": iso_utc(lb.start), **lb.details}
        for lb in labels
        if lb.kind == "rollover"
    ]
    return {
        "format": 1,
        "config": sim.config.as_json(),
        "window": {
            "start": iso_utc(sim.start),
            "end": iso_utc(sim.end),
            "first_ts": iso_utc(sim.ts_of(1)),
            "last_ts": iso_utc(sim.ts_of(sim.intervals)),
            "interval_minutes": sim.config.interval_minutes,
            "intervals": sim.intervals,
            "timezone": sim.config.timezone,
        },
        "files": {
            "accounts": "accounts.csv",
            "meters": "meters.csv",
            "reads": "reads.csv",
        },
        "counting_rules": COUNTING_RULES,
        "counts": counts.as_json(),
        "rejected_reasons": {r: counts.rejected[r] for r in REJECT_REASONS},
        # Data row numbers (the header is line 1, so row n is line n + 1 of the file).
        "rejected_rows": rejected_rows,
        "delivery": dict(delivery),
        "population": sim.population,
        "labels": {
            "anomalies": [lb.as_dict() for lb in labels],
            "by_kind": {kind: sum(1 for lb in labels if lb.kind == kind) for kind in ANOMALY_KINDS},
            "24/7 users": sim.round_the_clock_meters(),
            "register_meters": sim.register_meters(),
            "rollovers": rollovers,
            "clean_meters": sorted(
                m for m, i in info.items() if i["role"] == "regular" and i["anomaly"] is None
            ),
        },
        "exceptions": sim.exceptions,
        "meters": info,
    }


def write_scenario(
    out_dir: str | Path, config: SimulationConfig, progress: Progress | None = None
) -> dict[str, Path]:
    """Write accounts.csv, meters.csv, reads.csv and answer_key.json into `out_dir`.

    Returns the paths by name (`accounts`, `meters`, `reads`, `answer_key`). `progress`, if
    given, is called now and then with (clean rows done, clean rows in all).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim = Simulation(config)
    paths = {
        "accounts": out / "accounts.csv",
        "meters": out / "meters.csv",
        "reads": out / "reads.csv",
        "answer_key": out / "answer_key.json",
    }
    assignments = sim.meter_assignments()
    _write_csv(paths["accounts"], ACCOUNT_COLUMNS, sim.accounts())
    _write_csv(paths["meters"], METER_COLUMNS, assignments)
    counts = ExpectedCounts(sim, assignments)
    rejected_rows: list[dict[str, Any]] = []
    stats: Counter[str] = Counter()
    with paths["reads"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(READ_COLUMNS)
        for number, delivery in enumerate(deliveries(sim, progress, stats), start=1):
            writer.writerow(delivery.row)
            counts.add(delivery)
            if delivery.reject_reason is not None:
                rejected_rows.append({"row": number, "reason": delivery.reject_reason})
    key = answer_key(sim, counts, stats, rejected_rows)
    with paths["answer_key"].open("w", encoding="utf-8") as f:
        json.dump(key, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return paths


def _write_csv(path: Path, columns: Iterable[str], rows: Iterable[Mapping[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
