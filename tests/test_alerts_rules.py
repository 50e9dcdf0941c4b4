"""Deciding alerts (alerts.decide) through the real dataflow and real PostgreSQL: usage per
account across meters and duplicates, local days and billing periods, one alert per rule and
period across replays and restarts, late data, thresholds changed while reads flow, leak
notices, and exact totals when two batches race."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from alerts_fixtures import add_account, alerts_of, run_reads, write_reads

from alerts.decide import AlertDecider, apply_tracking_changes
from alerts.periods import billing_period, read_day
from detectors.lifecycle import FlagChange
from meterwatch.settings import Settings
from stream.meter import FlagWrite, StoredRead
from stream.reads import Delivery
from stream.sink import StoredFlag

CHICAGO = ZoneInfo("America/Chicago")


def local(day: int, hour: int, month: int = 1) -> datetime:
    """A wall-clock time in Chicago in 2026 (January: UTC-6, no DST change)."""
    return datetime(2026, month, day, tzinfo=CHICAGO) + timedelta(hours=hour)


@pytest.fixture
def settings(database_url: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        database_url=database_url,
        utility_tz="America/Chicago",
        utility_name="City Water",
        portal_url="https://city.example/usage",
        alert_price_per_gal=0.01,
        alert_fixed_charge=0,
    )


def daily_usage(database_url: str, account_id: str) -> dict[date, float]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT day, usage FROM account_daily_usage WHERE account_id = %s ORDER BY day",
            (account_id,),
        ).fetchall()
    return {day: usage for day, usage in rows}


def test_daily_threshold_counts_every_meter_once_and_fires_once(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url) as conn:
        add_account(conn, "A1", meters=["M-HOUSE", "M-IRR"], daily=100)
    house = [("M-HOUSE", local(5, h), 3.0) for h in range(1, 25)]  # 72 gal on Jan 5
    irrigation = [("M-IRR", local(5, h), 30.0) for h in (6, 7, 8)]  # 90 gal at dawn
    reads = [
        ("M-HOUSE", local(5, 0), 3.0),  # stamped at midnight: consumption of Jan 4
        *house,
        *irrigation,
        ("M-IRR", local(5, 8), 500.0),  # the same interval again, another value: ignored
        ("M-IRR", local(5, 8).astimezone(UTC), 30.0),  # the same instant, written in UTC
        ("M-HOUSE", local(5, 12), 3.0),  # a plain duplicate
    ]
    path = write_reads(tmp_path / "day.csv", reads)
    run_reads(settings, path)

    assert daily_usage(database_url, "A1") == {date(2026, 1, 4): 3.0, date(2026, 1, 5): 162.0}
    [alert] = alerts_of(database_url, account_id="A1")
    assert (alert["rule"], alert["period_start"], alert["period_end"]) == (
        "daily", date(2026, 1, 5), date(2026, 1, 5),
    )  # fmt: skip
    # The read that crossed 100 gal: 08:00 local, when the house (24) and the irrigation (90)
    # made 114.
    assert alert["detected_at"] == local(5, 8)
    assert alert["late"] is False
    assert alert["status"] == "pending" and alert["channels"] == ["email"]
    assert "162 gal" in alert["message"] and "100 gal/day alert" in alert["message"]
    assert "https://city.example/usage" in alert["message"]
    assert alert["details"]["usage"] == 162.0 and alert["details"]["threshold"] == 100.0
    assert "$1.62" in alert["details"]["email_body"]

    # A replay of the whole file (a head-end resending a day) and a restart: nothing new.
    run_reads(settings, path)
    assert daily_usage(database_url, "A1")[date(2026, 1, 5)] == 162.0
    assert len(alerts_of(database_url, account_id="A1")) == 1

    # The next day stays under the threshold, the one after crosses it: one more alert.
    more = [("M-HOUSE", local(6, h), 2.0) for h in range(1, 25)]
    more += [("M-IRR", local(7, h), 60.0) for h in (6, 7)]
    run_reads(settings, write_reads(tmp_path / "more.csv", more))
    assert [(a["rule"], a["period_start"]) for a in alerts_of(database_url, account_id="A1")] == [
        ("daily", date(2026, 1, 5)),
        ("daily", date(2026, 1, 7)),
    ]


def test_late_data_that_crosses_a_past_day_fires_marked_late(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url) as conn:
        add_account(conn, "A2", meters=["M2"], daily=50)
    today = [("M2", local(6, h), 1.0) for h in range(1, 11)]
    run_reads(settings, write_reads(tmp_path / "today.csv", today))
    assert alerts_of(database_url, account_id="A2") == []

    # Yesterday's reads arrive a day late (a collector was offline), 60 gal in all.
    late = [("M2", local(5, h), 5.0) for h in range(1, 13)]
    # ... together with today's next reads, which push today over 50 gal: not late.
    late += [("M2", local(6, h), 10.0) for h in range(11, 16)]
    run_reads(settings, write_reads(tmp_path / "late.csv", late))
    found = {a["period_start"]: a for a in alerts_of(database_url, account_id="A2")}
    assert set(found) == {date(2026, 1, 5), date(2026, 1, 6)}
    assert found[date(2026, 1, 5)]["late"] is True
    assert found[date(2026, 1, 5)]["detected_at"] == local(5, 10)  # 10 × 5 gal = 50
    assert found[date(2026, 1, 6)]["late"] is False


def test_billing_period_and_projected_bill(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url) as conn:
        # Cycle day 31 in February starts on the 28th: the period of 10 February is
        # 31 January to 27 February (28 days).
        add_account(conn, "A3", meters=["M3"], cycle_day=31, period=1000, bill=25)
    assert billing_period(date(2026, 2, 10), 31).days == 28
    reads = [("M3", local(31, 12) + timedelta(days=d), 100.0) for d in range(13)]
    run_reads(settings, write_reads(tmp_path / "period.csv", reads))

    found = {a["rule"]: a for a in alerts_of(database_url, account_id="A3")}
    assert set(found) == {"period", "projected_bill"}
    period = found["period"]
    assert (period["period_start"], period["period_end"]) == (date(2026, 1, 31), date(2026, 2, 27))
    assert period["detected_at"] == local(31, 12) + timedelta(days=9)  # the 10th 100 gal
    # 100 gal a day priced at 0.01: on day 4 (3.5 days in, past the 3-day minimum) the period
    # is headed for 400 / 3.5 × 28 = 3,200 gal, $32, over the $25 alert.
    bill = found["projected_bill"]
    assert bill["detected_at"] == local(31, 12) + timedelta(days=3)
    assert bill["details"]["projected_amount"] == 32.0
    assert "$32.00" in bill["message"] and "$25.00" in bill["message"]
    # No daily rule: no daily totals kept for this account.
    assert daily_usage(database_url, "A3") == {}


def test_threshold_set_while_reads_flow_counts_the_earlier_reads(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url) as conn:
        add_account(conn, "A4", meters=["M4"])  # no thresholds yet
    am = [("M4", local(5, h), 8.0) for h in range(1, 11)]
    run_reads(settings, write_reads(tmp_path / "am.csv", am))
    assert daily_usage(database_url, "A4") == {}

    with psycopg.connect(database_url) as conn:  # the customer sets 100 gal a day at noon
        conn.execute("UPDATE alert_settings SET daily_threshold = 100 WHERE account_id = 'A4'")
    pm = [("M4", local(5, h), 8.0) for h in range(11, 16)]
    run_reads(settings, write_reads(tmp_path / "pm.csv", pm))
    [alert] = alerts_of(database_url, account_id="A4")
    assert alert["details"]["usage"] == 120.0  # 80 before the threshold existed, 40 after
    assert alert["detected_at"] == local(5, 13)  # 80 + 8 + 8 + 8 = 104

    with psycopg.connect(database_url) as conn:  # and removes it again
        conn.execute("UPDATE alert_settings SET daily_threshold = NULL WHERE account_id = 'A4'")
    run_reads(settings, write_reads(tmp_path / "eve.csv", [("M4", local(6, 1), 500.0)]))
    assert daily_usage(database_url, "A4") == {}
    assert len(alerts_of(database_url, account_id="A4")) == 1


def _stored(meter: str, account: str, ts: datetime, value: float, n: int) -> StoredRead:
    return StoredRead(
        meter, ts, value, "gal", None, None, account, f"SP-{meter}", True,
        Delivery(f"test/{n}", n, {}),
    )  # fmt: skip


def _store(conn: psycopg.Connection, reads: list[StoredRead]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO reads (meter_id, ts, value, reported_unit, account_id,
                                  service_point_id) VALUES (%s, %s, %s, 'gal', %s, %s)""",
            [(r.meter_id, r.ts, r.value, r.account_id, r.service_point_id) for r in reads],
        )


