"""Faults, with real processes: a notifier killed (SIGKILL) in the middle of an SMTP
conversation loses no alert and sends twice only in the one window SMTP itself has; the
dataflow on the Redis Stream, killed and restarted, fed duplicates and replays, decides each
alert once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
import redis
from alerts_fixtures import (
    NotifierProcess,
    SmtpServer,
    add_account,
    alerts_of,
    decide_leak,
    deliveries_of,
    smtp_server,
    wait_until,
)
from conftest import SERVERS

from meterwatch.settings import Settings
from stream.publish import publish

__all__ = ["smtp_server"]  # fixtures used by name

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(database_url: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(database_url=database_url)


def _status(database_url: str, account: str) -> tuple[str, list[str]]:
    [alert] = alerts_of(database_url, account_id=account)
    return alert["status"], [d["status"] for d in deliveries_of(database_url, alert["alert_id"])]


@pytest.mark.parametrize(
    ("hold_at", "copies"),
    [
        # Killed while the server holds the whole message but has not answered 250 yet: the
        # next notifier cannot know it arrived and sends it again, with the same Message-ID
        # (SMTP's own window: a connection lost after the data, before the reply).
        ("DATA", 2),
        # Killed before the message was transferred: sent once, by the next notifier.
        ("RCPT", 1),
    ],
)
def test_a_notifier_killed_mid_send_loses_nothing(
    settings: Settings,
    database_url: str,
    smtp_server: SmtpServer,
    tmp_path: Path,
    hold_at: str,
    copies: int,
) -> None:
    with psycopg.connect(database_url) as conn:
        add_account(conn, "K1", meters=["MK1"])
    alert = decide_leak(database_url, settings, "K1", "MK1")
    smtp_server.hold_at = hold_at
    options = {"notify_lease_s": 2, "notify_poll_s": 0.5, "notify_retry_s": 0.5}
    first = NotifierProcess(database_url, smtp_server, tmp_path / "notify-1.log", **options)
    first.start()
    try:
        assert smtp_server.holding.wait(60), (tmp_path / "notify-1.log").read_text()
        # The attempt was recorded before the server heard of it.
        assert _status(database_url, "K1") == ("sending", ["sending"])
        first.kill()
    finally:
        first.stop()
    smtp_server.hold_at = None
    smtp_server.release.set()

    second = NotifierProcess(database_url, smtp_server, tmp_path / "notify-2.log", **options)
    second.start()
    try:
        wait_until(
            lambda: _status(database_url, "K1")[0] == "sent",
            timeout=60,
            what="the second notifier to send the abandoned alert",
        )
    finally:
        second.stop()
    received = smtp_server.to("k1@example.com")
    assert len(received) == copies
    assert {m.message_id for m in received} == {
        f"<meterwatch-alert-{alert['alert_id']}@example.com>"
    }
    records = deliveries_of(database_url, alert["alert_id"])
    assert [d["status"] for d in records] == ["failed", "sent"]
    assert "outcome is unknown" in records[0]["error"]
    [done] = alerts_of(database_url, account_id="K1")
    assert done["attempts"] == 2


class StreamFlowProcess:
    """`meterwatch run` over a Redis Stream, as its own process, killed for real."""

    def __init__(self, database_url: str, stream_key: str, data_dir: Path) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": SERVERS.redis_url,
            "READS_STREAM": stream_key,
            "DATA_DIR": str(data_dir),
            "SNAPSHOT_INTERVAL_S": "1",
            "UTILITY_TZ": "America/Chicago",
            "ALERT_REFRESH_S": "0.2",
        }
        self.log = data_dir / "run.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "meterwatch.cli", "run"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=60)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _committed(database_url: str, source: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT deliveries FROM pipeline_status WHERE source = %s", (source,)
        ).fetchone()
    return row[0] if row else 0


def test_the_stream_flow_killed_and_fed_replays_alerts_once(
    database_url: str,
    redis_client: redis.Redis,
    stream_key: str,
    tmp_path: Path,
) -> None:
    chicago = ZoneInfo("America/Chicago")
    day = datetime(2026, 1, 5, tzinfo=chicago)
    with psycopg.connect(database_url) as conn:
        add_account(conn, "R1", meters=["MR1", "MR2"], daily=100)

    def rows(meter: str, hours: range, value: float, *, utc: bool = False) -> list[dict[str, str]]:
        out = []
        for h in hours:
            ts = day + timedelta(hours=h)
            stamp = ts.astimezone(ZoneInfo("UTC")) if utc else ts
            out.append({"meter_id": meter, "ts": stamp.isoformat(), "value": str(value)})
        return out

    flow = StreamFlowProcess(database_url, stream_key, tmp_path / "flow")
    published = publish(redis_client, [stream_key], rows("MR1", range(1, 25), 5.0))  # 120 gal
    flow.start()
    try:
        wait_until(lambda: _committed(database_url, stream_key) >= published or not flow.alive(),
                   timeout=120, what="the first reads")  # fmt: skip
        assert flow.alive(), flow.log.read_text()[-3000:]
        wait_until(lambda: alerts_of(database_url, account_id="R1"), timeout=30, what="alert")
        flow.signal(signal.SIGKILL)  # no clean stop: the restart replays since its snapshot

        # The head-end resends the whole day (some as UTC), the second meter reports, the next
        # day starts: still one alert for 5 January.
        published += publish(redis_client, [stream_key], rows("MR1", range(1, 25), 5.0, utc=True))
        published += publish(redis_client, [stream_key], rows("MR1", range(12, 25), 9.0))
        published += publish(redis_client, [stream_key], rows("MR2", range(1, 25), 1.0))
        published += publish(redis_client, [stream_key], rows("MR1", range(25, 30), 1.0))
        flow.start()
        wait_until(lambda: _committed(database_url, stream_key) >= published or not flow.alive(),
                   timeout=120, what="every delivery")  # fmt: skip
        assert flow.alive(), flow.log.read_text()[-3000:]
        flow.signal(signal.SIGTERM)
    finally:
        if flow.alive():
            flow.signal(signal.SIGKILL)

    alerts = alerts_of(database_url, account_id="R1")
    assert [(a["rule"], a["period_start"]) for a in alerts] == [("daily", date(2026, 1, 5))]
    assert alerts[0]["detected_at"] == day + timedelta(hours=20)  # 20 × 5 gal
    with psycopg.connect(database_url) as conn:
        usage = dict(
            conn.execute(
                "SELECT day, usage FROM account_daily_usage WHERE account_id = 'R1'"
            ).fetchall()
        )
    # Each (meter, ts) once, the first delivery winning: 24 × 5 (MR1) + 24 × 1 (MR2) on the 5th
    # (the reads stamped midnight belong to the 5th), 5 × 1 on the 6th.
    assert usage == {date(2026, 1, 5): 144.0, date(2026, 1, 6): 5.0}
