"""The dataflow's per-meter steps in one plain loop, without Bytewax or a database.

Reads a reads file and a CIS export, and runs every read through the same parse, match and
per-meter state as the dataflow, collecting the flags. The detector benchmark uses it to
measure many scenarios quickly; it is also the reference a dataflow run must agree with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path

from detectors.bank import DetectorBank
from detectors.base import Finding, Interval, MeterContext
from detectors.profile import MeterProfile
from meterwatch.cis import read_cis
from stream.matching import FOREVER, Assignment, AssignmentIndex, MatchedRead
from stream.meter import FlagWrite, MeterState
from stream.reads import Reading, parse_delivery
from stream.sources import iter_file_deliveries

DAY_S = 86_400


@dataclass(slots=True)
class FlagRecord:
    """A flag as the database would hold it after every write (times in epoch seconds)."""

    meter_id: str
    account_id: str
    kind: str
    started_at: int
    ended_at: int | None
    detected_at: int
    severity: str
    score: float
    evidence: str
    revision: int


def index_from_files(accounts_csv: Path, meters_csv: Path, tz: tzinfo) -> AssignmentIndex:
    """The assignment index the dataflow would load after importing these files."""
    data = read_cis(accounts_csv, meters_csv, tz=tz)
    if data.problems:
        raise ValueError(f"the CIS files have problems: {data.problems[0]}")
    accounts = {a.account_id: a for a in data.accounts}
    by_meter: dict[str, list[Assignment]] = {}
    for a in sorted(data.assignments, key=lambda a: (a.meter_id, a.valid_from)):
        account = accounts[a.account_id]
        by_meter.setdefault(a.meter_id, []).append(
            Assignment(
                a.valid_from.timestamp(),
                FOREVER if a.valid_to is None else a.valid_to.timestamp(),
                a.account_id,
                a.service_point_id,
                account.customer_class,
                account.active,
            )
        )
    return AssignmentIndex({m: tuple(found) for m, found in by_meter.items()})


def run_offline(
    readings: Iterable[Reading],
    index: AssignmentIndex,
    tz: tzinfo,
    *,
    bank_factory: Callable[[], DetectorBank] = DetectorBank,
    dedup_window_days: int = 35,
) -> list[FlagRecord]:
    """Every flag the per-meter state produces over `readings`, in arrival order."""
    states: dict[str, MeterState] = {}
    flags: dict[tuple[str, str, int], FlagRecord] = {}
    for reading in readings:
        matched = index.match(reading)
        if not isinstance(matched, MatchedRead):
            continue
        state = states.get(reading.meter_id)
        if state is None:
            state = states[reading.meter_id] = MeterState(
                dedup_window_days * DAY_S, tz=tz, bank_factory=bank_factory
            )
        for output in state.process(matched):
            if isinstance(output, FlagWrite):
                c = output.change
                key = (output.meter_id, c.kind, c.started_at)
                known = flags.get(key)
                if known is None or known.revision < c.revision:
                    flags[key] = FlagRecord(
                        output.meter_id,
                        output.account_id,
                        c.kind,
                        c.started_at,
                        c.ended_at,
                        c.detected_at,
                        c.severity,
                        c.score,
                        c.evidence,
                        c.revision,
                    )
    return list(flags.values())


def file_readings(path: Path) -> Iterable[Reading]:
    """The well-formed reads of a file, in file order."""
    for delivery in iter_file_deliveries(path):
        parsed = parse_delivery(delivery)
        if isinstance(parsed, Reading):
            yield parsed


# --- `meterwatch score`: one reads file in, the same rows with a score out ---------------------

SCORE_COLUMNS = ("anomaly_score", "flag_kind")
# Below every finding's score: rows that no detector flags rank by how far they stand from
# their meter's profile, so that a score threshold can be swept (as benchmarks do) without
# ever putting a mere outlier above a flag.
BACKGROUND_CEILING = 0.5
BACKGROUND_Z = 6.0  # standard deviations at which the background score is ~63 % of its ceiling
MIN_BACKGROUND_OBSERVATIONS = 5


@dataclass(slots=True)
class ScoredRow:
    """What `score_series` says about one input row: the score known when the row was read
    (data up to and including it: no look-ahead) and the kind of the flag that covers it
    once the whole series is seen (empty when none)."""

    anomaly_score: float
    flag_kind: str


def _parse_score_ts(text: str, row: int) -> tuple[int, int]:
    """Epoch seconds and the offset from UTC (seconds) the timestamp was written with."""
    from datetime import UTC, datetime

    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"row {row}: timestamp {text!r} is not ISO 8601: write it like "
            "'2026-03-01T14:15:00-05:00' (a missing offset is read as UTC)"
        ) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    offset = ts.utcoffset()
    return int(ts.timestamp()), int(offset.total_seconds()) if offset else 0


def _parse_score_value(text: str, row: int) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"row {row}: value {text!r} is not a number: write a decimal") from None
    if not math.isfinite(value):
        raise ValueError(f"row {row}: value {text!r} is not finite: write a decimal")
    return value


def _grid(times: list[int]) -> int:
    """The series' interval: its most common step between consecutive distinct times."""
    from collections import Counter
    from itertools import pairwise

    steps = Counter(b - a for a, b in pairwise(times) if b > a)
    return steps.most_common(1)[0][0] if steps else 3600


