"""Ingest (POST /v1/reads) and the exception queues: rejected reads, unmatched reads, assigning a
meter and reprocessing its reads through the real Redis stream and dataflow."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import psycopg
import pytest
import redis
from api_fixtures import Api, access_url
from conftest import SERVERS
from fastapi.testclient import TestClient

from api.main import create_app
from meterwatch.settings import Settings
from stream.matching import AssignmentIndex, MatchedRead
from stream.reads import Delivery, Reading, parse_delivery, reset_limits

__all__ = ["access_url"]


@pytest.fixture
def streamed(
    access_url: tuple[str, dict[str, int]],
    make_settings: Callable[..., Settings],
    stream_key: str,
) -> Iterator[Api]:
    url, ids = access_url
    settings = make_settings(
        database_url=url,
        redis_url=SERVERS.redis_url,
        reads_stream=stream_key,
        api_max_ingest_bytes=5000,
        api_max_ingest_reads=20,
    )
    reset_limits()
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings, url, ids)
    reset_limits()


def entries(client: redis.Redis, key: str) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(key)]


def test_ingest_json_with_per_row_errors(
    streamed: Api, redis_client: redis.Redis, stream_key: str
) -> None:
    reads = [
        {"meter_id": "M1", "ts": "2026-03-02T00:15:00-06:00", "value": 1.5},
        {"meter_id": "M1", "ts": "2026-03-02T00:30:00", "value": "2"},
        {"meter_id": "M1", "ts": "2026-03-02T00:45:00Z", "value": "lots", "quality": "E"},
        17,
    ]
    response = streamed.client.post("/v1/reads", json=reads, headers=streamed.as_role("headend"))
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["received"], body["published"], body["invalid"]) == (4, 4, 3)
    assert [(e["row"], e["reason"].split(":")[0]) for e in body["errors"]] == [
        (1, "timestamp '2026-03-02T00"),
        (2, "value 'lots' is not a number"),
        (3, "meter_id is missing"),
    ]
    published = entries(redis_client, stream_key)
    # invalid rows travel too, so that the dataflow files them as rejected reads
    assert published[0] == {"meter_id": "M1", "ts": "2026-03-02T00:15:00-06:00", "value": "1.5"}
    assert published[3] == {"raw": "17"}


def test_ingest_csv_strict_and_limits(
    streamed: Api, redis_client: redis.Redis, stream_key: str
) -> None:
    headers = {**streamed.as_role("operator"), "Content-Type": "text/csv"}
    good = "meter_id,ts,value,unit\nM1,2026-03-02T01:00:00Z,3,ft3\n"
    response = streamed.client.post("/v1/reads", content=good, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["errors"] == []
    bad = good + "M1,yesterday,3,gal\n"
    strict = streamed.client.post(
        "/v1/reads", content=bad, headers=headers, params={"strict": "true"}
    )
    assert strict.status_code == 422
    assert strict.json()["detail"]["errors"][0]["row"] == 3  # spreadsheet row (header is 1)
    assert len(entries(redis_client, stream_key)) == 1  # strict published nothing
    no_header = streamed.client.post("/v1/reads", content="a,b\n1,2\n", headers=headers)
    assert no_header.status_code == 422 and "meter_id, ts and value" in no_header.json()["detail"]
    huge = streamed.client.post("/v1/reads", content="x" * 6000, headers=headers)
    assert huge.status_code == 413 and "API_MAX_INGEST_BYTES" in huge.json()["detail"]
    many = "meter_id,ts,value\n" + "M1,2026-03-02T01:00:00Z,1\n" * 21
    assert streamed.client.post("/v1/reads", content=many, headers=headers).status_code == 413
    xml = {**headers, "Content-Type": "application/xml"}
    assert streamed.client.post("/v1/reads", content="<a/>", headers=xml).status_code == 415
    not_json = {**headers, "Content-Type": "application/json"}
    assert streamed.client.post("/v1/reads", content="{", headers=not_json).status_code == 422
    customers = streamed.client.post("/v1/reads", json=[], headers=streamed.as_role("customer"))
    assert customers.status_code == 403


def test_ingest_with_redis_down_is_503(api_without_redis: Api) -> None:
    response = api_without_redis.client.post(
        "/v1/reads",
        json=[{"meter_id": "M1", "ts": "2026-03-02T01:00:00Z", "value": 1}],
        headers=api_without_redis.as_role("admin"),
    )
    assert response.status_code == 503
    assert response.json()["detail"].startswith("Redis unreachable at 127.0.0.1:1/0: ")


@pytest.fixture
def api_without_redis(
    access_url: tuple[str, dict[str, int]],
    make_settings: Callable[..., Settings],
) -> Iterator[Api]:
    url, ids = access_url
    settings = make_settings(database_url=url, redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings, url, ids)


def test_rejected_queue(streamed: Api) -> None:
    headers = streamed.as_role("operator")
    listed = streamed.client.get("/v1/exceptions/rejected", headers=headers).json()
    assert [r["reason"] for r in listed] == ["value out of range", "unparseable ts"]
    first = listed[1]["rejected_id"]
    filtered = streamed.client.get(
        "/v1/exceptions/rejected", params={"reason_contains": "TS"}, headers=headers
    ).json()
    assert [r["rejected_id"] for r in filtered] == [first]
    done = streamed.client.post(
        f"/v1/exceptions/rejected/{first}/resolve",
        json={"reason": "head-end resent it with an offset"},
        headers=headers,
    )
    assert done.status_code == 200 and done.json()["resolved_by"] == "olga.operator"
    again = streamed.client.post(
        f"/v1/exceptions/rejected/{first}/resolve", json={"reason": "twice"}, headers=headers
    )
    assert again.status_code == 409
    billing = streamed.client.post(
        f"/v1/exceptions/rejected/{first}/resolve",
        json={"reason": "not mine to do"},
        headers=streamed.as_role("billing"),
    )
    assert billing.status_code == 403


def test_assigning_a_meter_reprocesses_its_reads(
    streamed: Api, redis_client: redis.Redis, stream_key: str
) -> None:
    headers = streamed.as_role("operator")
    queue = streamed.client.get(
        "/v1/exceptions/unmatched", params={"meter_id": "X1"}, headers=headers
    ).json()
    assert [(u["ts"], u["stored"]) for u in queue] == [
        ("2026-03-01T00:15:00Z", False),
        ("2026-03-01T00:30:00Z", False),
    ]
    response = streamed.client.post(
        "/v1/exceptions/unmatched/assign",
        json={
            "meter_id": "X1",
            "service_point_id": "S9",
            "account_id": "A1",
            "valid_from": "2026-03-01T00:00:00Z",
            "reason": "new meter installed on 1 March, CIS not updated yet",
        },
        headers=headers,
    )
    assert response.status_code == 201, response.text
    result = response.json()
    assert (result["republished"], result["still_open"]) == (2, 0)
    assert result["assignment_id"] is not None
    published = entries(redis_client, stream_key)
    assert published == [
        {"meter_id": "X1", "ts": "2026-03-01T00:15:00+00:00", "value": "1.0", "unit": "gal"},
        {"meter_id": "X1", "ts": "2026-03-01T00:30:00+00:00", "value": "1.0", "unit": "gal"},
    ]
    with psycopg.connect(streamed.url) as conn:
        assert conn.execute(
            "SELECT version FROM data_versions WHERE name = 'assignments'"
        ).fetchone() == (1,)
        resolved = conn.execute(
            "SELECT resolved_by, resolution FROM unmatched_reads WHERE meter_id = 'X1'"
        ).fetchall()
    assert {r[0] for r in resolved} == {"olga.operator"}
    assert all(r[1].startswith("reprocessed onto the reads stream") for r in resolved)
    # the dataflow parses the republished reads like any delivery and now matches them
    with psycopg.connect(streamed.url) as conn:
        index = AssignmentIndex.load(conn)
    for number, fields in enumerate(published):
        reading = parse_delivery(Delivery(f"{stream_key}/{number}", number, fields))
        assert isinstance(reading, Reading)
        matched = index.match(reading)
        assert isinstance(matched, MatchedRead)
        assert (matched.assignment.account_id, matched.assignment.service_point_id) == ("A1", "S9")
    # once the dataflow has stored them, the queue shows it
    with psycopg.connect(streamed.url) as conn:
        conn.execute(
            """INSERT INTO reads (meter_id, ts, value, reported_unit, account_id, service_point_id)
               SELECT meter_id, ts, value, 'gal', 'A1', 'S9' FROM unmatched_reads
                WHERE meter_id = 'X1'"""
        )
    queue = streamed.client.get(
        "/v1/exceptions/unmatched", params={"meter_id": "X1", "resolved": "true"}, headers=headers
    ).json()
    assert [u["stored"] for u in queue] == [True, True]
    overlap = streamed.client.post(
        "/v1/exceptions/unmatched/assign",
        json={
            "meter_id": "X1",
            "service_point_id": "S8",
            "account_id": "A2",
            "valid_from": "2026-03-02T00:00:00Z",
            "reason": "moved?",
        },
        headers=headers,
    )
    assert overlap.status_code == 409


def test_reprocessing_keeps_the_reads_when_redis_is_down(api_without_redis: Api) -> None:
    api = api_without_redis
    response = api.client.post(
        "/v1/exceptions/unmatched/assign",
        json={
            "meter_id": "M7",
            "service_point_id": "S7",
            "account_id": "A3",
            "valid_from": "2026-02-01T00:00:00Z",
            "reason": "retired by mistake",
        },
        headers=api.as_role("admin"),
    )
    assert response.status_code == 201, response.text
    result = response.json()
    assert (result["republished"], result["still_open"]) == (0, 1)
    assert result["note"].startswith("Redis unreachable")
    with psycopg.connect(api.url) as conn:
        # the assignment stands; the read waits in the queue, unresolved
        assert conn.execute(
            "SELECT count(*) FROM meter_assignments WHERE meter_id = 'M7'"
        ).fetchone() == (1,)
        assert conn.execute(
            "SELECT resolved_at FROM unmatched_reads WHERE meter_id = 'M7'"
        ).fetchone() == (None,)
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY audit_id")]
    assert actions[-1] == "assign_meter"
    dismissed = api.client.post(
        "/v1/exceptions/unmatched/resolve",
        json={"meter_id": "M7", "reason": "bench test read, not a customer's"},
        headers=api.as_role("operator"),
    )
    assert dismissed.status_code == 200
    assert (
        api.client.post(
            "/v1/exceptions/unmatched/resolve",
            json={"meter_id": "M7", "reason": "again"},
            headers=api.as_role("operator"),
        ).status_code
        == 404
    )
    assert json.loads(json.dumps(dismissed.json()))["meter_id"] == "M7"