def test_two_batches_racing_on_a_new_day_count_every_read(
    settings: Settings, database_url: str
) -> None:
    """Two workers store reads of one account's new day at once: the first creates the day's
    row from a recount that cannot see the second's uncommitted reads; the second waits for
    the row and adds its own."""
    with psycopg.connect(database_url) as conn:
        add_account(conn, "A5", meters=["M5a", "M5b"], daily=1000)
        # A read two days earlier creates the hypertable's chunk for these dates, which the
        # first insert would otherwise create and lock until it commits.
        _store(conn, [_stored("M5a", "A5", local(3, 1), 1.0, 0)])
    first = AlertDecider.from_settings(database_url, settings)
    second = AlertDecider.from_settings(database_url, settings)
    a = [_stored("M5a", "A5", local(5, h), 10.0, h) for h in range(1, 6)]
    b = [_stored("M5b", "A5", local(5, h), 7.0, 100 + h) for h in range(1, 4)]
    with psycopg.connect(database_url) as conn_a, psycopg.connect(database_url) as conn_b:
        # Rollups that other modules keep on `reads` with row triggers (usage_daily) would make
        # the second insert wait for the first transaction before the hook is even reached;
        # this test is about the hook's own arithmetic, so the batches fire no user triggers.
        for conn in (conn_a, conn_b):
            conn.execute("SET session_replication_role = replica")
            conn.execute("SET lock_timeout = '20s'")
        _store(conn_a, a)
        first(conn_a, a, [])  # creates the row (recount: 50), uncommitted
        _store(conn_b, b)
        done = threading.Event()

        def run_second() -> None:
            second(conn_b, b, [])  # waits for conn_a's row, then adds 21
            done.set()

        thread = threading.Thread(target=run_second)
        thread.start()
        assert not done.wait(0.5), "the second batch should wait for the first one's row"
        conn_a.commit()
        thread.join(10)
        conn_b.commit()
    assert daily_usage(database_url, "A5") == {date(2026, 1, 5): 71.0}


