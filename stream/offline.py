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
