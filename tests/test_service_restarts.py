"""PostgreSQL and Redis restarted while reads stream: the dataflow waits and retries with
backoff (and says so in its log), /ready reports it degraded meanwhile, and nothing is lost
or doubled: the final counts are exactly the scenario's.

These restart the machine's real servers (briefly: a few seconds), so they break anything
else using them at that moment; CI runs the suite serially.

Redis here keeps nothing on disk, so its restart loses the stream. The head-end is modelled
by `stream.publish.RetainingPublisher`: it keeps what it published until the dataflow has
committed it and, once Redis is back, republishes what the stream lost with the same entry ids.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from conftest import SERVERS
from fastapi.testclient import TestClient
from pipeline_fixtures import (
    Scenario,
    StreamFlow,
    committed_deliveries,
    load_accounts,
    read_counts,
)

from api.main import create_app
from meterwatch.settings import Settings
from stream.publish import RetainingPublisher, file_rows

PG_CLUSTER = ("15", "main")
REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (psycopg.OperationalError, redis.RedisError):
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def pg_ctl(action: str) -> None:
    subprocess.run(
        [
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            *PG_CLUSTER,
            action,
            *(["-m", "fast"] if action == "stop" else []),
        ],
        check=True,
        capture_output=True,
    )


def postgres_up() -> bool:
    with psycopg.connect(SERVERS.pg_url, connect_timeout=2) as conn:
        return conn.execute("SELECT 1").fetchone() == (1,)


def redis_up() -> bool:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_redis() -> None:
    Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
    subprocess.run(REDIS_START, check=True, capture_output=True)
    wait_until(redis_up, 10, "Redis to start")


class Feed:
    """A head-end publishing a reads file in small chunks from a thread, through the retaining
    publisher, acknowledging what the dataflow committed.

    With `hold_back`, the last `hold_back` rows wait until `release` is set (`holding` says the
    rest is out) and then go out at once: however fast the dataflow is, that many entries are
    on the stream and not yet committed right after."""

    def __init__(
        self,
        database_url: str,
        stream_key: str,
        rows: list[dict[str, Any]],
        hold_back: int = 0,
    ) -> None:
        self.client = redis.Redis.from_url(
            SERVERS.redis_url, socket_timeout=2, socket_connect_timeout=1
        )
        self.publisher = RetainingPublisher(self.client, stream_key, keep_s=600)
        self.database_url = database_url
        self.stream_key = stream_key
        self.rows = rows
        self.hold_back = hold_back
        self.holding = threading.Event()
        self.release = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            cut = len(self.rows) - self.hold_back
            for at in range(0, cut, 500):
                self.publisher.publish(self.rows[at : min(at + 500, cut)])
                self.sent = min(at + 500, cut)
                self._acknowledge()
                time.sleep(0.02)
            if self.hold_back:
                self.holding.set()
                self.release.wait()
                self.publisher.publish(self.rows[cut:])
                self.sent = len(self.rows)
            # Faster than the dataflow: much is still unread. A head-end keeps running.
            while self._committed() < len(self.rows):
                self.publisher.watch()
                self._acknowledge()
                time.sleep(0.2)
        except BaseException as exc:  # reported by `join`
            self.error = exc

    def _committed(self) -> int:
        try:
            return committed_deliveries(self.database_url, self.stream_key)
        except psycopg.OperationalError:
            return 0  # the database is away: still waiting

    def _acknowledge(self) -> None:
        try:
            with psycopg.connect(self.database_url, connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT position FROM pipeline_status WHERE source = %s", (self.stream_key,)
                ).fetchone()
        except psycopg.OperationalError:
            return  # the database is away: acknowledge later
        self.publisher.acknowledge(row[0] if row else None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)  # the thread ends when everything is committed
        assert not self._thread.is_alive(), "the head-end did not finish publishing"
        if self.error is not None:
            raise self.error
        self.client.close()


def stream_rows(scenario: Scenario) -> list[dict[str, Any]]:
    """The scenario's rows as the `replay` command publishes them."""
    return list(file_rows(scenario.reads))


def expected_counts(scenario: Scenario) -> dict[str, int]:
    counts = scenario.counts
    return {
        "stored": counts["stored"],
        "rejected": counts["rejected"],
        "unmatched": counts["unmatched"]["total"],
        "duplicates": counts["duplicates"],
    }