def test_a_threshold_enabled_during_a_batch_never_loses_its_reads(
    settings: Settings, database_url: str
) -> None:
    """A batch that counted without the account (not tracked yet) holds the tracking lock
    until it commits, so the change waits for it, and the recount that follows sees its
    reads."""
    with psycopg.connect(database_url) as conn:
        add_account(conn, "A6", meters=["M6"])
    decider = AlertDecider.from_settings(database_url, settings)
    early = [_stored("M6", "A6", local(5, h), 25.0, h) for h in range(1, 3)]
    with psycopg.connect(database_url) as batch:
        _store(batch, early)
        decider(batch, early, [])  # A6 has no rule: not counted; holds the lock (shared)
        with psycopg.connect(database_url, autocommit=True) as api:
            api.execute("UPDATE alert_settings SET daily_threshold = 60 WHERE account_id = 'A6'")
        applied: list[int] = []
        with psycopg.connect(database_url) as sync:
            thread = threading.Thread(target=lambda: applied.append(apply_tracking_changes(sync)))
            thread.start()
            thread.join(0.5)
            assert thread.is_alive(), "the change must wait for the batch that counted without it"
            batch.commit()
            thread.join(10)
    assert applied == [1]
    late_reads = [_stored("M6", "A6", local(5, 3), 25.0, 3)]
    with psycopg.connect(database_url) as batch:
        _store(batch, late_reads)
        AlertDecider.from_settings(database_url, settings)(batch, late_reads, [])
    assert daily_usage(database_url, "A6") == {date(2026, 1, 5): 75.0}
    [alert] = alerts_of(database_url, account_id="A6")
    assert alert["details"]["usage"] == 75.0


LEAK_DETAILS = {"leak_rate": 2.4, "lowest_flow": 2.4, "volume_lost": 60.0}
BURST_DETAILS = {"highest_rate": 450.0, "volume": 1800.0, "usual_peak": 40.0}


def _flag(conn: psycopg.Connection, meter: str, account: str, kind: str, severity: str,
          detected: datetime, hours: float = 30.0) -> StoredFlag:  # fmt: skip
    started = int((detected - timedelta(hours=hours)).timestamp())
    change = FlagChange(
        "open", kind, started, None, int(detected.timestamp()), severity, 0.8,
        "flow never dropped below 2.4 gal/h for 30 hours", 1,
        dict(BURST_DETAILS if kind == "burst" else LEAK_DETAILS),
    )  # fmt: skip
    row = conn.execute(
        """INSERT INTO flags (meter_id, account_id, kind, started_at, detected_at, severity,
                              score, evidence) VALUES (%s, %s, %s, to_timestamp(%s), %s, %s,
                              0.8, 'test') RETURNING flag_id""",
        (meter, account, kind, started, detected, severity),
    ).fetchone()
    assert row is not None
    return StoredFlag(FlagWrite(meter, account, change), row[0], True)


