"""`meterwatch bench recovery`: what Bytewax recovery snapshots cost the stream flow.

One simulated scenario (`--meters` meters, 30 days of hourly reads with every delivery defect)
is published once onto a Redis Stream key of its own; then the whole stream flow
(`stream.runner.stream_flow`, in this process) consumes it into a fresh throwaway database,
once per configuration, interleaved: recovery off (the baseline), recovery on with
`SNAPSHOT_INTERVAL_S` 10 s (the default) and 1 s. Printed: deliveries per second for each, and
the size of the recovery store and of a meter's latest snapshot.
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated

import psycopg
import redis
import typer

from bench.cli import bench_app
from meterwatch.cis import import_cis
from meterwatch.db import migrate
from meterwatch.settings import Settings, get_settings
from simulator import SimulationConfig, write_scenario
from stream import sources
from stream.publish import publish_file
from stream.runner import execute, recovery_config, stream_flow

CONFIGS = [("off", 10.0), ("on", 10.0), ("on", 1.0)]


def _committed(url: str, key: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT deliveries FROM pipeline_status WHERE source = %s", (key,)
        ).fetchone()
    return row[0] if row else 0


def _one_run(
    admin_url: str,
    redis_url: str,
    key: str,
    work: Path,
    scenario: Path,
    total: int,
    mode: str,
    interval: float,
) -> dict[str, float]:
    name = f"mwbench_recovery_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    data = work / name
    try:
        migrate(url)
        report = import_cis(url, scenario / "accounts.csv", scenario / "meters.csv", actor="bench")
        assert report.ok, report
        settings = Settings(
            database_url=url,
            redis_url=redis_url,
            reads_stream=key,
            data_dir=data,
            snapshot_interval_s=interval,
            utility_tz="America/Chicago",
        )
        flow = stream_flow(settings)
        done: dict[str, float] = {}

        def stop_when_committed() -> None:
            while _committed(url, key) < total:
                time.sleep(0.05)
            done["at"] = time.monotonic()
            sources.stop_requested.set()

        started = time.monotonic()
        threading.Thread(target=stop_when_committed, daemon=True).start()
        execute(flow, settings, recovery=recovery_config(settings) if mode == "on" else None)
        sources.stop_requested.clear()
        result = {"per_s": total / (done["at"] - started)}
        store = next((data / "recovery").glob("part-*.sqlite3"), None)
        if store is not None:
            result["store_bytes"] = store.stat().st_size
            with sqlite3.connect(store) as db:
                row = db.execute(
                    """SELECT count(*), avg(length(ser_change)) FROM snaps s
                        WHERE step_id LIKE '%.meter' AND snap_epoch = (
                          SELECT max(snap_epoch) FROM snaps t
                           WHERE t.step_id = s.step_id AND t.state_key = s.state_key)"""
                ).fetchone()
            result["meters"], result["snapshot_bytes"] = row
        return result
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@bench_app.command("recovery")
def bench_recovery(
    meters: Annotated[int, typer.Option(help="Meters in the scenario (720 reads each).")] = 140,
    rounds: Annotated[int, typer.Option(help="Runs of each configuration.")] = 2,
) -> None:
    """Throughput of the stream flow with recovery off and on, and the snapshot sizes."""
    settings = get_settings()
    admin_url = settings.require_database_url()
    redis_url = settings.require_redis_url()
    work = Path(tempfile.mkdtemp(prefix="mwbench-recovery-"))
    key = f"mwbench:recovery:{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    try:
        write_scenario(work / "scenario", SimulationConfig(meters=meters, days=30, seed=5))
        total = publish_file(client, [key], work / "scenario" / "reads.csv")
        typer.echo(f"{total:,} deliveries of {meters} meters on {key}; {rounds} round(s)")
        figures: dict[tuple[str, float], list[dict[str, float]]] = {c: [] for c in CONFIGS}
        for _ in range(rounds):
            for mode, interval in CONFIGS:
                figures[(mode, interval)].append(
                    _one_run(
                        admin_url, redis_url, key, work, work / "scenario", total, mode, interval
                    )
                )
        baseline = statistics.median(r["per_s"] for r in figures[("off", 10.0)])
        typer.echo("| recovery | snapshot interval | deliveries/s (median) | vs off |")
        typer.echo("|---|---:|---:|---:|")
        for (mode, interval), runs in figures.items():
            rate = statistics.median(r["per_s"] for r in runs)
            typer.echo(f"| {mode} | {interval:g} s | {rate:,.0f} | {rate / baseline:.2f} |")
        last = figures[("on", 10.0)][-1]
        typer.echo(
            f"recovery store: {last['store_bytes'] / 1024:,.0f} KiB for {last['meters']:.0f} "
            f"meters; a meter's latest snapshot: {last['snapshot_bytes']:,.0f} bytes"
        )
    finally:
        client.delete(key)
        client.close()
        shutil.rmtree(work, ignore_errors=True)
