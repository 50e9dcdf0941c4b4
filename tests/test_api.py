"""The API through FastAPI's TestClient, against real PostgreSQL/TimescaleDB and Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import redis
from api_fixtures import staff_headers
from conftest import SERVERS
from fastapi.testclient import TestClient
from test_reports import seed_sample

from api.main import create_app
from meterwatch import reports
from meterwatch.settings import MissingSetting, Settings

NOWHERE_DB = "postgresql://postgres@127.0.0.1:1/nowhere"  # port 1: nothing listens


@pytest.fixture
def seeded_url(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        seed_sample(conn)
    return database_url


@pytest.fixture
def client(seeded_url: str, make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(database_url=seeded_url)
    with TestClient(create_app(settings), headers=staff_headers(settings)) as client:
        yield client


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_the_database_answers(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}


def test_ready_checks_redis_when_configured(
    seeded_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_url=seeded_url, redis_url=SERVERS.redis_url)
    with TestClient(create_app(settings), headers=staff_headers(settings)) as client:
        response = client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_unreachable_database_is_503_not_a_crash(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(database_url=NOWHERE_DB, api_db_startup_retries=0, api_db_timeout_s=1)
    with TestClient(create_app(settings), headers=staff_headers(settings)) as client:
        assert client.get("/health").status_code == 200  # alive, not ready
        ready = client.get("/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "degraded"
        assert body["checks"]["database"].startswith("unreachable at 127.0.0.1:1/nowhere: ")
        stats = client.get("/v1/stats")
        assert stats.status_code == 503
        assert stats.json()["detail"].startswith("database unavailable at 127.0.0.1:1/nowhere")


def test_unreachable_redis_is_503(seeded_url: str, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(database_url=seeded_url, redis_url="redis://:secret@127.0.0.1:1/0")
    with TestClient(create_app(settings), headers=staff_headers(settings)) as client:
        ready = client.get("/ready")
        live = client.get("/v1/live")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["redis"].startswith("unreachable at 127.0.0.1:1/0: ")
    assert "secret" not in ready.text
    # the live page still gets its numbers, with a note instead of the backlog
    assert live.status_code == 200
    metrics = live.json()["metrics"]
    assert metrics["backlog"] is None
    assert metrics["backlog_note"].startswith("Redis unreachable at 127.0.0.1:1/0")


def test_start_up_applies_the_migrations(make_settings: Callable[..., Settings]) -> None:
    name = f"mwt_empty_{uuid.uuid4().hex[:8]}"
    admin = SERVERS.pg_url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        info = psycopg.conninfo.conninfo_to_dict(admin)
        url = psycopg.conninfo.make_conninfo(**{**info, "dbname": name})  # type: ignore[arg-type]
        settings = make_settings(database_url=url)
        with TestClient(create_app(settings), headers=staff_headers(settings)) as client:
            assert client.get("/v1/stats").json()["reads"]["stored"] == 0
        with psycopg.connect(url) as conn:
            applied = conn.execute("SELECT name FROM schema_migrations").fetchall()
        assert ("001_core",) in applied
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_create_app_needs_a_database_url(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    settings.database_url = None
    with pytest.raises(MissingSetting, match="DATABASE_URL is not set"):
        create_app(settings)


def test_stats(client: TestClient, seeded_url: str) -> None:
    response = client.get("/v1/stats")
    assert response.status_code == 200
    with psycopg.connect(seeded_url) as conn:
        assert response.json() == reports.stats(conn)
    assert response.json()["reads"]["stored"] == 10


def test_latest_flags(client: TestClient) -> None:
    response = client.get("/v1/flags/latest", params={"limit": 2})
    assert response.status_code == 200
    flags = response.json()
    assert [(f["meter_id"], f["kind"]) for f in flags] == [("M3", "meter_tamper"), ("M1", "leak")]
    assert flags[1]["ended_at"] is None
    assert flags[1]["detected_at"] == "2026-03-01T01:00:00Z"
    assert len(client.get("/v1/flags/latest").json()) == 4  # default limit 20


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("0", "Input should be greater than or equal to 1"),
        ("501", "Input should be less than or equal to 500"),
        ("ten", "Input should be a valid integer, unable to parse string as an integer"),
    ],
)
def test_latest_flags_rejects_a_bad_limit(client: TestClient, limit: str, message: str) -> None:
    response = client.get("/v1/flags/latest", params={"limit": limit})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "limit"]
    assert error["msg"] == message


def test_live(
    seeded_url: str,
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    stream_key: str,
) -> None:
    ids = [redis_client.xadd(stream_key, {"n": str(i)}) for i in range(5)]
    with psycopg.connect(seeded_url) as conn:
        conn.execute(
            "INSERT INTO pipeline_status (source, worker, position, deliveries) "
            "VALUES (%s, '0', %s, 2)",
            (stream_key, ids[1]),
        )
    settings = make_settings(
        database_url=seeded_url, redis_url=SERVERS.redis_url, reads_stream=stream_key
    )
    with TestClient(create_app(settings), headers=staff_headers(settings)) as client:
        response = client.get("/v1/live", params={"flags": 2})
    assert response.status_code == 200
    live = response.json()
    metrics = live["metrics"]
    assert metrics["totals"] == {"stored": 10, "rejected": 2, "unmatched": 3, "duplicates": 3}
    assert metrics["newest_read_ts"] == "2026-03-01T01:30:00Z"
    assert metrics["lag_s"] > 0
    assert {s["source"] for s in metrics["sources"]} == {"meterwatch:reads", stream_key}
    (backlog,) = metrics["backlog"]
    assert (backlog["stream"], backlog["backlog"], backlog["exact"]) == (stream_key, 3, True)
    usage = live["usage"]
    assert usage["until"] == "2026-03-01T01:30:00Z" and usage["bucket"] == "1 hour"
    assert sum(p["usage"] for p in usage["points"] if p["unit"] == "gal") == 35.0
    assert [f["kind"] for f in live["latest_flags"]] == ["meter_tamper", "leak"]


def test_live_without_redis_says_so(client: TestClient) -> None:
    metrics = client.get("/v1/live").json()["metrics"]
    assert metrics["backlog"] is None
    assert metrics["backlog_note"] == "no Redis configured (REDIS_URL is not set)"


def test_live_rejects_bad_parameters(client: TestClient) -> None:
    assert client.get("/v1/live", params={"hours": 0}).status_code == 422
    assert client.get("/v1/live", params={"flags": 1000}).status_code == 422


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get("/v1/flags/latest", params={"limit": 0})
    client.get("/health")
    text = client.get("/metrics").text
    assert (
        'meterwatch_api_requests_total{method="GET",route="/v1/flags/latest",status="422"} 1.0'
        in text
    )
    assert 'meterwatch_api_request_duration_seconds_count{method="GET",route="/health"}' in text
    client.get("/no/such/page")
    assert 'route="(unmatched)",status="404"} 1.0' in client.get("/metrics").text


def test_openapi_docs(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/ready", "/v1/stats", "/v1/flags/latest", "/v1/live"} <= set(paths)