@pytest.fixture
def api_client(
    database_url: str, make_settings: Callable[..., Settings], stream_key: str
) -> Iterator[TestClient]:
    settings = make_settings(
        database_url=database_url,
        redis_url=SERVERS.redis_url,
        reads_stream=stream_key,
        api_db_timeout_s=1,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def ready(client: TestClient) -> tuple[int, dict[str, Any]]:
    response = client.get("/ready")
    return response.status_code, response.json()


def start_streaming(
    database_url: str,
    scenario: Scenario,
    stream_key: str,
    tmp_path: Path,
    hold_back: int = 0,
) -> tuple[list[dict[str, str]], StreamFlow, Feed]:
    """The scenario's accounts imported, `meterwatch run` consuming and the head-end publishing
    (see `Feed` for `hold_back`), returned once a quarter of the reads is committed."""
    load_accounts(database_url, scenario)
    rows = stream_rows(scenario)
    flow = StreamFlow(database_url, SERVERS.redis_url, stream_key, tmp_path / "flow")
    feed = Feed(database_url, stream_key, rows, hold_back)
    flow.start()
    feed.start()
    try:
        wait_until(
            lambda: committed_deliveries(database_url, stream_key) > len(rows) // 4, 120, "reads"
        )
    except BaseException:
        flow.stop()
        raise
    return rows, flow, feed


def finish_streaming(
    database_url: str,
    stream_key: str,
    rows: list[dict[str, str]],
    flow: StreamFlow,
    feed: Feed,
    api_client: TestClient,
) -> None:
    """After the outage: everything published and committed, the same dataflow process still
    running, and the API ready again."""
    feed.join(timeout=300)
    flow.wait_for(database_url, stream_key, len(rows), timeout=300)
    assert flow.process is not None and flow.process.poll() is None, "the dataflow died"
    wait_until(lambda: ready(api_client)[0] == 200, 30, "ready again")


@pytest.mark.slow
def test_postgres_restart_while_reads_stream(
    database_url: str,
    small_scenario: Scenario,
    stream_key: str,
    tmp_path: Path,
    api_client: TestClient,
) -> None:
    rows, flow, feed = start_streaming(database_url, small_scenario, stream_key, tmp_path)
    try:
        assert ready(api_client) == (
            200,
            {"status": "ready", "checks": {"database": "ok", "redis": "ok", "pipeline": "ok"}},
        )
        pg_ctl("stop")
        try:
            # the dataflow waits for the database, and says so in its heartbeat
            status, body = wait_until(
                lambda: (r := ready(api_client))[1]["checks"].get("pipeline", "ok") != "ok" and r,
                20,
                "the pipeline to report the database away",
            )
            assert status == 503 and body["status"] == "degraded"
            assert body["checks"]["database"].startswith("unreachable")
            assert "waiting_for_database" in body["checks"]["pipeline"]
            time.sleep(1.0)  # a couple of retries
        finally:
            pg_ctl("start")
        wait_until(postgres_up, 30, "PostgreSQL to start")
        finish_streaming(database_url, stream_key, rows, flow, feed, api_client)
        assert ready(api_client)[1]["checks"]["pipeline"] == "ok"
    finally:
        flow.stop()
    assert read_counts(database_url) == expected_counts(small_scenario)
    log = flow.log.read_text()
    assert "database unavailable" in log and "retrying in" in log
    assert "database is back after" in log


# rows the head-end sends at once just before Redis goes (of about 21,000)
HELD_BACK = 9000


@pytest.mark.slow
def test_redis_restart_while_reads_stream(
    database_url: str,
    small_scenario: Scenario,
    stream_key: str,
    tmp_path: Path,
    api_client: TestClient,
) -> None:
    rows, flow, feed = start_streaming(
        database_url, small_scenario, stream_key, tmp_path, hold_back=HELD_BACK
    )
    try:
        # The stream holds entries the dataflow has not committed (nor, mostly, read) when
        # Redis goes: those are what a restart without persistence loses. The head-end sends
        # its last rows at once just before, so that this does not depend on which of it and
        # the dataflow is faster.
        wait_until(feed.holding.is_set, 60, "the head-end to publish all but the held rows")
        feed.release.set()
        wait_until(lambda: feed.sent == len(rows), 30, "the head-end to publish everything")
        unread = len(rows) - committed_deliveries(database_url, stream_key)
        # more than the dataflow holds in flight (a couple of source batches of 2,000)
        assert unread > 5000, unread
        subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], capture_output=True)
        try:
            wait_until(lambda: not redis_up(), 10, "Redis to stop")
            status, body = ready(api_client)
            assert status == 503 and body["checks"]["redis"].startswith("unreachable")
            time.sleep(2.0)
        finally:
            start_redis()
        finish_streaming(database_url, stream_key, rows, flow, feed, api_client)
    finally:
        flow.stop()
    assert feed.publisher.restored >= unread  # the restart lost the stream; it came back
    assert read_counts(database_url) == expected_counts(small_scenario)
    log = flow.log.read_text()
    assert "Redis unavailable" in log and "retrying in" in log
    assert "Redis is back" in log


def test_retaining_publisher_restores_a_lost_stream_with_the_same_ids(
    redis_client: redis.Redis, stream_key: str
) -> None:
    publisher = RetainingPublisher(redis_client, stream_key, keep_s=0)
    rows = [{"meter_id": f"M{i}", "ts": "2026-03-01T00:00:00Z", "value": str(i)} for i in range(9)]
    ids = publisher.publish(rows)
    before = redis_client.xrange(stream_key)
    assert [entry_id for entry_id, _ in before] == ids
    publisher.acknowledge(ids[2])  # the dataflow committed the first three
    assert [r[0] for r in publisher.retained] == ids[3:]
    redis_client.delete(stream_key)  # what a Redis without persistence does on a restart
    assert publisher.restore() == 6
    assert redis_client.xrange(stream_key) == before[3:]
    assert publisher.restore() == 0  # nothing is added twice
    # new entries go after the restored ones
    [newer] = publisher.publish([{"meter_id": "M9", "ts": "2026-03-01T00:00:00Z", "value": "9"}])
    assert redis_client.xrange(stream_key)[-1][0] == newer