def test_leak_and_burst_flags_become_notices_once(settings: Settings, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        add_account(conn, "L1", meters=["ML1"], sms_opt_in=True)
        add_account(conn, "L2", meters=["ML2"])
        add_account(conn, "L3", meters=["ML3"], leak_alerts=False)
        add_account(conn, "L4", meters=["ML4"], email_opt_in=False)
    decider = AlertDecider.from_settings(database_url, settings)
    detected = local(5, 3)
    with psycopg.connect(database_url) as conn:
        flags = [
            _flag(conn, "ML1", "L1", "leak", "medium", detected),
            _flag(conn, "ML2", "L2", "burst", "high", detected, hours=4),
            _flag(conn, "ML3", "L3", "leak", "high", detected),
            _flag(conn, "ML4", "L4", "leak", "critical", detected),
        ]
        decider(conn, [], flags)
        decider(conn, [], flags)  # the same flag writes again (a replay): nothing new
    found = {a["account_id"]: a for a in alerts_of(database_url)}
    assert set(found) == {"L1", "L2", "L4"}  # L3 turned leak notices off
    leak, burst, silent = found["L1"], found["L2"], found["L4"]
    assert (leak["rule"], leak["period_start"], leak["flag_id"]) == (
        "leak", read_day(detected, CHICAGO), flags[0].flag_id,
    )  # fmt: skip
    assert leak["channels"] == ["email", "sms"] and leak["details"]["critical"] is False
    assert "2.4 gal/h" in leak["message"] and "30 h" in leak["message"]
    assert "(est. $0.60)" in leak["message"]  # 60 gal lost at 0.01
    assert burst["rule"] == "burst" and burst["details"]["critical"] is True  # always
    assert "450 gal/h for 4 h" in burst["message"] and "main valve" in burst["message"]
    assert silent["status"] == "suppressed" and silent["channels"] == []


def test_tracking_changes_start_update_reset_and_stop(database_url: str) -> None:
    """`apply_tracking_changes` worked out in the database: tracking starts and stops with
    every usage row reset, a changed threshold keeps the totals, a moved cycle day resets the
    period totals only, and a queued account whose rules did not change is no change."""

    def tracked(conn: psycopg.Connection) -> dict[str, tuple[object, ...]]:
        rows = conn.execute(
            """SELECT account_id, active, cycle_day, daily_threshold, period_threshold,
                      projected_bill_threshold::float8 FROM alert_tracked_accounts"""
        ).fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}

    def usage_rows(conn: psycopg.Connection) -> set[tuple[str, str]]:
        rows = conn.execute(
            """SELECT account_id, 'day' FROM account_daily_usage
               UNION ALL SELECT account_id, 'period' FROM account_period_usage"""
        ).fetchall()
        return {(r[0], r[1]) for r in rows}

    def add_usage(conn: psycopg.Connection, account_id: str) -> None:
        conn.execute(
            "INSERT INTO account_daily_usage (account_id, unit, day, usage) "
            "VALUES (%s, 'gal', '2026-03-05', 10)",
            (account_id,),
        )
        conn.execute(
            "INSERT INTO account_period_usage (account_id, unit, period_start, period_end, usage)"
            " VALUES (%s, 'gal', '2026-03-01', '2026-03-31', 10)",
            (account_id,),
        )

    with psycopg.connect(database_url, autocommit=True) as conn:
        add_account(conn, "T1", daily=100, cycle_day=5)
        add_account(conn, "T2", period=1000, bill=40, cycle_day=10)
        add_account(conn, "T3")  # no rule: not tracked
        assert apply_tracking_changes(conn) == 2
        assert tracked(conn) == {
            "T1": (True, 5, 100.0, None, None),
            "T2": (True, 10, None, 1000.0, 40.0),
        }
        for account_id in ("T1", "T2"):
            add_usage(conn, account_id)

        conn.execute("UPDATE alert_settings SET daily_threshold = 200 WHERE account_id = 'T1'")
        conn.execute("UPDATE accounts SET cycle_day = 20 WHERE account_id = 'T2'")
        conn.execute("UPDATE alert_settings SET daily_threshold = 50 WHERE account_id = 'T3'")
        assert apply_tracking_changes(conn) == 3
        assert tracked(conn) == {
            "T1": (True, 5, 200.0, None, None),
            "T2": (True, 20, None, 1000.0, 40.0),
            "T3": (True, 1, 50.0, None, None),
        }
        assert usage_rows(conn) == {("T1", "day"), ("T1", "period"), ("T2", "day")}

        conn.execute(
            "UPDATE alert_settings SET period_threshold = NULL, projected_bill_threshold = NULL"
            " WHERE account_id = 'T2'"
        )
        conn.execute("INSERT INTO alert_tracking_queue (account_id) VALUES ('T1'), ('T1')")
        assert apply_tracking_changes(conn) == 1  # T2 stops; T1 did not change
        assert tracked(conn)["T2"] == (False, 20, None, 1000.0, 40.0)  # as it last was
        assert usage_rows(conn) == {("T1", "day"), ("T1", "period")}
        queue = conn.execute("SELECT count(*) FROM alert_tracking_queue").fetchone()
        assert queue == (0,)
        assert apply_tracking_changes(conn) == 0