def background_score(interval: Interval, context: MeterContext, profile: MeterProfile) -> float:
    """How unusual an interval is against the meter's profile for that hour of the week,
    mapped into [0, `BACKGROUND_CEILING`): 0 until the slot has been seen a few times."""
    import math

    from detectors.profile import slot_of

    slot = slot_of(interval.ts - interval.seconds, context.utc_offset_s)
    if profile.observations(slot) < MIN_BACKGROUND_OBSERVATIONS:
        return 0.0
    mean, std = profile.mean_at(slot), profile.std_at(slot)
    z = abs(interval.rate - mean) / (std + 0.05 * abs(mean) + 1e-6)
    return BACKGROUND_CEILING * (1.0 - math.exp(-z / BACKGROUND_Z))


def score_series(
    times: list[int],
    values: list[float],
    *,
    customer_class: str = "residential",
    utc_offset_s: int = 0,
    register: bool = False,
    bank_factory: Callable[[], DetectorBank] = DetectorBank,
) -> list[ScoredRow]:
    """Score one meter's series (epoch seconds, consumption per interval), in any order.

    Hours of the day are local hours at `utc_offset_s`. Rows are fed to the meter's
    detectors in time order; a repeated timestamp is scored like
    the first row with it and not learned twice. With `register`, values are cumulative
    registers, turned into consumption as the dataflow does (a wrap is a `rollover`, the
    first row scores 0). Returns one `ScoredRow` per input row, in input order.
    """
    from detectors.lifecycle import FlagTracker
    from detectors.register import RegisterConverter

    order = sorted(range(len(times)), key=times.__getitem__)
    grid = _grid([times[i] for i in order])
    bank = bank_factory()
    tracker = FlagTracker()
    context = MeterContext(customer_class, utc_offset_s=utc_offset_s, register=register)
    converter = RegisterConverter() if register else None
    kinds = (*bank.kinds, "rollover") if register else bank.kinds
    scores = [0.0] * len(times)
    # (start, end, kind) of every flag, to mark the rows each covers
    spans: list[tuple[int, int | None, str]] = []
    previous: int | None = None
    last_score = 0.0
    for i in order:
        ts = times[i]
        if ts == previous:
            scores[i] = last_score
            continue
        value: float | None = values[i]
        rollover = None
        if converter is not None:
            seconds = ts - previous if previous is not None else grid
            value, rollover = converter.convert(ts, values[i])
        else:
            seconds = grid
        previous = ts
        found: dict[str, Finding] = {}
        background = 0.0
        if value is not None:
            interval = Interval(ts, seconds, value)
            background = background_score(interval, context, bank.profile)
            found = bank.update(interval, context, tracker.open_kinds)
        if rollover is not None:
            found["rollover"] = rollover
        last_score = max([f.score for f in found.values()], default=background)
        scores[i] = last_score
        for change in tracker.observe(ts, found, kinds):
            if change.action == "close":
                spans.append((change.started_at, change.ended_at, change.kind))
    for change in tracker.close_all():
        spans.append((change.started_at, change.ended_at, change.kind))
    return _with_kinds(times, scores, spans)


