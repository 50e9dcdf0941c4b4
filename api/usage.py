"""A customer's usage history: an account's reads summed per hour, day or month of the utility's
time zone, each bucket beside the same bucket a year earlier.

Buckets are local wall-clock hours, days and months (`date_trunc` on local time), so a day is
the utility's calendar day; on the night summer time ends, the repeated hour is one bucket.
`ts` is the end of the interval a read covers, so a read stamped 01:00 counts in the 00:00 hour
(shifted by a microsecond, as `meterwatch.reports` does). Every bucket of the window is listed,
including those without reads (`usage` null: not known, which is not zero).

Days and months come from the `usage_daily` rollup (sql/020), which triggers on `reads` keep
current in the utility's time zone; `ensure_rollup` (run by the API at start-up) rewrites the
trigger for UTILITY_TZ and rebuilds the rollup when the zone changed. Hours, and any zone the
rollup was not built for, are summed from the reads themselves.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from billing.periods import local_midnight
from billing.preview import ESTIMATED_SQL, UNIT_SQL

Resolution = Literal["hour", "day", "month"]
# The longest window one request may ask for (days): 24 months and a little slack.
MAX_WINDOW_DAYS = 762
EARLIEST = date(2000, 1, 1)
USAGE_CSV_COLUMNS = ("unit", "start", "usage", "reads", "estimated_reads", "last_year_usage")


@dataclass(frozen=True)
class Bucket:
    start: datetime  # local, aware
    usage: float | None
    reads: int
    estimated_reads: int
    last_year_usage: float | None


@dataclass(frozen=True)
class Series:
    unit: str
    buckets: list[Bucket]


@dataclass(frozen=True)
class UsageHistory:
    account_id: str
    resolution: Resolution
    timezone: str
    start: date
    end: date
    series: list[Series]


def default_window(resolution: Resolution, today: date) -> tuple[date, date]:
    """The window shown when none is asked for: the last 7 days by hour; the last 24 months by
    day or by month (whole months), up to and including `today`."""
    end = today + timedelta(days=1)
    if resolution == "hour":
        return end - timedelta(days=7), end
    year, month = divmod(today.year * 12 + today.month - 1 - 23, 12)
    start = date(year, month + 1, 1) if resolution == "month" else _years_before(end, 2)
    return start, end


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def check_window(start: date, end: date) -> str | None:
    """Why the window cannot be served (a sentence), or None."""
    if start < EARLIEST:
        return f"start {start.isoformat()} is before {EARLIEST.isoformat()}: no reads are older"
    if end <= start:
        return f"end {end.isoformat()} is not after start {start.isoformat()}"
    if (end - start).days > MAX_WINDOW_DAYS:
        return (
            f"the window is {(end - start).days} days long: ask for at most {MAX_WINDOW_DAYS} "
            "days (24 months) at once"
        )
    return None


def _step(bucket: datetime, resolution: Resolution) -> datetime:
    if resolution == "hour":
        return bucket + timedelta(hours=1)
    if resolution == "day":
        return bucket + timedelta(days=1)
    year, month = divmod(bucket.year * 12 + bucket.month, 12)
    return bucket.replace(year=year, month=month + 1)


def _truncate(day: date, resolution: Resolution) -> datetime:
    start = datetime.combine(day, datetime.min.time())
    return start.replace(day=1) if resolution == "month" else start


def _a_year_before(bucket: datetime) -> datetime | None:
    try:
        return bucket.replace(year=bucket.year - 1)
    except ValueError:  # 29 February has no bucket a year before
        return None


# The rollup's trigger function for one time zone (the same as sql/020 writes for UTC).
_APPLY_FUNCTION = """
CREATE OR REPLACE FUNCTION usage_daily_apply() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE usage_daily
       SET usage = usage - coalesce(OLD.value, 0), reads = reads - 1,
           estimated = estimated
             - (upper(coalesce(OLD.quality, '')) IN ('E', 'EST', 'ESTIMATED'))::int
     WHERE account_id = OLD.account_id
       AND unit = CASE WHEN OLD.reported_unit = 'kWh' THEN 'kWh' ELSE 'gal' END
       AND day = ((OLD.ts - interval '1 microsecond') AT TIME ZONE {tz})::date;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO usage_daily AS u (account_id, unit, day, usage, reads, estimated)
    VALUES (NEW.account_id, CASE WHEN NEW.reported_unit = 'kWh' THEN 'kWh' ELSE 'gal' END,
            ((NEW.ts - interval '1 microsecond') AT TIME ZONE {tz})::date,
            coalesce(NEW.value, 0), 1,
            (upper(coalesce(NEW.quality, '')) IN ('E', 'EST', 'ESTIMATED'))::int)
    ON CONFLICT (account_id, unit, day) DO UPDATE
       SET usage = u.usage + EXCLUDED.usage, reads = u.reads + 1,
           estimated = u.estimated + EXCLUDED.estimated;
  END IF;
  RETURN NULL;
