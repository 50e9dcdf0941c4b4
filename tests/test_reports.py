"""meterwatch.reports against real databases (TimescaleDB and plain PostgreSQL) and real Redis:
exact counts, export formats, usage bucketing, live metrics and the stream backlog.

`seed_sample` is also what the API and dashboard tests load.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
import redis
from conftest import SERVERS
from rich.console import Console

from meterwatch import reports

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    """Data time: `minutes` after 2026-03-01 00:00 UTC."""
    return T0 + timedelta(minutes=minutes)


def seed_sample(conn: psycopg.Connection) -> None:
    """A small, fully known data set: three accounts, four meters, reads (water and electric),
    rejected, unmatched and duplicate deliveries, flags, alerts and pipeline status."""
    conn.execute(
        "INSERT INTO customers (customer_id, name) VALUES ('C1', 'Ada'), ('C2', 'Bo'), ('C3', 'Cy')"
    )
    conn.execute(
        """INSERT INTO accounts (account_id, customer_id, status, customer_class, cycle_day)
           VALUES ('A1', 'C1', 'active', 'residential', 1),
                  ('A2', 'C2', 'active', 'commercial', 1),
                  ('A3', 'C3', 'inactive', 'commercial', 15)"""
    )
    conn.execute("INSERT INTO service_points VALUES ('S1'), ('S2'), ('S3'), ('S4')")
    conn.execute("INSERT INTO meters VALUES ('M1'), ('M2'), ('M3'), ('E1')")
    conn.execute(
        """INSERT INTO meter_assignments (meter_id, service_point_id, account_id, valid_from)
           VALUES ('M1', 'S1', 'A1', '2025-01-01'), ('M2', 'S2', 'A2', '2025-01-01'),
                  ('M3', 'S3', 'A3', '2025-01-01'), ('E1', 'S4', 'A2', '2025-01-01')"""
    )
    reads: list[tuple[str, datetime, float | None, str, str, str]] = [
        # residential water: 1 gal every 15 minutes from 00:15 to 01:15
        *[("M1", at(m), 1.0, "gal", "A1", "S1") for m in (15, 30, 45, 60, 75)],
        # commercial water: 10 gal every 30 minutes; the first register has no interval value
        ("M2", at(0), None, "gal", "A2", "S2"),
        *[("M2", at(m), 10.0, "gal", "A2", "S2") for m in (30, 60, 90)],
        # commercial electricity: never summed with gallons
        ("E1", at(60), 5.0, "kWh", "A2", "S4"),
    ]
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO reads (meter_id, ts, value, reported_unit, account_id, service_point_id)
               VALUES (%s, %s, %s, %s, %s, %s)""",
            reads,
        )
    conn.execute(
        """INSERT INTO rejected_reads (delivery, received_at, reason, raw, meter_id) VALUES
           ('s:1-0', '2026-03-01T00:01:00Z', 'unparseable ts', 'M9,yesterday,"3,5"', 'M9'),
           ('s:2-0', '2026-03-01T00:02:00Z', 'value out of range', 'line one
line two', NULL)"""
    )
    conn.execute(
        """INSERT INTO unmatched_reads
             (meter_id, ts, value, reported_unit, reason, detail, delivery) VALUES
                  ('X1', '2026-03-01T00:15Z', 1, 'gal', 'unknown_meter', 'not in meters.csv', 'd1'),
                  ('X1', '2026-03-01T00:30Z', 1, 'gal', 'unknown_meter', 'not in meters.csv', 'd2'),
                  ('M7', '2026-03-01T00:15Z', 1, 'gal', 'retired_meter', 'retired 2025', 'd3')"""
    )
    conn.execute(
        """INSERT INTO duplicate_reads (delivery, meter_id, ts, value) VALUES
           ('s:3-0', 'M1', '2026-03-01T00:15Z', 1), ('s:4-0', 'M1', '2026-03-01T00:15Z', 2),
           ('s:5-0', 'M2', '2026-03-01T00:30Z', 10)"""
    )
    conn.execute(
        """INSERT INTO flags (meter_id, account_id, kind, started_at, ended_at, detected_at,
                              created_at, severity, score, evidence, status) VALUES
           ('M1', 'A1', 'leak', '2026-03-01T00:15Z', NULL, '2026-03-01T01:00Z',
            '2026-03-05T12:00:00.5Z', 'high', 0.9,
            'flow never below 1 gal per 15 min for 4 intervals, "continuous"', 'open'),
           ('M2', 'A2', 'spike', '2026-03-01T00:30Z', '2026-03-01T00:30Z', '2026-03-01T00:30Z',
            '2026-03-05T12:00Z', 'medium', 0.5, 'one interval of 10 gal
against a typical 2 gal', 'confirmed'),
           ('M2', 'A2', 'leak', '2026-02-20T00:00Z', '2026-02-21T00:00Z', '2026-02-20T06:00Z',
            '2026-03-05T12:00Z', 'low', 0.25, 'small', 'resolved'),
           ('M3', 'A3', 'meter_tamper', '2026-03-01T00:00Z', NULL, '2026-03-01T01:30Z',
            '2026-03-05T12:00Z', 'critical', 1, 'case opened', 'dismissed')"""
    )
    conn.execute(
        """INSERT INTO alerts (account_id, rule, period_start, period_end, detected_at,
                               created_at, late, status, channels, message) VALUES
           ('A1', 'leak', '2026-03-01', '2026-03-01', '2026-03-01T01:00Z',
            '2026-03-05T12:00Z', false, 'sent', '{email,sms}', 'Possible leak, "M1"'),
           ('A2', 'daily', '2026-03-01', '2026-03-01', '2026-03-01T01:30Z',
            '2026-03-05T12:00Z', true, 'sent', '{sms}', 'Daily use above 20 gal'),
           ('A2', 'period', '2026-03-01', '2026-03-31', '2026-03-01T01:30Z',
            '2026-03-05T12:00Z', false, 'pending', '{}', 'Period use above 25 gal')"""
    )
    conn.execute(
        """INSERT INTO pipeline_status (source, worker, position, deliveries, latest_read_ts)
           VALUES ('meterwatch:reads', '0', '1700000000000-0', 19, '2026-03-01T01:30Z')"""
    )


