"""`meterwatch demo`: the whole product on one machine with nothing to install.

Without DATABASE_URL it starts the embedded PostgreSQL (in the user's data folder) and gives
the demo a fresh database each time; without REDIS_URL the simulator feeds the dataflow in
process, otherwise it publishes onto the Redis Stream like a head-end and `meterwatch run`
consumes it. The simulated clock starts `DEMO_HISTORY_DAYS` ago and runs `DEMO_SPEEDUP` times
faster than the wall clock until it catches up with now, then keeps pace. The dataflow, API and
dashboard are child processes; Ctrl-C stops them all and then the database.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from rich.console import Console

from meterwatch.db import embedded_database, migrate
from meterwatch.settings import Settings

if TYPE_CHECKING:
    from simulator import Simulation

DEMO_SEED = 2026
DEMO_INTERVAL_MINUTES = 15


def demo_start(settings: Settings) -> datetime:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(days=settings.demo_history_days)


def demo_simulation(settings: Settings, start: datetime) -> Simulation:
    """The demo's simulated utility. Anomalies start once the detectors have learned two days
    of each meter and end well before the simulated clock catches up with now, so the first
    flags show within a minute at the default speed-up."""
    from simulator import Simulation, SimulationConfig

    history = settings.demo_history_days
    config = SimulationConfig.live(
        meters=settings.demo_meters,
        history_days=history,
        now=start + timedelta(days=history),
        interval_minutes=DEMO_INTERVAL_MINUTES,
        seed=DEMO_SEED,
        timezone=settings.utility_tz,
        anomaly_earliest_start_days=min(2.5, history / 2),
        anomaly_latest_start_days=max(min(2.5, history / 2), history * 0.7),
    )
    return Simulation(config)


def _fresh_database(url: str) -> None:
    """Drop and recreate the embedded server's demo database (never a user's database)."""
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    admin_url = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _import_accounts(url: str, simulation: Simulation, directory: Path) -> None:
    import csv

    from meterwatch.cis import import_cis

    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "accounts.csv": simulation.accounts(),
        "meters.csv": simulation.meter_assignments(),
    }
    for name, rows in files.items():
        with (directory / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    report = import_cis(url, directory / "accounts.csv", directory / "meters.csv", actor="demo")
    if not report.ok:
        raise RuntimeError(f"the demo's CIS files did not import: {report}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(settings: Settings, console: Console) -> None:
    # SIGTERM (a service manager, `timeout`) stops the demo as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    with ExitStack() as stack:
        if settings.database_url:
            url = settings.database_url
            console.print(f"using DATABASE_URL {url}")
        else:
            console.print(f"starting the embedded PostgreSQL in {settings.data_dir / 'postgres'}")
            url = stack.enter_context(embedded_database(settings.data_dir))
            _fresh_database(url)
        migrate(url)
        start = demo_start(settings)
        simulation = demo_simulation(settings, start)
        _import_accounts(url, simulation, settings.data_dir / "demo")
        console.print(
            f"simulating {settings.demo_meters} meters from {start:%Y-%m-%d %H:%M} UTC at "
            f"{settings.demo_speedup:,.0f}x until it catches up with now"
        )

        env = {**os.environ, "DATABASE_URL": url}
        children: dict[str, subprocess.Popen[bytes]] = {}
        stack.callback(_stop_all, children, console)
        command = [sys.executable, "-m", "meterwatch.cli"]
        if settings.redis_url:
            recovery = settings.data_dir / "demo-recovery"
            shutil.rmtree(recovery, ignore_errors=True)
            _clear_streams(settings)
            children["dataflow"] = subprocess.Popen(
                [*command, "run", "--recovery-dir", str(recovery)], env=env
            )
            stop = threading.Event()
            stack.callback(stop.set)
            threading.Thread(
                target=_head_end, args=(settings, simulation, start, stop), daemon=True
            ).start()
        else:
            children["dataflow"] = subprocess.Popen(
                [*command, "flow-demo", "--start", str(start.timestamp())], env=env
            )
        children["api"] = subprocess.Popen([*command, "api"], env=env)
        children["dashboard"] = subprocess.Popen([*command, "dashboard"], env=env)

        console.print(
            f"\n  dashboard  http://{settings.dashboard_host}:{settings.dashboard_port}/\n"
            f"  API        {settings.effective_api_url}/docs\n\nCtrl-C stops the demo.\n"
        )
        try:
            while True:
                for name, child in children.items():
                    code = child.poll()
                    if code is not None:
                        raise RuntimeError(f"the demo's {name} stopped (exit status {code})")
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("\nstopping the demo")


def _stop_all(children: dict[str, subprocess.Popen[bytes]], console: Console) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    for name, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            console.print(f"{name} did not stop in time; killing it")
            child.kill()
            child.wait()


def _clear_streams(settings: Settings) -> None:
    import redis

    client = redis.Redis.from_url(settings.require_redis_url())
    for key in settings.stream_keys:
        client.delete(key)


def _head_end(
    settings: Settings, simulation: Simulation, start: datetime, stop: threading.Event
) -> None:
    """Publish the simulation onto the Redis Stream as its clock advances."""
    import redis

    from stream.publish import publish
    from stream.sources import SimulatedClock

    client = redis.Redis.from_url(settings.require_redis_url(), decode_responses=True)
    clock = SimulatedClock(start, settings.demo_speedup, timedelta(hours=1))
    position = start
    while not stop.is_set():
        target = clock.target(position)
        if target > position:
            publish(client, settings.stream_keys, simulation.reads_between(position, target))
            position = target
        stop.wait(0.1)


def run_demo_flow(settings: Settings, start_epoch: float) -> None:
    """The demo's dataflow with the simulator as its source (no Redis)."""
    from stream.flow import build_flow
    from stream.runner import execute
    from stream.sources import SimulatedClock, SimulatorSource

    start = datetime.fromtimestamp(start_epoch, UTC)
    simulation = demo_simulation(settings, start)
    clock = SimulatedClock(start, settings.demo_speedup, timedelta(hours=1))
    flow = build_flow(
        SimulatorSource(simulation, clock),
        settings.require_database_url(),
        dedup_window_days=settings.dedup_window_days,
        assignments_refresh_s=settings.assignments_refresh_s,
        flow_id="meterwatch_demo",
        tz=settings.tz,
    )
    execute(flow, settings)  # returns once SIGINT/SIGTERM ends the simulator's input
