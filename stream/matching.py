"""Matching a read to the account whose meter assignment covers the read's timestamp.

Assignments come from the CIS export (`meter_assignments`); every dataflow worker keeps them
in memory and reloads them when an import bumps `data_versions.assignments`. A read that no
single assignment covers goes to the exception queue with the reason:

- `unknown_meter`: the meter is not in the CIS at all;
- `not_yet_installed`: the read is older than the meter's first assignment;
- `retired_meter`: the read is after the meter's last assignment ended, or falls between two
  assignments (the meter was out of service then);
- `ambiguous_assignment`: two accounts hold the meter at that time (a CIS overlap).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import psycopg

from stream.reads import Delivery, Reading

log = logging.getLogger(__name__)
FOREVER = math.inf


@dataclass(slots=True, frozen=True)
class Assignment:
    valid_from: float  # epoch seconds
    valid_to: float  # epoch seconds, or FOREVER while current
    account_id: str
    service_point_id: str
    customer_class: str
    active: bool

    def covers(self, epoch: float) -> bool:
        return self.valid_from <= epoch < self.valid_to


@dataclass(slots=True)
class MatchedRead:
    """A read and the assignment that covers it.

    Between dataflow processes (the exchange by meter) it pickles as three flat tuples of
    plain values, which takes about half the time of pickling the nested dataclasses:

    >>> import pickle
    >>> from stream.reads import Delivery, parse_delivery
    >>> reading = parse_delivery(Delivery("f:2", 2, {"meter_id": "M1", "value": "2.5",
    ...                                              "ts": "2026-03-01T14:15:00-05:00"}))
    >>> matched = MatchedRead(reading, Assignment(0.0, FOREVER, "A1", "SP1", "residential", True))
    >>> pickle.loads(pickle.dumps(matched)) == matched
    True
    """

    reading: Reading
    assignment: Assignment

    def __reduce__(self) -> tuple[Any, ...]:
        reading = self.reading
        return (
            _rebuild_matched,
            (
                _READING_VALUES(reading),
                _DELIVERY_VALUES(reading.delivery),
                _ASSIGNMENT_VALUES(self.assignment),
            ),
        )


def _values_of(cls: type, leave_out: str = "") -> attrgetter[Any]:
    """Gets every field `__init__` takes, in order: a field added to the class travels too."""
    assert all(f.init for f in fields(cls)), f"{cls.__name__} has a field __init__ does not take"
    return attrgetter(*(f.name for f in fields(cls) if f.name != leave_out))


_READING_VALUES = _values_of(Reading, leave_out="delivery")  # the delivery travels on its own
_DELIVERY_VALUES = _values_of(Delivery)
_ASSIGNMENT_VALUES = _values_of(Assignment)
_DELIVERY_AT = [f.name for f in fields(Reading)].index("delivery")


def _rebuild_matched(
    reading: tuple[Any, ...], delivery: tuple[Any, ...], assignment: tuple[Any, ...]
) -> MatchedRead:
    values = list(reading)
    values.insert(_DELIVERY_AT, Delivery(*delivery))
    return MatchedRead(Reading(*values), Assignment(*assignment))


@dataclass(slots=True)
class UnmatchedRead:
    reading: Reading
    reason: str
    detail: str


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class AssignmentIndex:
    """Meter id → its assignments, sorted by start."""

    def __init__(self, by_meter: dict[str, tuple[Assignment, ...]], version: int = 0) -> None:
        self.by_meter = by_meter
        self.version = version

    @classmethod
    def load(cls, conn: psycopg.Connection) -> AssignmentIndex:
        version_row = conn.execute(
            "SELECT version FROM data_versions WHERE name = 'assignments'"
        ).fetchone()
        by_meter: dict[str, list[Assignment]] = {}
        with conn.cursor(name="assignments") as cur:
            cur.itersize = 50_000
            cur.execute(
                """SELECT m.meter_id, extract(epoch FROM m.valid_from)::float8,
                          extract(epoch FROM m.valid_to)::float8, m.account_id,
                          m.service_point_id, a.customer_class, a.status = 'active'
                     FROM meter_assignments m JOIN accounts a USING (account_id)
                    ORDER BY m.meter_id, m.valid_from"""
            )
            for meter_id, start, end, account, point, klass, active in cur:
                by_meter.setdefault(meter_id, []).append(
                    Assignment(
                        start, FOREVER if end is None else end, account, point, klass, active
                    )
                )
        conn.commit()
        return cls(
            {meter: tuple(found) for meter, found in by_meter.items()},
            version_row[0] if version_row else 0,
        )

    def match(self, reading: Reading) -> MatchedRead | UnmatchedRead:
        found = self.by_meter.get(reading.meter_id)
        if not found:
            return UnmatchedRead(
                reading,
                "unknown_meter",
                f"meter {reading.meter_id!r} is not in the CIS export (meters.csv): add its "
                "assignment, or correct the meter id at the head-end",
            )
        epoch = reading.epoch
        if len(found) == 1 and found[0].valid_from <= epoch < found[0].valid_to:
            return MatchedRead(reading, found[0])  # most meters: one assignment, covering it
        covering = [a for a in found if a.covers(epoch)]
        if len(covering) == 1:
            return MatchedRead(reading, covering[0])
        if len({a.account_id for a in covering}) > 1:
            accounts = ", ".join(sorted({a.account_id for a in covering}))
            return UnmatchedRead(
                reading,
                "ambiguous_assignment",
                f"meter {reading.meter_id!r} is assigned to accounts {accounts} at "
                f"{reading.ts.isoformat()}: end one assignment where the other begins",
            )
        if covering:  # the same account twice (overlapping rows for one account): no conflict
            return MatchedRead(reading, covering[0])
        if epoch < found[0].valid_from:
            return UnmatchedRead(
                reading,
                "not_yet_installed",
                f"read at {reading.ts.isoformat()} is before meter {reading.meter_id!r} was "
                f"installed ({_when(found[0].valid_from)}): check the install date in the CIS",
            )
        ended = max(a.valid_to for a in found if a.valid_to <= epoch)
        return UnmatchedRead(
            reading,
            "retired_meter",
            f"meter {reading.meter_id!r} was removed from service at {_when(ended)} and has no "
            f"assignment at {reading.ts.isoformat()}: check for a missed meter exchange",
        )


class Matcher:
    """The worker's assignment index, reloaded when the CIS data changes."""

    def __init__(self, database_url: str, refresh_s: float) -> None:
        self.database_url = database_url
        self.refresh_s = refresh_s
        self._index: AssignmentIndex | None = None
        self._checked = 0.0

    def index(self) -> AssignmentIndex:
        now = time.monotonic()
        if self._index is None:
            with psycopg.connect(self.database_url) as conn:
                self._index = AssignmentIndex.load(conn)
            self._checked = now
        elif now - self._checked >= self.refresh_s:
            self._checked = now
            try:
                with psycopg.connect(self.database_url) as conn:
                    row = conn.execute(
                        "SELECT version FROM data_versions WHERE name = 'assignments'"
                    ).fetchone()
                    if row and row[0] != self._index.version:
                        log.info("meter assignments changed; reloading")
                        self._index = AssignmentIndex.load(conn)
            except psycopg.OperationalError as exc:  # keep matching with what we have
                log.warning("could not check for new meter assignments: %s", exc)
        return self._index

    def match_batch(self, readings: list[Reading]) -> list[MatchedRead | UnmatchedRead]:
        index = self.index()
        return [index.match(r) for r in readings]