@pytest.fixture
def conn(any_database_url: str) -> psycopg.Connection:
    with psycopg.connect(any_database_url) as conn:
        seed_sample(conn)
        conn.commit()
        yield conn  # type: ignore[misc]


def test_stats_counts_everything_exactly(conn: psycopg.Connection) -> None:
    assert reports.stats(conn) == {
        "reads": {
            "stored": 10,
            "rejected": 2,
            "unmatched": 3,
            "unmatched_by_reason": {
                "unknown_meter": 2,
                "retired_meter": 1,
                "not_yet_installed": 0,
                "ambiguous_assignment": 0,
            },
            "duplicates": 3,
        },
        "flags": {
            "total": 4,
            "by_kind": {
                **dict.fromkeys(reports.FLAG_KINDS, 0),
                "leak": 2,
                "spike": 1,
                "meter_tamper": 1,
            },
            "by_status": {"open": 1, "confirmed": 1, "dismissed": 1, "resolved": 1},
        },
        "alerts": {
            "total": 3,
            "by_status": {
                "pending": 1,
                "deferred": 0,
                "sending": 0,
                "sent": 2,
                "failed": 0,
                "suppressed": 0,
            },
        },
    }


def test_render_stats_reads_plainly(conn: psycopg.Connection) -> None:
    console = Console(record=True, width=100)
    reports.render_stats(reports.stats(conn), console)
    text = console.export_text()
    for line in ("stored", "unknown meter", "duplicates ignored", "Flags: 4", "Alerts: 3"):
        assert line in text
    assert "usage anomaly" not in text  # kinds with no flags are left out
    assert "suppressed" in text  # statuses are always listed


