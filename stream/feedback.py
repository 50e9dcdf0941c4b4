"""Expected use from the database, for the detectors: the feedback loop's read side.

The API records feedback in two places: a flag dismissed with `expected_use` (staff through
flag review, or the customer saying "that's my evaporative cooler"), and `declared_usage`
(a customer declaring use up front: irrigation, a pool fill, a cooler; `meter_id` NULL means
every current meter of the account). `load_allowances` turns both into one allowance per
meter (detectors/feedback.py), which `DetectorBank.expect` takes; `FeedbackCache` reloads
them when either table changes, the way `stream.matching.Matcher` reloads assignments.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta, tzinfo

import psycopg

from detectors.feedback import Allowance, combine, from_declaration, from_dismissed_flag

log = logging.getLogger(__name__)

_VERSION = """
    SELECT (SELECT count(*) FROM flags WHERE status = 'dismissed' AND expected_use)
         , (SELECT max(updated_at) FROM flags WHERE status = 'dismissed' AND expected_use)
         , (SELECT count(*) FROM declared_usage)
         , (SELECT max(created_at) FROM declared_usage)
"""


def _local_hours(started: datetime, ended: datetime | None, tz: tzinfo) -> set[int]:
    """The local hours of the day a flag spanned (every hour for a day or more)."""
    end = ended or started
    if (end - started).total_seconds() >= 86_400:
        return set(range(24))
    hours, t = set(), started.astimezone(tz)
    while t <= end.astimezone(tz):
        hours.add(t.hour)
        t = t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return hours


def load_allowances(conn: psycopg.Connection, tz: tzinfo | None = None) -> dict[str, Allowance]:
    """Meter id → the use its customer or staff said is expected."""
    zone = tz or UTC
    found: dict[str, list[Allowance]] = {}
    for meter_id, kind, details, started, ended in conn.execute(
        # only the current occupant's: a new account starts without its predecessor's habits
        """SELECT f.meter_id, f.kind, f.details, f.started_at, f.ended_at
             FROM flags f
             JOIN meter_assignments m
               ON m.meter_id = f.meter_id AND m.account_id = f.account_id AND m.valid_to IS NULL
            WHERE f.status = 'dismissed' AND f.expected_use"""
    ):
        hours = _local_hours(started, ended, zone)
        found.setdefault(meter_id, []).append(from_dismissed_flag(kind, details or {}, hours))
    for meter_id, rate, schedule in conn.execute(
        """SELECT coalesce(d.meter_id, m.meter_id), d.rate_gph, d.schedule
             FROM declared_usage d
             LEFT JOIN meter_assignments m
               ON d.meter_id IS NULL AND m.account_id = d.account_id AND m.valid_to IS NULL
            WHERE d.rate_gph IS NOT NULL"""
    ):
        if meter_id is not None:
            found.setdefault(meter_id, []).append(from_declaration(rate, schedule))
    conn.commit()
    allowances = {}
    for meter_id, parts in found.items():
        combined = combine(parts)
        if combined is not None:
            allowances[meter_id] = combined
    return allowances


class FeedbackCache:
    """The worker's allowances, reloaded when feedback changes (checked every `refresh_s`)."""

    def __init__(self, database_url: str, refresh_s: float, tz: tzinfo | None = None) -> None:
        self.database_url = database_url
        self.refresh_s = refresh_s
        self.tz = tz
        self._allowances: dict[str, Allowance] | None = None
        self._version: tuple[object, ...] | None = None
        self._checked = 0.0

    def allowances(self) -> dict[str, Allowance]:
        now = time.monotonic()
        if self._allowances is not None and now - self._checked < self.refresh_s:
            return self._allowances
        self._checked = now
        try:
            with psycopg.connect(self.database_url) as conn:
                row = conn.execute(_VERSION).fetchone()
                version = tuple(row) if row else None
                if self._allowances is None or version != self._version:
                    if self._allowances is not None:
                        log.info("expected use changed; reloading")
                    self._allowances = load_allowances(conn, self.tz)
                    self._version = version
        except psycopg.OperationalError as exc:  # keep the allowances we have
            log.warning("could not check for new expected use: %s", exc)
            if self._allowances is None:
                raise
        return self._allowances

    def allowance_for(self, meter_id: str) -> Allowance | None:
        return self.allowances().get(meter_id)
