"""Reporting queries shared by the CLI, the API and the dashboard: counts, CSV exports, the live
page's metrics, usage by customer class, and the Redis stream backlog.

Every function takes an open psycopg connection (and Redis client where it needs one) and
leaves transactions to the caller, except the exports, which open one for their server-side
cursor. Rows come back as frozen dataclasses.

Time: reads carry data time (`ts`, the end of the interval) and the demo replays history on an
accelerated clock, so "the last 24 hours" means the 24 hours before the newest read stored,
not before the wall clock; every such function takes the reference time as a parameter.

The `stats()` dictionary is the public `meterwatch stats --json` format:

    {
      "reads": {
        "stored": int,                 # rows in reads
        "rejected": int,               # rows in rejected_reads
        "unmatched": int,              # rows in unmatched_reads (resolved or not)
        "unmatched_by_reason": {       # every reason, 0 when none
          "unknown_meter": int, "retired_meter": int,
          "not_yet_installed": int, "ambiguous_assignment": int
        },
        "duplicates": int              # rows in duplicate_reads: deliveries ignored
      },
      "flags": {
        "total": int,
        "by_kind": {"leak": int, ...}, # every SPEC kind (0 when none) plus any other kind found
        "by_status": {"open": int, "confirmed": int, "dismissed": int, "resolved": int}
      },
      "alerts": {
        "total": int,
        "by_status": {"pending": int, "deferred": int, "sending": int,
                      "sent": int, "failed": int, "suppressed": int}
      }
    }
"""

from __future__ import annotations

import csv
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TextIO

import psycopg
import redis
from psycopg.rows import class_row
from rich.console import Console
from rich.table import Table

from meterwatch.db import has_timescaledb

# The closed vocabularies of the schema's CHECK constraints and the SPEC's flag kinds: stats()
# always reports every one of them, so a count of zero is a 0 rather than a missing key.
FLAG_KINDS = (
    "leak",
    "burst",
    "stopped_meter",
    "reverse_flow",
    "spike",
    "gap",
    "rollover",
    "inactive_usage",
    "stuck_reading",
    "usage_anomaly",
)
FLAG_STATUSES = ("open", "confirmed", "dismissed", "resolved")
ALERT_STATUSES = ("pending", "deferred", "sending", "sent", "failed", "suppressed")
UNMATCHED_REASONS = (
    "unknown_meter",
    "retired_meter",
    "not_yet_installed",
    "ambiguous_assignment",
)

FLAG_EXPORT_COLUMNS = (
    "meter_id",
    "account_id",
    "kind",
    "started_at",
    "ended_at",
    "detected_at",
    "created_at",
    "severity",
    "score",
    "status",
    "evidence",
)
ALERT_EXPORT_COLUMNS = (
    "account_id",
    "rule",
    "period_start",
    "period_end",
    "detected_at",
    "created_at",
    "late",
    "status",
    "channels",
    "message",
)
REJECTED_EXPORT_COLUMNS = ("received_at", "reason", "raw")

# Rows a server-side cursor fetches per round trip during an export.
_EXPORT_BATCH = 5000


# --- counts -----------------------------------------------------------------------------------


def _counts_by(table: str, column: str) -> str:
    # Only ever called with the literal names below, never with input.
    return (
        f"(SELECT coalesce(jsonb_object_agg({column}, n), '{{}}'::jsonb) "
        f"FROM (SELECT {column}, count(*) AS n FROM {table} GROUP BY {column}) AS g)"
    )


# One statement, so that every count comes from the same snapshot.
_STATS_SQL = f"""
SELECT
  (SELECT count(*) FROM reads)           AS stored,
  (SELECT count(*) FROM rejected_reads)  AS rejected,
  (SELECT count(*) FROM duplicate_reads) AS duplicates,
  {_counts_by("unmatched_reads", "reason")} AS unmatched_by_reason,
  {_counts_by("flags", "kind")}          AS flags_by_kind,
  {_counts_by("flags", "status")}        AS flags_by_status,
  {_counts_by("alerts", "status")}       AS alerts_by_status
"""


def _with_zeros(known: Sequence[str], found: Mapping[str, int]) -> dict[str, int]:
    counts = {name: 0 for name in known}
    for name in sorted(found):
        counts[name] = int(found[name])
    return counts