def test_stats_of_an_empty_database_has_every_key(any_database_url: str) -> None:
    with psycopg.connect(any_database_url) as conn:
        result = reports.stats(conn)
    assert result["reads"] == {
        "stored": 0,
        "rejected": 0,
        "unmatched": 0,
        "unmatched_by_reason": dict.fromkeys(reports.UNMATCHED_REASONS, 0),
        "duplicates": 0,
    }
    assert result["flags"]["by_kind"] == dict.fromkeys(reports.FLAG_KINDS, 0)
    assert result["alerts"]["total"] == 0


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_export_flags_columns_and_formats(conn: psycopg.Connection) -> None:
    out = io.StringIO()
    assert reports.export_flags(conn, out) == 4
    header, *rows = read_csv(out.getvalue())
    assert ",".join(header) == (
        "meter_id,account_id,kind,started_at,ended_at,detected_at,created_at,"
        "severity,score,status,evidence"
    )
    # ordered by meter, start, kind
    assert [(r[0], r[2]) for r in rows] == [
        ("M1", "leak"),
        ("M2", "leak"),
        ("M2", "spike"),
        ("M3", "meter_tamper"),
    ]
    assert rows[0] == [
        "M1",
        "A1",
        "leak",
        "2026-03-01T00:15:00+00:00",
        "",  # still open
        "2026-03-01T01:00:00+00:00",
        "2026-03-05T12:00:00.500000+00:00",
        "high",
        "0.9",
        "open",
        'flow never below 1 gal per 15 min for 4 intervals, "continuous"',
    ]
    assert rows[2][-1] == "one interval of 10 gal\nagainst a typical 2 gal"
    assert rows[3][8] == "1.0"


def test_export_in_the_utility_time_zone(conn: psycopg.Connection) -> None:
    out = io.StringIO()
    reports.export_flags(conn, out, tz=ZoneInfo("America/Chicago"))
    row = read_csv(out.getvalue())[1]
    assert row[3] == "2026-02-28T18:15:00-06:00"
    assert datetime.fromisoformat(row[3]) == at(15)


def test_export_alerts_columns_and_formats(conn: psycopg.Connection) -> None:
    out = io.StringIO()
    assert reports.export_alerts(conn, out) == 3
    header, *rows = read_csv(out.getvalue())
    assert ",".join(header) == (
        "account_id,rule,period_start,period_end,detected_at,created_at,late,status,"
        "channels,message"
    )
    assert rows == [
        [
            "A1",
            "leak",
            "2026-03-01",
            "2026-03-01",
            "2026-03-01T01:00:00+00:00",
            "2026-03-05T12:00:00+00:00",
            "false",
            "sent",
            "email;sms",
            'Possible leak, "M1"',
        ],
        [
            "A2",
            "daily",
            "2026-03-01",
            "2026-03-01",
            "2026-03-01T01:30:00+00:00",
            "2026-03-05T12:00:00+00:00",
            "true",
            "sent",
            "sms",
            "Daily use above 20 gal",
        ],
        [
            "A2",
            "period",
            "2026-03-01",
            "2026-03-31",
            "2026-03-01T01:30:00+00:00",
            "2026-03-05T12:00:00+00:00",
            "false",
            "pending",
            "",
            "Period use above 25 gal",
        ],
    ]
    assert date.fromisoformat(rows[2][3]) == date(2026, 3, 31)


def test_export_rejected_keeps_the_raw_payload(conn: psycopg.Connection) -> None:
    out = io.StringIO()
    assert reports.export_rejected(conn, out) == 2
    assert read_csv(out.getvalue()) == [
        ["received_at", "reason", "raw"],
        ["2026-03-01T00:01:00+00:00", "unparseable ts", 'M9,yesterday,"3,5"'],
        ["2026-03-01T00:02:00+00:00", "value out of range", "line one\nline two"],
    ]


def test_export_of_an_empty_table_is_the_header(any_database_url: str) -> None:
    out = io.StringIO()
    with psycopg.connect(any_database_url) as conn:
        assert reports.export_alerts(conn, out) == 0
    assert out.getvalue() == ",".join(reports.ALERT_EXPORT_COLUMNS) + "\n"