END
$fn$"""


def rollup_zone(conn: psycopg.Connection) -> str | None:
    """The time zone the daily rollup is kept in (None before migration 020)."""
    row = conn.execute("SELECT tz FROM usage_rollup").fetchone()
    return row[0] if row else None


def ensure_rollup(conn: psycopg.Connection, tz_name: str, *, force: bool = False) -> bool:
    """Keep the daily rollup in `tz_name`: when it is kept in another zone (or `force`),
    rewrite its trigger and rebuild it from the reads, in one transaction that holds off
    writers to reads meanwhile. Returns whether it rebuilt. A long job on a large database,
    done once when the utility's zone is set."""
    if not force and rollup_zone(conn) == tz_name:
        return False
    with conn.transaction():
        conn.execute("LOCK TABLE reads IN SHARE MODE")
        current = conn.execute("SELECT tz FROM usage_rollup FOR UPDATE").fetchone()
        if not force and current and current[0] == tz_name:
            return False
        conn.execute(sql.SQL(_APPLY_FUNCTION).format(tz=sql.Literal(tz_name)))
        conn.execute("TRUNCATE usage_daily")
        conn.execute(
            """INSERT INTO usage_daily (account_id, unit, day, usage, reads, estimated)
               SELECT account_id, CASE WHEN reported_unit = 'kWh' THEN 'kWh' ELSE 'gal' END,
                      ((ts - interval '1 microsecond') AT TIME ZONE %(tz)s)::date,
                      coalesce(sum(value), 0), count(*),
                      count(*) FILTER (WHERE upper(coalesce(quality, ''))
                                       IN ('E', 'EST', 'ESTIMATED'))
                 FROM reads GROUP BY 1, 2, 3""",
            {"tz": tz_name},
        )
        conn.execute("UPDATE usage_rollup SET tz = %s, built_at = now()", (tz_name,))
    return True


_FROM_READS = f"""
    SELECT {UNIT_SQL} AS unit,
           date_trunc(%(resolution)s,
                      (r.ts - interval '1 microsecond') AT TIME ZONE %(tz)s) AS bucket,
           sum(r.value) AS usage, count(*) AS reads,
           count(*) FILTER (WHERE {ESTIMATED_SQL}) AS estimated
      FROM reads AS r
     WHERE r.account_id = %(account)s AND r.ts > %(since)s AND r.ts <= %(until)s
     GROUP BY 1, 2"""
_FROM_ROLLUP = """
    SELECT unit, date_trunc(%(resolution)s, day::timestamp) AS bucket, sum(usage) AS usage,
           sum(reads) AS reads, sum(estimated) AS estimated
      FROM usage_daily
     WHERE account_id = %(account)s AND day >= %(first_day)s AND day < %(end_day)s
     GROUP BY 1, 2"""


def usage_history(
    conn: psycopg.Connection,
    account_id: str,
    resolution: Resolution,
    start: date,
    end: date,
    tz_name: str,
) -> UsageHistory:
    """The account's usage per bucket over local dates [start, end), with last year beside."""
    tz = ZoneInfo(tz_name)
    since = local_midnight(_years_before(start, 1), tz)
    until = local_midnight(end, tz)
    first_day = _years_before(start, 1)
    use_rollup = resolution != "hour" and rollup_zone(conn) == tz_name
    rows = conn.execute(
        _FROM_ROLLUP if use_rollup else _FROM_READS,
        {
            "resolution": resolution,
            "tz": tz_name,
            "account": account_id,
            "since": since,
            "until": until,
            "first_day": first_day,
            "end_day": end,
        },
    ).fetchall()
    found: dict[str, dict[datetime, tuple[float | None, int, int]]] = defaultdict(dict)
    for unit, bucket, usage, reads, estimated in rows:
        found[unit][bucket] = (usage, reads, estimated)
    first = _truncate(start, resolution)
    last = datetime.combine(end, datetime.min.time())
    series = []
    for unit in sorted(found):
        by_bucket = found[unit]
        buckets = []
        bucket = first
        while bucket < last:
            usage, reads, estimated = by_bucket.get(bucket, (None, 0, 0))
            before = _a_year_before(bucket)
            previous = by_bucket.get(before) if before is not None else None
            buckets.append(
                Bucket(
                    start=bucket.replace(tzinfo=tz),
                    usage=usage,
                    reads=reads,
                    estimated_reads=estimated,
                    last_year_usage=previous[0] if previous else None,
                )
            )
            bucket = _step(bucket, resolution)
        series.append(Series(unit, buckets))
    return UsageHistory(account_id, resolution, tz_name, start, end, series)


def usage_csv(history: UsageHistory) -> str:
    """The history as CSV (columns `USAGE_CSV_COLUMNS`, `start` ISO 8601 with offset, empty
    cells where there is no value)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(USAGE_CSV_COLUMNS)
    for series in history.series:
        for b in series.buckets:
            writer.writerow(
                [
                    series.unit,
                    b.start.isoformat(),
                    "" if b.usage is None else repr(float(b.usage)),
                    b.reads,
                    b.estimated_reads,
                    "" if b.last_year_usage is None else repr(float(b.last_year_usage)),
                ]
            )
    return out.getvalue()