def _with_kinds(
    times: list[int], scores: list[float], spans: list[tuple[int, int | None, str]]
) -> list[ScoredRow]:
    import bisect

    kinds = [""] * len(times)
    order = sorted(range(len(times)), key=times.__getitem__)
    sorted_times = [times[i] for i in order]
    # the stronger kinds win where flags overlap: a burst's hours are the burst's
    rank = {kind: n for n, kind in enumerate(FLAG_PRECEDENCE)}
    for start, end, kind in sorted(spans, key=lambda s: -rank.get(s[2], len(rank))):
        lo = bisect.bisect_right(sorted_times, start)  # rows are interval ends: (start, end]
        hi = bisect.bisect_right(sorted_times, end if end is not None else start)
        for j in range(lo, hi):
            kinds[order[j]] = kind
    return [ScoredRow(round(s, 6), k) for s, k in zip(scores, kinds, strict=True)]


FLAG_PRECEDENCE = (
    "inactive_usage",
    "burst",
    "spike",
    "reverse_flow",
    "stuck_reading",
    "stopped_meter",
    "leak",
    "usage_anomaly",
)


def score_file(in_csv: Path, out_csv: Path, *, customer_class: str = "residential") -> int:
    """`meterwatch score`: read `in_csv` (`ts` or `timestamp`, `value`, optional `meter_id`:
    absent means one series; an optional `kind` of `register` marks cumulative registers),
    write every row with `anomaly_score` and `flag_kind` added, in
    input order, to `out_csv`. Returns the number of rows."""
    import csv

    with in_csv.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or ())
        ts_column = next((c for c in ("ts", "timestamp") if c in header), None)
        if ts_column is None or "value" not in header:
            raise ValueError(
                f"{in_csv}: the header {header} needs a 'ts' (or 'timestamp') and a 'value' "
                "column, and may have 'meter_id'"
            )
        for clash in SCORE_COLUMNS:
            if clash in header:
                raise ValueError(
                    f"{in_csv}: already has a {clash!r} column: rename or drop it first"
                )
        rows = list(reader)
    series: dict[str, tuple[list[int], list[float], list[int]]] = {}
    offsets: dict[str, int] = {}
    registers: set[str] = set()  # series whose optional `kind` column says `register`
    for n, row in enumerate(rows):
        line = n + 2  # the header is line 1
        meter = (row.get("meter_id") or "").strip() if "meter_id" in header else ""
        if "meter_id" in header and not meter:
            raise ValueError(f"row {line}: meter_id is empty: give every row its meter")
        times, values, positions = series.setdefault(meter, ([], [], []))
        if (row.get("kind") or "").strip() == "register":
            registers.add(meter)
        epoch, offset = _parse_score_ts(row[ts_column] or "", line)
        offsets.setdefault(meter, offset)
        times.append(epoch)
        values.append(_parse_score_value(row["value"] or "", line))
        positions.append(n)
    scored: list[ScoredRow | None] = [None] * len(rows)
    for meter, (times, values, positions) in series.items():
        results = score_series(
            times,
            values,
            customer_class=customer_class,
            utc_offset_s=offsets[meter],
            register=meter in registers,
        )
        for position, scored_row in zip(positions, results, strict=True):
            scored[position] = scored_row
    with out_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, [*header, *SCORE_COLUMNS], extrasaction="ignore")
        writer.writeheader()
        for row, found in zip(rows, scored, strict=True):
            assert found is not None  # every row belongs to one series
            writer.writerow(
                {**row, "anomaly_score": f"{found.anomaly_score:.6f}", "flag_kind": found.flag_kind}
            )
    return len(rows)