@pytest.mark.parametrize("autocommit", [False, True])
def test_export_streams_many_rows_in_batches(any_database_url: str, autocommit: bool) -> None:
    rows = 3 * 5000 + 7  # several cursor batches and a partial one
    with psycopg.connect(any_database_url, autocommit=autocommit) as conn:
        conn.execute(
            """INSERT INTO rejected_reads (delivery, received_at, reason, raw)
               SELECT 'd' || i, timestamptz '2026-03-01T00:00Z' + i * interval '1 second',
                      'bad', 'raw ' || i
                 FROM generate_series(1, %s) AS i""",
            (rows,),
        )
        if not autocommit:
            conn.commit()
        out = io.StringIO()
        assert reports.export_rejected(conn, out) == rows
        # the named cursor is gone and the connection is usable afterwards
        assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone() == (0,)
    lines = out.getvalue().splitlines()
    assert len(lines) == rows + 1
    assert lines[-1] == f"2026-03-01T04:10:07+00:00,bad,raw {rows}"


def test_latest_flags_newest_detection_first(conn: psycopg.Connection) -> None:
    flags = reports.latest_flags(conn, 3)
    assert [(f.meter_id, f.kind) for f in flags] == [
        ("M3", "meter_tamper"),
        ("M1", "leak"),
        ("M2", "spike"),
    ]
    assert flags[1].ended_at is None
    assert flags[1].detected_at == at(60)
    assert flags[1].score == pytest.approx(0.9)


def test_recent_rejected_newest_first(conn: psycopg.Connection) -> None:
    rows = reports.recent_rejected(conn, 10)
    assert [r.reason for r in rows] == ["value out of range", "unparseable ts"]
    assert rows[1].meter_id == "M9"


def usage_table(result: reports.UsageByClass) -> list[tuple[datetime, str, str, float, int]]:
    return [(p.bucket, p.customer_class, p.unit, p.usage, p.reads) for p in result.points]


def test_usage_by_class_hourly_over_the_newest_day(conn: psycopg.Connection) -> None:
    result = reports.usage_by_class(conn)
    assert result.until == at(90)  # the newest read, not the wall clock
    assert result.since == at(90) - timedelta(hours=24)
    # A read stamped 01:00 ends the 00:45-01:00 interval: it belongs to the 00:00 hour.
    assert usage_table(result) == [
        (at(-60), "commercial", "gal", 0.0, 1),  # the 00:00 register has no interval value
        (at(0), "commercial", "gal", 20.0, 2),  # 00:30, 01:00
        (at(0), "commercial", "kWh", 5.0, 1),  # electricity stays apart
        (at(0), "residential", "gal", 4.0, 4),  # 00:15 .. 01:00
        (at(60), "commercial", "gal", 10.0, 1),  # 01:30
        (at(60), "residential", "gal", 1.0, 1),  # 01:15
    ]


def test_usage_by_class_window_ends_at_the_reference_time(conn: psycopg.Connection) -> None:
    # ts in (00:00, 01:00]: the register without a value at 00:00 is outside.
    result = reports.usage_by_class(conn, hours=1, until=at(60))
    assert usage_table(result) == [
        (at(0), "commercial", "gal", 20.0, 2),
        (at(0), "commercial", "kWh", 5.0, 1),
        (at(0), "residential", "gal", 4.0, 4),
    ]
    # a register without a value counts as a read but adds nothing
    result = reports.usage_by_class(conn, hours=2, until=at(30), bucket="15 minutes")
    assert usage_table(result) == [
        (at(-15), "commercial", "gal", 0.0, 1),  # the 00:00 register
        (at(0), "residential", "gal", 1.0, 1),
        (at(15), "commercial", "gal", 10.0, 1),
        (at(15), "residential", "gal", 1.0, 1),
    ]


def test_usage_by_class_days_start_at_local_midnight(conn: psycopg.Connection) -> None:
    result = reports.usage_by_class(conn, hours=24, bucket=timedelta(days=1), tz="America/Chicago")
    # 2026-03-01 00:15Z is 2026-02-28 18:15 in Chicago: the day began at 06:00Z.
    assert {p.bucket for p in result.points} == {datetime(2026, 2, 28, 6, 0, tzinfo=UTC)}
    assert sum(p.usage for p in result.points if p.unit == "gal") == 35.0


def test_usage_by_class_without_reads(any_database_url: str) -> None:
    with psycopg.connect(any_database_url) as conn:
        result = reports.usage_by_class(conn)
    assert result.points == [] and result.until is None