def stats(conn: psycopg.Connection) -> dict[str, Any]:
    """Exact counts of reads, flags and alerts, in the `stats --json` format (module docstring)."""
    row = conn.execute(_STATS_SQL).fetchone()
    assert row is not None
    stored, rejected, duplicates, unmatched, kinds, flag_statuses, alert_statuses = row
    unmatched_by_reason = _with_zeros(UNMATCHED_REASONS, unmatched)
    flags_by_kind = _with_zeros(FLAG_KINDS, kinds)
    alerts_by_status = _with_zeros(ALERT_STATUSES, alert_statuses)
    return {
        "reads": {
            "stored": stored,
            "rejected": rejected,
            "unmatched": sum(unmatched_by_reason.values()),
            "unmatched_by_reason": unmatched_by_reason,
            "duplicates": duplicates,
        },
        "flags": {
            "total": sum(flags_by_kind.values()),
            "by_kind": flags_by_kind,
            "by_status": _with_zeros(FLAG_STATUSES, flag_statuses),
        },
        "alerts": {
            "total": sum(alerts_by_status.values()),
            "by_status": alerts_by_status,
        },
    }


def render_stats(counts: Mapping[str, Any], console: Console) -> None:
    """Print `stats()` counts as readable tables (what `meterwatch stats` shows without
    --json). Zero rows of the flag kinds are left out; statuses are always listed."""
    reads = counts["reads"]
    table = Table(title="Reads", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("reads", justify="right")
    table.add_row("stored", f"{reads['stored']:,}")
    table.add_row("rejected", f"{reads['rejected']:,}")
    table.add_row("unmatched (exception queue)", f"{reads['unmatched']:,}")
    for reason, n in reads["unmatched_by_reason"].items():
        if n:
            table.add_row(f"  {reason.replace('_', ' ')}", f"{n:,}")
    table.add_row("duplicates ignored", f"{reads['duplicates']:,}")
    console.print(table)
    for title, section, groups in (
        ("Flags", counts["flags"], ("by_kind", "by_status")),
        ("Alerts", counts["alerts"], ("by_status",)),
    ):
        table = Table(title=f"{title}: {section['total']:,}", title_justify="left")
        table.add_column(title.lower()[:-1])
        table.add_column("count", justify="right")
        for group in groups:
            for name, n in section[group].items():
                if n or group == "by_status":
                    table.add_row(name.replace("_", " "), f"{n:,}")
            table.add_section()
        console.print(table)


@dataclass(frozen=True)
class ReadTotals:
    """How many deliveries ended where: stored, rejected, unmatched, ignored as duplicates."""

    stored: int
    rejected: int
    unmatched: int
    duplicates: int


def read_totals(conn: psycopg.Connection) -> ReadTotals:
    """Exact totals of the four places a delivered read can end up (one snapshot)."""
    with conn.cursor(row_factory=class_row(ReadTotals)) as cur:
        row = cur.execute(
            """SELECT (SELECT count(*) FROM reads)           AS stored,
                      (SELECT count(*) FROM rejected_reads)  AS rejected,
                      (SELECT count(*) FROM unmatched_reads) AS unmatched,
                      (SELECT count(*) FROM duplicate_reads) AS duplicates"""
        ).fetchone()
    assert row is not None
    return row


# --- CSV exports ------------------------------------------------------------------------------


def _iso(value: datetime | None, tz: tzinfo) -> str:
    return "" if value is None else value.astimezone(tz).isoformat()


def _stream_csv(
    conn: psycopg.Connection,
    out: TextIO,
    name: str,
    header: Sequence[str],
    query: str,
    render: Callable[[tuple[Any, ...]], list[Any]],
) -> int:
    """Write the header, then one CSV line per row of `query`, fetched through a server-side
    cursor in batches so that memory stays flat however many rows there are."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    count = 0
    # A server-side cursor lives in a transaction; this one opens (or nests in) it.
    with conn.transaction(), conn.cursor(name=name) as cur:
        cur.itersize = _EXPORT_BATCH
        cur.execute(query)
        for row in cur:
            writer.writerow(render(row))
            count += 1
    return count


def export_flags(conn: psycopg.Connection, out: TextIO, *, tz: tzinfo = UTC) -> int:
    """Write every flag as CSV (columns `FLAG_EXPORT_COLUMNS`, timestamps ISO 8601 with the
    offset of `tz`), ordered by meter, start and kind. Returns the number of rows written."""

    def render(row: tuple[Any, ...]) -> list[Any]:
        meter, account, kind, started, ended, detected, created, severity, score, status, ev = row
        return [
            meter,
            account,
            kind,
            _iso(started, tz),
            _iso(ended, tz),
            _iso(detected, tz),
            _iso(created, tz),
            severity,
            repr(float(score)),
            status,
            ev,
        ]

    return _stream_csv(
        conn,
        out,
        "export_flags",
        FLAG_EXPORT_COLUMNS,
        f"SELECT {', '.join(FLAG_EXPORT_COLUMNS)} FROM flags ORDER BY meter_id, started_at, kind",
        render,
    )


def export_alerts(conn: psycopg.Connection, out: TextIO, *, tz: tzinfo = UTC) -> int:
    """Write every alert as CSV (columns `ALERT_EXPORT_COLUMNS`): period dates as YYYY-MM-DD
    (already in the utility's time zone), timestamps ISO 8601 with the offset of `tz`, `late` as
    true/false, `channels` joined with ';'. Ordered by account, period and rule."""

    def render(row: tuple[Any, ...]) -> list[Any]:
        account, rule, start, end, detected, created, late, status, channels, message = row
        return [
            account,
            rule,
            start.isoformat(),
            end.isoformat(),
            _iso(detected, tz),
            _iso(created, tz),
            "true" if late else "false",
            status,
            ";".join(channels),
            message,
        ]

    return _stream_csv(
        conn,
        out,
        "export_alerts",
        ALERT_EXPORT_COLUMNS,
        f"SELECT {', '.join(ALERT_EXPORT_COLUMNS)} FROM alerts "
        "ORDER BY account_id, period_start, rule",
        render,
    )


def export_rejected(conn: psycopg.Connection, out: TextIO, *, tz: tzinfo = UTC) -> int:
    """Write every rejected read as CSV (columns `REJECTED_EXPORT_COLUMNS`: when it arrived,
    why it was rejected, and the payload exactly as received), oldest first."""

    def render(row: tuple[Any, ...]) -> list[Any]:
        received, reason, raw = row
        return [_iso(received, tz), reason, raw]

    return _stream_csv(
        conn,
        out,
        "export_rejected",
        REJECTED_EXPORT_COLUMNS,
        "SELECT received_at, reason, raw FROM rejected_reads ORDER BY received_at, rejected_id",
        render,
    )


# --- rows for the live page -------------------------------------------------------------------


@dataclass(frozen=True)
class FlagRow:
    flag_id: int
    meter_id: str
    account_id: str
    kind: str
    started_at: datetime
    ended_at: datetime | None
    detected_at: datetime
    created_at: datetime
    severity: str
    score: float
    status: str
    evidence: str


def latest_flags(conn: psycopg.Connection, limit: int = 20) -> list[FlagRow]:
    """The `limit` most recently detected flags (by data time of detection), newest first."""
    with conn.cursor(row_factory=class_row(FlagRow)) as cur:
        return cur.execute(
            """SELECT flag_id, meter_id, account_id, kind, started_at, ended_at, detected_at,
                      created_at, severity, score, status, evidence
                 FROM flags ORDER BY detected_at DESC, flag_id DESC LIMIT %s""",
            (limit,),
        ).fetchall()


@dataclass(frozen=True)
class RejectedRow:
    rejected_id: int
    received_at: datetime
    reason: str
    raw: str
    meter_id: str | None


def recent_rejected(conn: psycopg.Connection, limit: int = 20) -> list[RejectedRow]:
    """The `limit` most recently received rejected reads, newest first."""
    with conn.cursor(row_factory=class_row(RejectedRow)) as cur:
        return cur.execute(
            """SELECT rejected_id, received_at, reason, raw, meter_id FROM rejected_reads
                ORDER BY received_at DESC, rejected_id DESC LIMIT %s""",
            (limit,),
        ).fetchall()


@dataclass(frozen=True)
class SourceStatus:
    """What the dataflow has committed from one source (a row of pipeline_status)."""

    source: str
    worker: str
    position: str | None
    deliveries: int
    latest_read_ts: datetime | None
    updated_at: datetime


def pipeline_sources(conn: psycopg.Connection) -> list[SourceStatus]:
    """Every source the dataflow has committed from, by name."""
    with conn.cursor(row_factory=class_row(SourceStatus)) as cur:
        return cur.execute(
            """SELECT source, worker, position, deliveries, latest_read_ts, updated_at
                 FROM pipeline_status ORDER BY source"""
        ).fetchall()


def newest_read_ts(conn: psycopg.Connection) -> datetime | None:
    """The timestamp of the newest read stored (data time), or None when there are none.
    Cheap on a hypertable (newest chunk first); a scan on plain PostgreSQL."""
    row = conn.execute("SELECT max(ts) FROM reads").fetchone()
    return row[0] if row else None


class Throughput:
    """Deliveries committed per second, from successive samples of the dataflow's running total
    (the sum of pipeline_status.deliveries). Keep one per process and feed it every time the
    live metrics are read; the rate covers the last `window_s` seconds of samples, which
    smooths the dataflow's commit batches. Thread-safe."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def observe(self, total: int, at: float | None = None) -> float | None:
        """Record the running total at monotonic time `at` (default: now); returns the rate over
        the window, or None until there are two samples far enough apart to measure one."""
        at = time.monotonic() if at is None else at
        with self._lock:
            if self._samples and total < self._samples[-1][1]:
                self._samples.clear()  # the counters were reset (a fresh pipeline_status)
            self._samples.append((at, total))
            # Keep one sample at or before the window's start as the baseline.
            while len(self._samples) > 2 and self._samples[1][0] <= at - self.window_s:
                self._samples.popleft()
            first_at, first_total = self._samples[0]
            if at - first_at < 0.5:
                return None
            return (total - first_total) / (at - first_at)


@dataclass(frozen=True)
class LiveMetrics:
    """The live page's numbers.

    `reads_per_s`: deliveries the dataflow committed per second (stored, rejected, unmatched or
    duplicate) over about `window_s` seconds, or None when it cannot be measured yet.
    `lag_s`: seconds from the newest read committed (data time) to `as_of` (the database's wall
    clock): how far the pipeline is behind the head-end. None before any read.
    """

    as_of: datetime
    newest_read_ts: datetime | None
    lag_s: float | None
    reads_per_s: float | None
    window_s: float
    totals: ReadTotals
    sources: list[SourceStatus] = field(default_factory=list)


def live_metrics(
    conn: psycopg.Connection,
    window_s: float = 60.0,
    *,
    throughput: Throughput | None = None,
    now: datetime | None = None,
) -> LiveMetrics:
    """Throughput, lag, totals and per-source status for the live page.

    With a `throughput` sampler (the API keeps one) and a dataflow writing pipeline_status, the
    rate comes from the growth of pipeline_status.deliveries, which costs nothing. Without one,
    or before the dataflow has committed anything, it counts reads stored in the last
    `window_s` seconds of wall clock (reads.received_at) — exact, but a scan of reads, so keep
    that path for small databases and one-off commands. `now` defaults to the database's clock.
    """
    if now is None:
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        now = row[0]
    assert now is not None
    sources = pipeline_sources(conn)
    committed = [s.latest_read_ts for s in sources if s.latest_read_ts is not None]
    newest = max(committed) if committed else newest_read_ts(conn)
    rate: float | None
    if throughput is not None and sources:
        rate = throughput.observe(sum(s.deliveries for s in sources))
    else:
        row = conn.execute(
            "SELECT count(*) FROM reads WHERE received_at > %s - make_interval(secs => %s)",
            (now, window_s),
        ).fetchone()
        rate = (row[0] if row else 0) / window_s
    return LiveMetrics(
        as_of=now,
        newest_read_ts=newest,
        lag_s=None if newest is None else (now - newest).total_seconds(),
        reads_per_s=rate,
        window_s=window_s,
        totals=read_totals(conn),
        sources=sources,
    )


# --- usage by customer class ------------------------------------------------------------------


@dataclass(frozen=True)
class UsagePoint:
    """Consumption of one customer class in one time bucket, in the commodity's base unit."""

    bucket: datetime  # start of the bucket
    customer_class: str
    unit: str  # 'gal' (water) or 'kWh' (electricity)
    usage: float
    reads: int


@dataclass(frozen=True)
class UsageByClass:
    """System usage by customer class over `hours` up to `until` (data time), in buckets."""

    since: datetime | None
    until: datetime | None
    hours: float
    bucket: str
    points: list[UsagePoint]


# `ts` is the END of the interval a read covers, so a read stamped 01:00 is consumption from
# before 01:00: shifting by a microsecond puts it in the 00:00 bucket, where it happened.
_BUCKET_TIMESCALE = "time_bucket(%(bucket)s::interval, r.ts - interval '1 microsecond', %(tz)s)"
# date_bin with time_bucket's default origin (Monday 2000-01-03, local), so that both give the
# same buckets; computed on local time so that day buckets start at the utility's midnight.
_BUCKET_PLAIN = (
    "date_bin(%(bucket)s::interval, (r.ts - interval '1 microsecond') AT TIME ZONE %(tz)s, "
    "TIMESTAMP '2000-01-03') AT TIME ZONE %(tz)s"
)


def usage_by_class(
    conn: psycopg.Connection,
    hours: float = 24,
    bucket: str | timedelta = "1 hour",
    *,
    until: datetime | None = None,
    tz: str = "UTC",
) -> UsageByClass:
    """Usage summed by customer class per time bucket, for reads with `ts` in
    (until − hours, until]. `until` defaults to the newest read stored (data time, see the
    module docstring); `bucket` is a PostgreSQL interval ('15 minutes', '1 hour', '1 day');
    buckets are aligned in the IANA zone `tz`. Uses TimescaleDB's time_bucket where the
    extension is installed and date_bin otherwise — same buckets either way. Water and
    electricity are never summed together: each point carries its unit."""
    if until is None:
        until = newest_read_ts(conn)
    if until is None:
        return UsageByClass(None, None, hours, str(bucket), [])
    since = until - timedelta(hours=hours)
    bucket_sql = _BUCKET_TIMESCALE if has_timescaledb(conn) else _BUCKET_PLAIN
    query = f"""
        SELECT {bucket_sql} AS bucket,
               a.customer_class,
               CASE WHEN r.reported_unit = 'kWh' THEN 'kWh' ELSE 'gal' END AS unit,
               coalesce(sum(r.value), 0) AS usage,
               count(*) AS reads
          FROM reads AS r JOIN accounts AS a USING (account_id)
         WHERE r.ts > %(since)s AND r.ts <= %(until)s
         GROUP BY 1, 2, 3
         ORDER BY 1, 2, 3"""
    params = {"bucket": bucket, "tz": tz, "since": since, "until": until}
    with conn.cursor(row_factory=class_row(UsagePoint)) as cur:
        points = cur.execute(query, params).fetchall()
    return UsageByClass(since, until, hours, str(bucket), points)


# --- the Redis stream backlog -----------------------------------------------------------------


@dataclass(frozen=True)
class StreamBacklog:
    """Entries waiting in one Redis stream after the position the dataflow has committed.

    `exact` is False when the backlog was too long to count cheaply: then `backlog` is an
    estimate (entries added to the stream minus deliveries committed, within bounds)."""

    stream: str
    length: int
    entries_added: int
    last_id: str | None
    committed_position: str | None
    backlog: int
    exact: bool


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def stream_backlog(
    client: redis.Redis,
    stream_keys: Iterable[str],
    pipeline_positions: Mapping[str, SourceStatus],
    *,
    count_up_to: int = 500,
) -> list[StreamBacklog]:
    """The backlog of each stream: how many entries come after the last entry the dataflow
    committed (pipeline_positions[stream key].position).

    Cheap by construction: XINFO STREAM, then XRANGE from the committed position for at most
    `count_up_to` + 1 entries. A longer backlog is estimated as entries-added − deliveries
    (right when the dataflow started at the stream's beginning), bounded by what the count
    proved and by the stream's length. A stream never committed from counts whole."""
    found = []
    for key in stream_keys:
        status = pipeline_positions.get(key)
        position = status.position if status else None
        try:
            info = client.xinfo_stream(key)
        except redis.ResponseError:  # no such key: nothing was ever published
            found.append(StreamBacklog(key, 0, 0, None, position, 0, True))
            continue
        length = int(info["length"])
        added = int(info.get("entries-added", length))
        last_id = _text(info.get("last-generated-id"))
        if position is None:
            backlog, exact = length, True
        elif last_id is None or _stream_id(position) >= _stream_id(last_id):
            backlog, exact = 0, True
        else:
            after = client.xrange(key, f"({position}", "+", count=count_up_to + 1)
            if len(after) <= count_up_to:
                backlog, exact = len(after), True
            else:
                estimate = added - status.deliveries if status else length
                backlog, exact = max(count_up_to + 1, min(length, estimate)), False
        found.append(StreamBacklog(key, length, added, last_id, position, backlog, exact))
    return found
