"""`meterwatch bench api`: the account view and a customer's 24 months of daily usage, timed
through the real HTTP API on two years of hourly reads.

The data: METERS meters (one per account, customer and service point), a read every hour for
DAYS days up to now (2,000 × 730 days ≈ 35 million reads), 1 % of them estimated, a few flags,
alerts with deliveries, contacts and a rate plan per account. They go into a throwaway database
on the server of DATABASE_URL (`meterwatch_bench_api`), created and filled once and reused by
later runs (`--fresh` starts over). The reads are generated inside the server, a week of all
meters per statement (time-major, as a head-end delivers them), which is faster than any COPY
from a client since no row crosses the network; the small tables use COPY.

The API runs under uvicorn in this process (a real HTTP server on a free local port) and is
called over one keep-alive connection from the standard library's HTTP client, one request at a
time. Printed next to two baselines measured in the same run: the database's `SELECT 1` round
trip and the API's `GET /health`.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import psycopg
import typer
import uvicorn

from bench.cli import bench_app

BENCH_DATABASE = "meterwatch_bench_api"
TARGETS_MS = {"account view": 100.0, "24 months of daily usage": 50.0}


@dataclass(frozen=True)
class Timing:
    name: str
    samples_ms: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _bench_url(database_url: str) -> tuple[str, str]:
    """(admin URL, bench database URL) on the server of `database_url`."""
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    admin = psycopg.conninfo.make_conninfo(**{**info, "dbname": "postgres"})  # type: ignore[arg-type]
    bench = psycopg.conninfo.make_conninfo(**{**info, "dbname": BENCH_DATABASE})  # type: ignore[arg-type]
    return admin, bench


def _exists(admin: str) -> bool:
    with psycopg.connect(admin, autocommit=True) as conn:
        return (
            conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DATABASE,)
            ).fetchone()
            is not None
        )


def _filled(url: str, meters: int, days: int, tz_name: str) -> bool:
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT value FROM bench_info WHERE name = 'size'",
            ).fetchone()
    except psycopg.Error:
        return False
    return row is not None and row[0] == f"{meters}x{days}x{tz_name}"


def prepare(
    database_url: str,
    meters: int,
    days: int,
    tz_name: str,
    fresh: bool,
    say: Callable[[str], None],
) -> str:
    """The bench database URL, created and filled unless a filled one of this size exists."""
    from api.usage import ensure_rollup
    from meterwatch.db import migrate

    admin, url = _bench_url(database_url)
    if not fresh and _exists(admin) and _filled(url, meters, days, tz_name):
        say(f"reusing database {BENCH_DATABASE} ({meters} meters × {days} days)")
        return url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    migrate(url)
    started = time.perf_counter()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    with psycopg.connect(url, autocommit=True) as conn:
        _reference_data(conn, meters)
        # the daily rollup is built once at the end rather than row by row by its trigger
        # (a superuser may switch triggers off for the session; otherwise they run)
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if (superuser.fetchone() or (False,))[0]:
            conn.execute("SET session_replication_role = replica")
        week = start
        while week < end:
            until = min(week + timedelta(days=7), end)
            conn.execute(
                """INSERT INTO reads (meter_id, ts, value, reported_unit, quality, account_id,
                                      service_point_id)
                   SELECT 'BM' || lpad(m::text, 5, '0'), ts,
                          round((0.5 + 6 * random()
                                 * (1 + sin(pi() * extract(hour FROM ts) / 12)))::numeric, 2),
                          'gal', CASE WHEN random() < 0.01 THEN 'E' END,
                          'BA' || lpad(m::text, 5, '0'), 'BS' || lpad(m::text, 5, '0')
                     FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 hour',
                                          interval '1 hour') AS ts,
                          generate_series(1, %s) AS m""",
                (week + timedelta(hours=1), until + timedelta(hours=1), meters),
            )
            say(f"reads up to {until:%Y-%m-%d} ({time.perf_counter() - started:,.0f} s)")
            week = until
        conn.execute("RESET session_replication_role")
        say(f"daily usage rollup in {tz_name}")
        ensure_rollup(conn, tz_name, force=True)
        say("vacuum analyze (index-only scans need the visibility map)")
        conn.execute("VACUUM ANALYZE")
        conn.execute("CREATE TABLE bench_info (name text PRIMARY KEY, value text)")
        conn.execute("INSERT INTO bench_info VALUES ('size', %s)", (f"{meters}x{days}x{tz_name}",))
    say(f"filled in {time.perf_counter() - started:,.0f} s")
    return url


def _reference_data(conn: psycopg.Connection, meters: int) -> None:
    """Customers, accounts, meters, assignments, a rate plan, users, flags, alerts, contacts."""
    conn.execute(
        """INSERT INTO rate_plans (rate_plan, description, currency, fixed_charge, unit)
           VALUES ('RES', 'Residential water', 'USD', 12.00, 'gal')"""
    )
    conn.execute(
        """INSERT INTO rate_tiers VALUES ('RES', 0, 5000, 0.004), ('RES', 5000, 10000, 0.006),
                                         ('RES', 10000, NULL, 0.01)"""
    )
    ids = [f"{m:05d}" for m in range(1, meters + 1)]
    with conn.cursor() as cur:
        with cur.copy("COPY customers (customer_id, name, email) FROM STDIN") as copy:
            for i in ids:
                copy.write_row((f"BC{i}", f"Customer {i}", f"c{i}@example.com"))
        with cur.copy(
            "COPY accounts (account_id, customer_id, status, customer_class, rate_plan, "
            "cycle_day) FROM STDIN"
        ) as copy:
            for n, i in enumerate(ids):
                copy.write_row((f"BA{i}", f"BC{i}", "active", "residential", "RES", 1 + n % 28))
        with cur.copy("COPY service_points (service_point_id) FROM STDIN") as copy:
            for i in ids:
                copy.write_row((f"BS{i}",))
        with cur.copy("COPY meters (meter_id) FROM STDIN") as copy:
            for i in ids:
                copy.write_row((f"BM{i}",))
        with cur.copy(
            "COPY meter_assignments (meter_id, service_point_id, account_id, valid_from) FROM STDIN"
        ) as copy:
            for i in ids:
                copy.write_row((f"BM{i}", f"BS{i}", f"BA{i}", "2000-01-01T00:00:00Z"))
        with cur.copy("COPY api_users (username, role, customer_id) FROM STDIN") as copy:
            for i in ids:
                copy.write_row((f"c{i}@example.com", "customer", f"BC{i}"))
    conn.execute(
        """INSERT INTO flags (meter_id, account_id, kind, started_at, ended_at, detected_at,
                              severity, score, evidence, details, status)
           SELECT 'BM' || lpad(m::text, 5, '0'), 'BA' || lpad(m::text, 5, '0'),
                  (ARRAY['leak', 'spike', 'gap', 'usage_anomaly'])[1 + k %% 4],
                  now() - make_interval(days => 20 * k + m %% 7),
                  now() - make_interval(days => 20 * k - 1),
                  now() - make_interval(days => 20 * k + m %% 7 - 1), 'medium', 0.6,
                  'flow never dropped below 2.0 gal/h for 30 hours', '{"leak_rate": 2.0}',
                  (ARRAY['open', 'confirmed', 'dismissed', 'resolved'])[1 + k %% 4]
             FROM generate_series(1, %s) AS m, generate_series(1, 6) AS k""",
        (meters,),
    )
    conn.execute(
        """INSERT INTO alerts (account_id, rule, period_start, period_end, detected_at, status,
                               channels, message)
           SELECT 'BA' || lpad(m::text, 5, '0'), 'daily', current_date - 30 * k,
                  current_date - 30 * k, now() - make_interval(days => 30 * k), 'sent',
                  '{email,sms}', 'Daily use above 400 gal'
             FROM generate_series(1, %s) AS m, generate_series(1, 4) AS k""",
        (meters,),
    )
    conn.execute(
        """INSERT INTO alert_deliveries (alert_id, channel, destination, status)
           SELECT alert_id, c, 'someone', 'sent' FROM alerts, unnest(ARRAY['email', 'sms']) c"""
    )
    conn.execute(
        """INSERT INTO contact_log (account_id, actor, channel, summary)
           SELECT 'BA' || lpad(m::text, 5, '0'), 'clerk', 'phone', 'asked about the bill'
             FROM generate_series(1, %s) AS m, generate_series(1, 2) AS k""",
        (meters,),
    )


def _time(call: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> None:
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}: {body[:300]!r}")


@bench_app.command("api")
def bench_api(
    meters: Annotated[int, typer.Option(min=1, help="Meters (one account each).")] = 2000,
    days: Annotated[int, typer.Option(min=2, help="Days of hourly reads.")] = 730,
    requests: Annotated[int, typer.Option(min=10, help="Timed requests per endpoint.")] = 200,
    fresh: Annotated[bool, typer.Option("--fresh", help="Rebuild the bench database.")] = False,
) -> None:
    """Account view (p95 ≤ 100 ms) and 24 months of daily usage (p95 ≤ 50 ms) over HTTP."""
    from api.main import create_app
    from api.security import create_access_token, service_token
    from meterwatch.settings import get_settings

    settings = get_settings()
    url = prepare(
        settings.require_database_url(), meters, days, settings.utility_tz, fresh, typer.echo
    )
    app_settings = settings.model_copy(update={"database_url": url, "redis_url": None})
    with psycopg.connect(url) as conn:
        users: dict[str, int] = dict(
            conn.execute(
                "SELECT customer_id, user_id FROM api_users WHERE role = 'customer'"
            ).fetchall()
        )
        baseline_db = _time(lambda: conn.execute("SELECT 1").fetchone(), requests)
    sock = socket.socket()
    # accepted connections inherit it: without, every keep-alive answer waits 40 ms for a
    # delayed ACK (uvicorn sets it only on sockets it opens itself)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(app_settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    rng = random.Random(7)
    try:
        http_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        staff = {"Authorization": f"Bearer {service_token(app_settings, 'bench')}"}

        def account_view() -> None:
            account = f"BA{rng.randint(1, meters):05d}"
            _get(http_conn, f"/v1/accounts/{account}", staff)

        def daily_usage() -> None:
            number = rng.randint(1, meters)
            token = create_access_token(
                app_settings, f"user:{users[f'BC{number:05d}']}", "customer"
            )
            _get(
                http_conn,
                f"/v1/me/accounts/BA{number:05d}/usage?resolution=day",
                {"Authorization": f"Bearer {token}"},
            )

        for warm in (account_view, daily_usage):
            _time(warm, 20)
        timings = [
            Timing("baseline: SELECT 1 round trip", baseline_db),
            Timing(
                "baseline: GET /health", _time(lambda: _get(http_conn, "/health", {}), requests)
            ),
            Timing("account view", _time(account_view, requests)),
            Timing("24 months of daily usage", _time(daily_usage, requests)),
        ]
        http_conn.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    typer.echo(
        f"\n{meters:,} meters × {days} days of hourly reads; {requests} requests each, one at "
        "a time, over HTTP (uvicorn, keep-alive)\n"
    )
    typer.echo(f"{'what':<34}{'p50 ms':>9}{'p95 ms':>9}{'target':>10}")
    failed = False
    for timing in timings:
        target = TARGETS_MS.get(timing.name)
        verdict = ""
        if target is not None:
            ok = timing.p95 <= target
            failed |= not ok
            verdict = f"≤ {target:g} {'ok' if ok else 'MISSED'}"
        typer.echo(f"{timing.name:<34}{timing.p50:>9.2f}{timing.p95:>9.2f}   {verdict}")
    typer.echo(json.dumps({t.name: {"p50_ms": round(t.p50, 2), "p95_ms": round(t.p95, 2)}
                           for t in timings}))  # fmt: skip
    if failed:
        raise typer.Exit(1)