def test_live_metrics_lag_totals_and_sources(conn: psycopg.Connection) -> None:
    metrics = reports.live_metrics(conn, now=at(90) + timedelta(minutes=5))
    assert metrics.newest_read_ts == at(90)
    assert metrics.lag_s == 300.0
    assert metrics.totals == reports.ReadTotals(stored=10, rejected=2, unmatched=3, duplicates=3)
    assert [s.source for s in metrics.sources] == ["meterwatch:reads"]
    assert metrics.sources[0].deliveries == 19
    # without a sampler: reads received in the window (the seed's received_at is now())
    live = reports.live_metrics(conn, window_s=3600)
    assert live.reads_per_s == pytest.approx(10 / 3600)


def test_live_metrics_rate_from_committed_deliveries(conn: psycopg.Connection) -> None:
    throughput = reports.Throughput(window_s=60)
    throughput.observe(0, at=time.monotonic() - 10)  # ten seconds ago nothing was committed
    metrics = reports.live_metrics(conn, throughput=throughput)
    assert metrics.reads_per_s == pytest.approx(1.9, rel=0.1)  # 19 deliveries since


def test_live_metrics_before_any_read(any_database_url: str) -> None:
    with psycopg.connect(any_database_url) as conn:
        metrics = reports.live_metrics(conn, throughput=reports.Throughput())
    assert metrics.newest_read_ts is None and metrics.lag_s is None
    assert metrics.reads_per_s == 0.0
    assert metrics.totals == reports.ReadTotals(0, 0, 0, 0)


def test_throughput_averages_over_the_window() -> None:
    throughput = reports.Throughput(window_s=10)
    assert throughput.observe(100, at=0.0) is None
    assert throughput.observe(150, at=5.0) == 10.0
    assert throughput.observe(300, at=10.0) == 20.0
    # samples older than the window drop out, one stays as the baseline
    assert throughput.observe(300, at=20.0) == 0.0  # nothing since t=10
    # counters reset (a fresh pipeline): start over
    assert throughput.observe(5, at=21.0) is None


def publish(client: redis.Redis, key: str, n: int) -> list[str]:
    return [str(client.xadd(key, {"meter_id": "M1", "value": str(i)})) for i in range(n)]


def status(key: str, position: str | None, deliveries: int) -> reports.SourceStatus:
    return reports.SourceStatus(key, "0", position, deliveries, None, T0)


def test_stream_backlog(redis_client: redis.Redis, stream_key: str) -> None:
    ids = publish(redis_client, stream_key, 10)
    missing = f"{stream_key}:never"
    found = reports.stream_backlog(
        redis_client,
        [stream_key, missing],
        {stream_key: status(stream_key, ids[3], 4)},
    )
    assert [(b.stream, b.length, b.entries_added, b.backlog, b.exact) for b in found] == [
        (stream_key, 10, 10, 6, True),
        (missing, 0, 0, 0, True),
    ]
    assert found[0].last_id == ids[-1] and found[0].committed_position == ids[3]
    # everything committed
    (done,) = reports.stream_backlog(
        redis_client, [stream_key], {stream_key: status(stream_key, ids[-1], 10)}
    )
    assert done.backlog == 0 and done.exact
    # never committed from: the whole stream waits
    (fresh,) = reports.stream_backlog(redis_client, [stream_key], {})
    assert fresh.backlog == 10


def test_stream_backlog_estimates_a_long_backlog(
    redis_client: redis.Redis, stream_key: str
) -> None:
    ids = publish(redis_client, stream_key, 10)
    (long,) = reports.stream_backlog(
        redis_client,
        [stream_key],
        {stream_key: status(stream_key, ids[1], 2)},
        count_up_to=3,
    )
    assert (long.backlog, long.exact) == (8, False)  # entries-added 10 − deliveries 2


def test_stream_backlog_with_a_bytes_client(stream_key: str) -> None:
    client = redis.Redis.from_url(SERVERS.redis_url)  # decode_responses=False: bytes replies
    try:
        ids = [i.decode() for i in (client.xadd(stream_key, {"v": "1"}) for _ in range(3))]
        (found,) = reports.stream_backlog(
            client, [stream_key], {stream_key: status(stream_key, ids[0], 1)}
        )
        assert (found.backlog, found.last_id) == (2, ids[-1])
    finally:
        client.delete(stream_key)
        client.close()
