"""`meterwatch demo` (what `make demo` runs) on a fresh data folder: within a minute the API
and the dashboard answer, reads are flowing, the first flags are there and the first alert
emails have reached the demo's mail catcher; the printed logins sign in; Ctrl-C stops every
process, the embedded database included."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import psycopg
import pytest

from meterwatch import reports


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_stats(database_url: str) -> dict:
    with psycopg.connect(database_url) as conn:
        return reports.stats(conn)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


def sign_in(api: str, username: str, password: str) -> dict:
    form = urllib.parse.urlencode({"username": username, "password": password}).encode()
    with urllib.request.urlopen(f"{api}/v1/auth/token", data=form, timeout=5) as response:
        return json.loads(response.read())


def emails(data_dir: Path) -> list[Path]:
    new = data_dir / "demo" / "mail" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


@pytest.mark.slow
def test_demo_serves_reads_and_flags_within_a_minute_and_stops_cleanly(tmp_path: Path) -> None:
    api_port, dashboard_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL")  # the embedded default, nothing installed
    }
    env.update(
        DATA_DIR=str(tmp_path / "data"), API_PORT=str(api_port), DASHBOARD_PORT=str(dashboard_port)
    )
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen(
        [sys.executable, "-m", "meterwatch.cli", "demo"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    # the embedded server listens on a socket in the data folder
    database_url = f"postgresql://postgres@/meterwatch?host={tmp_path / 'data' / 'postgres'}"
    started = time.monotonic()
    try:
        stats: dict = {}
        data_dir = tmp_path / "data"
        while time.monotonic() - started < 60:
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            if get(f"http://127.0.0.1:{api_port}/health")[0] == 200:
                stats = read_stats(database_url)
                if (
                    stats["reads"]["stored"] > 0
                    and stats["flags"]["total"] > 0
                    and emails(data_dir)
                ):
                    break
            time.sleep(1)
        assert stats.get("reads", {}).get("stored", 0) > 0, "no reads stored within a minute"
        assert stats["flags"]["total"] > 0, "no flags within a minute"
        assert emails(data_dir), "no alert email reached the mail catcher within a minute"
        assert b"Subject:" in emails(data_dir)[0].read_bytes()
        assert get(f"http://127.0.0.1:{dashboard_port}/")[0] == 200
        logins = {
            role: (user, password)
            for role, user, password in (
                line.split() for line in (data_dir / "demo" / "logins.txt").read_text().splitlines()
            )
        }
        assert set(logins) == {"operator", "billing", "admin", "customer"}
        assert sign_in(f"http://127.0.0.1:{api_port}", *logins["operator"])["access_token"]
        first = stats["reads"]["stored"]
        time.sleep(3)
        assert read_stats(database_url)["reads"]["stored"] > first, "reads stopped flowing"
        children = psutil.Process(demo.pid).children(recursive=True)
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
        log.close()
    assert demo.returncode == 0, (tmp_path / "demo.log").read_text()[-3000:]
    time.sleep(1)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    pgdata = str(tmp_path / "data" / "postgres")
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and pgdata in " ".join(p.info["cmdline"])
    ], "the embedded PostgreSQL is still running"
