"""`meterwatch demo`: the whole product on one machine with nothing to install.

Without DATABASE_URL it starts the embedded PostgreSQL (in the user's data folder) and gives
the demo a fresh database each time; without REDIS_URL the simulator feeds the dataflow in
process, otherwise it publishes onto the Redis Stream like a head-end and `meterwatch run`
consumes it. The simulated clock starts `DEMO_HISTORY_DAYS` ago and runs `DEMO_SPEEDUP` times
faster than the wall clock until it catches up with now, then keeps pace. The dataflow, API and
dashboard are child processes; Ctrl-C stops them all and then the database.
"""

from __future__ import annotations

import logging
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


def _demo_customer(simulation: Simulation) -> str:
    """The customer the demo signs in as: one whose account will show a leak, if any will."""
    accounts = {row["account_id"]: row for row in simulation.accounts()}
    for label in simulation.labels():
        account = accounts.get(label.account_id)
        if label.kind == "leak" and account and account.get("status") == "active":
            return account.get("customer_id") or label.account_id
    first = next(iter(accounts.values()))
    return first.get("customer_id") or first["account_id"]


def _create_logins(url: str, simulation: Simulation, directory: Path) -> dict[str, tuple[str, str]]:
    """One user per role, each with a fresh random password (the demo database is new each
    run, and a fixed password would end up on a reachable machine sooner or later). Written to
    `directory/logins.txt` too, readable by the owner only."""
    import secrets

    from api.commands import create_user

    customer_id = _demo_customer(simulation)
    logins = {
        role: (username, secrets.token_urlsafe(9))
        for role, username in (
            ("operator", "operator"),
            ("billing", "billing"),
            ("admin", "admin"),
            ("customer", f"customer-{customer_id.lower()}"),
        )
    }
    with psycopg.connect(url) as conn:
        for role, (username, password) in logins.items():
            create_user(
                conn,
                username,
                role,
                customer_id=customer_id if role == "customer" else None,
                password=password,
                actor="demo",
            )
    path = directory / "logins.txt"
    path.touch(mode=0o600)
    path.write_text("".join(f"{r} {u} {p}\n" for r, (u, p) in logins.items()), encoding="utf-8")
    return logins


def _mail_settings(settings: Settings, stack: ExitStack, console: Console) -> dict[str, str]:
    """Where the demo's notifier sends email: SMTP_HOST when set, else a mail catcher on
    loopback that keeps every message in a Maildir (DATA_DIR/demo/mail), so the demo's alerts
    are really delivered and can be read. SMS needs Twilio settings; without them SMS alerts
    are recorded as failed attempts and retried, as in production."""
    if settings.smtp_host:
        return {}
    import socket

    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox

    maildir = settings.data_dir / "demo" / "mail"
    shutil.rmtree(maildir, ignore_errors=True)
    maildir.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    controller = Controller(Mailbox(maildir), hostname="127.0.0.1", port=port)
    controller.start()
    stack.callback(controller.stop)
    console.print(f"alert emails go to a mail catcher on 127.0.0.1:{port}: {maildir}/new/")
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none"}


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
        logins = _create_logins(url, simulation, settings.data_dir / "demo")
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
        children["notifier"] = subprocess.Popen(
            [*command, "notify"], env={**env, **_mail_settings(settings, stack, console)}
        )
        children["api"] = subprocess.Popen([*command, "api"], env=env)
        children["dashboard"] = subprocess.Popen([*command, "dashboard"], env=env)

        console.print(
            f"\n  dashboard  http://{settings.dashboard_host}:{settings.dashboard_port}/\n"
            f"  API        {settings.effective_api_url}/docs\n\n  sign in as (user / password):"
        )
        for role, (username, password) in logins.items():
            console.print(f"    {role:<9} {username} / {password}")
        console.print(
            f"  (also in {settings.data_dir / 'demo' / 'logins.txt'})\n\nCtrl-C stops the demo.\n"
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
