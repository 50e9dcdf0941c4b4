"""`meterwatch bench alerts`: how long from a read entering the Redis Stream to its alert email
being accepted by an SMTP server, while the stream carries a steady background load.

Everything real and local: a throwaway database on the PostgreSQL server (created and dropped),
a Redis Stream key of its own, `meterwatch run` and `meterwatch notify` as subprocesses, and an
SMTP server on loopback (aiosmtpd) in this process, which timestamps each
message when it has it. Background meters (tracked accounts with a daily threshold they never
reach, so the alert accounting runs for every read) report at `--rate` reads per second; every
`1 / --probes` seconds a probe read crosses a probe account's daily threshold. The figure is
the probe's latency (XADD → the SMTP server has the email), p50 and p99; the baseline, measured
in the same run, is one SMTP conversation on its own (what the notifier cannot go below).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import psycopg
import redis
import typer

from bench.cli import bench_app
from meterwatch.db import migrate
from meterwatch.settings import get_settings

TARGET_P99_S = 1.0
PROBE_THRESHOLD = 100.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class _Inbox:
    """aiosmtpd handler: when each recipient's message arrived (time.time())."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.time()
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.arrived.setdefault(rcpt, now)
        return "250 OK"


@contextmanager
def _database(admin_url: str) -> Iterator[str]:
    name = f"mwbench_alerts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _seed(url: str, meters: int, probes: int) -> None:
    """Background accounts (one meter each, a daily threshold never reached) and probe
    accounts (a daily threshold of 100 gal, email opt-in)."""
    accounts = [(f"B{i:06d}", f"BM{i:06d}", 1e9) for i in range(meters)]
    accounts += [(f"P{i:05d}", f"PM{i:05d}", PROBE_THRESHOLD) for i in range(probes)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY customers (customer_id, name, email) FROM STDIN") as copy:
            for account, _, _ in accounts:
                copy.write_row((account, f"Bench {account}", f"{account.lower()}@bench.invalid"))
        with cur.copy(
            "COPY accounts (account_id, customer_id, status, customer_class, cycle_day) FROM STDIN"
        ) as copy:
            for account, _, _ in accounts:
                copy.write_row((account, account, "active", "residential", 1))
        with cur.copy(
            "COPY alert_settings (account_id, daily_threshold, email_opt_in) FROM STDIN"
        ) as copy:
            for account, _, threshold in accounts:
                copy.write_row((account, threshold, True))
        with cur.copy("COPY meters (meter_id) FROM STDIN") as copy:
            for _, meter, _ in accounts:
                copy.write_row((meter,))
        with cur.copy("COPY service_points (service_point_id) FROM STDIN") as copy:
            for _, meter, _ in accounts:
                copy.write_row((f"SP{meter}",))
        with cur.copy(
            "COPY meter_assignments (meter_id, service_point_id, account_id, valid_from) FROM STDIN"
        ) as copy:
            for account, meter, _ in accounts:
                copy.write_row((meter, f"SP{meter}", account, "2020-01-01"))


def _committed(url: str, source: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT deliveries FROM pipeline_status WHERE source = %s", (source,)
        ).fetchone()
    return int(row[0]) if row else 0


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@bench_app.command("alerts")
def bench_alerts(
    duration: Annotated[float, typer.Option(help="Seconds of measurement.")] = 60.0,
    rate: Annotated[int, typer.Option(help="Background reads per second on the stream.")] = 5000,
    probes: Annotated[float, typer.Option(help="Threshold-crossing probe reads per second.")] = 2.0,
    meters: Annotated[int, typer.Option(help="Background meters (tracked accounts).")] = 5000,
    admin_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL to create the throwaway database on (default: DATABASE_URL's "
            "server, else postgresql://postgres@127.0.0.1:5432/postgres)."
        ),
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis (default: REDIS_URL, else 127.0.0.1:6379/0).")
    ] = None,
) -> None:
    """Read → alert email latency (p50, p99) under background load, next to raw SMTP."""
    from aiosmtpd.controller import Controller

    from alerts.channels import EmailChannel, Outgoing
    from stream.publish import publish

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    settings = get_settings()
    admin = admin_url or (
        psycopg.conninfo.make_conninfo(settings.database_url, dbname="postgres")
        if settings.database_url
        else "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    redis_at = redis_url or settings.redis_url or "redis://127.0.0.1:6379/0"
    probe_count = int(duration * probes) + 20
    key = f"mwbench:{uuid.uuid4().hex[:8]}:reads"
    client = redis.Redis.from_url(redis_at, decode_responses=True)
    inbox = _Inbox()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    work = Path(tempfile.mkdtemp(prefix="mwbench-alerts-"))
    processes: list[subprocess.Popen[bytes]] = []
    typer.echo(
        f"bench alerts: {rate:,} background reads/s from {meters:,} meters for {duration:.0f}s, "
        f"{probes:g} probe(s)/s; target p99 ≤ {TARGET_P99_S:.1f}s"
    )
    try:
        smtp.start()
        with _database(admin) as url:
            migrate(url)
            _seed(url, meters, probe_count)

            # Baseline: one SMTP conversation (connect, MAIL, RCPT, DATA, QUIT) on its own.
            channel = EmailChannel("127.0.0.1", port, security="none", timeout_s=10)
            raw = []
            for i in range(50):
                started = time.perf_counter()
                channel.send(Outgoing(i, f"baseline-{i}@bench.invalid", "baseline", "x"))
                raw.append(time.perf_counter() - started)

            env = {
                **os.environ,
                "DATABASE_URL": url,
                "REDIS_URL": redis_at,
                "READS_STREAM": key,
                "DATA_DIR": str(work),
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(port),
                "SMTP_SECURITY": "none",
                "UTILITY_TZ": "UTC",
            }
            for command in ("run", "notify"):
                log = (work / f"{command}.log").open("ab")
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "meterwatch.cli", command],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )

            now = datetime.now(UTC).replace(microsecond=0)
            probe_ts = (now - timedelta(hours=1)).replace(minute=0, second=0)
            sent: dict[str, float] = {}
            next_probe = [0]

            def probe() -> None:
                i = next_probe[0]
                next_probe[0] += 1
                row = {"meter_id": f"PM{i:05d}", "ts": probe_ts.isoformat(), "value": "1000"}
                sent[f"p{i:05d}@bench.invalid"] = time.time()
                client.xadd(key, row)

            # Warm up: the flow consumes and the notifier delivers (first probe end to end).
            probe()
            deadline = time.monotonic() + 120
            while "p00000@bench.invalid" not in inbox.arrived:
                if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                    raise RuntimeError(
                        "the flow or the notifier did not start: see "
                        f"{work / 'run.log'} and {work / 'notify.log'}"
                    )
                time.sleep(0.05)
            sent.clear()
            inbox.arrived.clear()

            start = (now - timedelta(days=30)).replace(minute=0, second=0)
            stop = threading.Event()
            published = [0]

            def background() -> None:
                """`rate` reads/s in 10 ms slices; each meter steps 15 minutes per round."""
                produced = 0
                began = time.monotonic()
                per_round = meters
                while not stop.is_set():
                    due = int((time.monotonic() - began) * rate)
                    rows: list[dict[str, str]] = []
                    while produced < due and len(rows) < 5000:
                        meter, round_ = produced % per_round, produced // per_round
                        ts = start + timedelta(minutes=15 * (round_ + 1))
                        rows.append(
                            {"meter_id": f"BM{meter:06d}", "ts": ts.isoformat(), "value": "1"}
                        )
                        produced += 1
                    if rows:
                        publish(client, [key], rows, pipeline_size=5000)
                        published[0] += len(rows)
                    time.sleep(0.01)

            loader = threading.Thread(target=background, daemon=True)
            began = time.monotonic()
            committed_before = _committed(url, key)
            loader.start()
            while time.monotonic() - began < duration:
                probe()
                time.sleep(1.0 / probes)
            stop.set()
            loader.join(10)
            elapsed = time.monotonic() - began
            committed = _committed(url, key) - committed_before
            wait_until = time.monotonic() + 15
            while time.monotonic() < wait_until and len(inbox.arrived) < len(sent):
                time.sleep(0.1)
            _stop(processes)  # before the database goes

        latencies = [inbox.arrived[r] - t for r, t in sent.items() if r in inbox.arrived]
        typer.echo(f"background: {published[0] / elapsed:,.0f} reads/s published, "
                   f"{committed / elapsed:,.0f} reads/s committed by the flow")  # fmt: skip
        typer.echo(f"probes: {len(sent)} sent, {len(latencies)} emailed")
        if latencies:
            p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
            typer.echo(
                f"read → email accepted: p50 {p50 * 1000:,.0f} ms, p99 {p99 * 1000:,.0f} ms, "
                f"max {max(latencies) * 1000:,.0f} ms, "
                f"mean {statistics.mean(latencies) * 1000:,.0f} ms"
            )
        typer.echo(
            f"baseline, one SMTP conversation alone: p50 {_percentile(raw, 0.5) * 1000:.1f} ms, "
            f"p99 {_percentile(raw, 0.99) * 1000:.1f} ms"
        )
        if not latencies or len(latencies) < len(sent):
            typer.echo("FAIL: some probes were never emailed")
            raise typer.Exit(1)
        verdict = "OK" if p99 <= TARGET_P99_S else "ABOVE TARGET"
        typer.echo(f"{verdict}: p99 {p99:.3f}s (target ≤ {TARGET_P99_S:.1f}s)")
    finally:
        _stop(processes)
        smtp.stop()
        client.delete(key)
        client.close()
        shutil.rmtree(work, ignore_errors=True)
