"""A small, realistic data set for the dashboard's screenshots and browser tests: three
customers, two years of hourly water reads up to now (with a leak running for the last three
days on A1), flags of several kinds, alerts with their delivery attempts, contacts, rejected
and unmatched reads, rate plans, and one user per role — created the way `meterwatch users
create` does (`api.commands.create_user`).

    seed_showcase(conn)  ->  {"customer": "ada@example.com", "operator": "olga.operator", ...}

Every user's password is `SAMPLE_PASSWORD`. Reads are generated inside the database
(`generate_series`), so seeding takes a second or two.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from api.commands import create_user
from billing.rates import import_rates

SAMPLE_PASSWORD = "correct horse battery"
RATES_CSV = """rate_plan,description,currency,fixed_charge,tier_from,tier_to,price_per_unit,unit
RES,Residential water,USD,12.00,0,5000,0.004,gal
RES,Residential water,USD,12.00,5000,,0.006,gal
COM,Commercial water,USD,40.00,0,,0.005,gal
"""
# role → (username, customer_id)
USERS = {
    "customer": ("ada@example.com", "C1"),  # owns A1
    "other_customer": ("bo@example.com", "C2"),  # owns A2
    "operator": ("olga.operator", None),
    "billing": ("bill.billing", None),
    "admin": ("ann.admin", None),
}
# Hours of history: two years, so that every bucket has the same bucket a year earlier.
HISTORY_HOURS = 2 * 365 * 24
LEAK_HOURS = 72


def _accounts(conn: psycopg.Connection) -> None:
    conn.execute(
        """INSERT INTO customers (customer_id, name, email, phone) VALUES
             ('C1', 'Ada Lovelace', 'ada@example.com', '+15555550101'),
             ('C2', 'Bo Diddley Bakery', 'bo@example.com', '+15555550102'),
             ('C3', 'Cy Young', NULL, NULL)"""
    )
    conn.execute(
        """INSERT INTO accounts (account_id, customer_id, status, customer_class, cycle_day,
                                 rate_plan)
           VALUES ('A1', 'C1', 'active', 'residential', 15, 'RES'),
                  ('A2', 'C2', 'active', 'commercial', 1, 'COM'),
                  ('A3', 'C3', 'inactive', 'residential', 15, 'RES')"""
    )
    conn.execute("INSERT INTO service_points VALUES ('S1'), ('S2'), ('S3')")
    conn.execute("INSERT INTO meters VALUES ('M0'), ('M1'), ('M2'), ('M3')")
    conn.execute(
        """INSERT INTO meter_assignments (meter_id, service_point_id, account_id, valid_from,
                                          valid_to)
           VALUES ('M0', 'S1', 'A1', '2020-01-01', now() - interval '400 days'),
                  ('M1', 'S1', 'A1', now() - interval '400 days', NULL),
                  ('M2', 'S2', 'A2', '2020-01-01', NULL),
                  ('M3', 'S3', 'A3', '2020-01-01', NULL)"""
    )


def _reads(conn: psycopg.Connection, now: datetime) -> None:
    """Hourly reads: a household's daily rhythm and seasons (A1), a bakery's working hours
    (A2), and A1's leak: 3 gal every hour on top of its use for the last LEAK_HOURS."""
    conn.execute(
        """INSERT INTO reads (meter_id, ts, value, reported_unit, account_id, service_point_id,
                              quality)
           SELECT CASE WHEN h.ts < now() - interval '400 days' THEN 'M0' ELSE 'M1' END, h.ts,
                  round((greatest(0, 6 * sin(pi() * (extract(hour FROM h.ts) - 5) / 16))
                         * (1.2 + 0.4 * cos(2 * pi() * extract(doy FROM h.ts) / 365))
                         + 0.2 * ((hashint4(extract(epoch FROM h.ts)::int) & 7))
                         + CASE WHEN h.ts > %(leak)s THEN 3 ELSE 0 END)::numeric, 2),
                  'gal', 'A1', 'S1',
                  CASE WHEN (extract(epoch FROM h.ts)::bigint / 3600) %% 97 = 0 THEN 'E' END
             FROM generate_series(%(first)s, %(last)s, interval '1 hour') AS h(ts)""",
        {
            "first": now - timedelta(hours=HISTORY_HOURS),
            "last": now,
            "leak": now - timedelta(hours=LEAK_HOURS),
        },
    )
    conn.execute(
        """INSERT INTO reads (meter_id, ts, value, reported_unit, account_id, service_point_id)
           SELECT 'M2', h.ts,
                  CASE WHEN extract(hour FROM h.ts) BETWEEN 4 AND 15
                            AND extract(isodow FROM h.ts) < 7
                       THEN 40 + (hashint4(extract(epoch FROM h.ts)::int) & 15) ELSE 1 END,
                  'gal', 'A2', 'S2'
             FROM generate_series(%(first)s, %(last)s, interval '1 hour') AS h(ts)""",
        {"first": now - timedelta(hours=HISTORY_HOURS // 2), "last": now},
    )
    conn.execute(
        """INSERT INTO pipeline_status (source, worker, position, deliveries, latest_read_ts)
           VALUES ('meterwatch:reads', '0', '0', (SELECT count(*) FROM reads), %s)""",
        (now,),
    )


def _flags(conn: psycopg.Connection, now: datetime) -> dict[str, int]:
    rows = [
        ("leak", "M1", "A1", now - timedelta(hours=LEAK_HOURS), None, "high", 0.92, "open",
         "flow never below 3.0 gal per hour for 72 hours: continuous leak",
         {"leak_rate": 3.0, "volume_lost": 216.0, "hours": 72}),
        ("spike", "M2", "A2", now - timedelta(days=9, hours=3), now - timedelta(days=9, hours=2),
         "medium", 0.61, "open", "one hour of 55 gal against a usual peak of 40 gal",
         {"value": 55.0, "usual_peak": 40.0}),
        ("gap", "M2", "A2", now - timedelta(days=20), now - timedelta(days=19, hours=18),
         "low", 0.3, "confirmed", "6 hourly reads missing", {"expected": 6, "missing": 6}),
        ("inactive_usage", "M3", "A3", now - timedelta(days=40), now - timedelta(days=39),
         "medium", 0.5, "dismissed", "12 gal on an inactive account", {"volume": 12.0}),
    ]  # fmt: skip
    ids = {}
    for kind, meter, account, started, ended, severity, score, status, evidence, details in rows:
        row = conn.execute(
            """INSERT INTO flags (meter_id, account_id, kind, started_at, ended_at, detected_at,
                                  severity, score, evidence, details, status)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING flag_id""",
            (meter, account, kind, started, ended, (ended or started + timedelta(hours=24)),
             severity, score, evidence, Jsonb(details), status),
        ).fetchone()  # fmt: skip
        assert row is not None
        ids[kind] = int(row[0])
    return ids


def _alerts(conn: psycopg.Connection, now: datetime, flags: dict[str, int]) -> None:
    leak_at = now - timedelta(hours=LEAK_HOURS - 24)
    rows = [
        ("A1", "leak", leak_at, "sent", ["email", "sms"], flags["leak"],
         "Your utility: water has been running at your home for 24 hours (about 3 gal an hour). "
         "Check taps and toilets."),
        ("A1", "daily", now - timedelta(days=30), "sent", ["email"], None,
         "Your utility: you used 160 gal yesterday, above your alert of 150 gal."),
        ("A2", "period", now - timedelta(days=5), "failed", ["sms"], None,
         "Your utility: 12,000 gal so far this period, above your alert of 10,000 gal."),
    ]  # fmt: skip
    for account, rule, at, status, channels, flag_id, message in rows:
        local = at.date()
        row = conn.execute(
            """INSERT INTO alerts (account_id, rule, period_start, period_end, detected_at,
                                   created_at, status, channels, message, flag_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING alert_id""",
            (account, rule, local, local, at, at + timedelta(minutes=1), status, channels,
             message, flag_id),
        ).fetchone()  # fmt: skip
        assert row is not None
        for channel in channels:
            failed = status == "failed"
            conn.execute(
                """INSERT INTO alert_deliveries (alert_id, channel, destination, provider_id,
                                                 status, error, attempted_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                (row[0], channel, "+15555550101" if channel == "sms" else "ada@example.com",
                 None if failed else f"{channel}-{row[0]}", "failed" if failed else "sent",
                 "the number is not reachable by SMS" if failed else None,
                 at + timedelta(minutes=2)),
            )  # fmt: skip
    conn.execute(
        """INSERT INTO alert_settings (account_id, daily_threshold, period_threshold,
                                       projected_bill_threshold, leak_alerts, sms_opt_in,
                                       email_opt_in, quiet_start, quiet_end)
           VALUES ('A1', 150, 3000, 60.00, true, true, true, '22:00', '07:00')"""
    )


def _queues_and_contacts(conn: psycopg.Connection, now: datetime) -> None:
    conn.execute(
        """INSERT INTO rejected_reads (delivery, received_at, reason, raw, meter_id) VALUES
           ('s:1-0', %s, 'ts has no UTC offset: send 2026-03-01T14:15:00-05:00 or Z',
            'M9,2026-03-01 14:15,3.5', 'M9'),
           ('s:2-0', %s, 'value is not a number: ''n/a''', 'M2,2026-03-01T14:15:00Z,n/a', 'M2')""",
        (now - timedelta(hours=5), now - timedelta(hours=2)),
    )
    conn.execute(
        """INSERT INTO unmatched_reads (meter_id, ts, value, reported_unit, reason, detail,
                                        delivery)
           SELECT 'X7', now() - make_interval(hours => n), 2, 'gal', 'unknown_meter',
                  'meter X7 is not in meters.csv', 'u' || n
             FROM generate_series(1, 6) AS n"""
    )
    conn.execute(
        """INSERT INTO contact_log (account_id, at, actor, channel, summary) VALUES
           ('A1', %s, 'olga.operator', 'phone',
            'Customer called about the leak alert; will check the toilets tonight.')""",
        (now - timedelta(hours=20),),
    )


def seed_showcase(conn: psycopg.Connection, now: datetime | None = None) -> dict[str, str]:
    """Fill an empty, migrated database with the sample (module docstring); returns role →
    username."""
    now = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    _accounts(conn)
    with tempfile.TemporaryDirectory() as directory:
        rates = Path(directory) / "rates.csv"
        rates.write_text(RATES_CSV)
        report = import_rates(conn, rates, actor="sample")
    assert report.ok, report.problems
    _reads(conn, now)
    flags = _flags(conn, now)
    _alerts(conn, now, flags)
    _queues_and_contacts(conn, now)
    for role, (username, customer) in USERS.items():
        create_user(
            conn,
            username,
            "customer" if customer else role,
            customer_id=customer,
            password=SAMPLE_PASSWORD,
            actor="sample",
        )
    return {role: username for role, (username, _) in USERS.items()}
