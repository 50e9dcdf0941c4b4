"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis): generated
requests, valid and invalid, to every operation, signed in as an admin and as a customer. A bad
request must get a 4xx with a message, never a server error.

The API runs for real (uvicorn on a free local port) on a seeded TimescaleDB with a Redis
stream. Examples per operation are bounded (FUZZ_EXAMPLES) so that the run stays within a couple
of minutes in CI.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
import redis
import schemathesis
import uvicorn
from api_fixtures import ROLE_USER, seed_access
from conftest import SERVERS, DatabaseFactory
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error

from api.main import create_app
from api.security import create_access_token
from meterwatch.settings import Settings

FUZZ_EXAMPLES = 12


@dataclass(frozen=True)
class Server:
    url: str
    settings: Settings
    user_ids: dict[str, int]

    def headers(self, role: str) -> dict[str, str]:
        token = create_access_token(self.settings, f"user:{self.user_ids[ROLE_USER[role]]}", role)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def fuzz_server(
    timescale_databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    database = timescale_databases()
    directory = tmp_path_factory.mktemp("fuzz")
    with psycopg.connect(database) as conn:
        ids = seed_access(conn, directory)
    key = f"mwtest:{uuid.uuid4().hex[:10]}:reads"
    app_settings = Settings(
        database_url=database,
        redis_url=SERVERS.redis_url,
        reads_stream=key,
        data_dir=directory / "data",
        utility_tz="America/Chicago",
    )
    sock = socket.socket()
    # accepted connections inherit it: without, every keep-alive answer waits 40 ms for a
    # delayed ACK (uvicorn sets it only on sockets it opens itself)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(app_settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", app_settings, ids)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        cleanup = redis.Redis.from_url(SERVERS.redis_url)
        cleanup.delete(key)
        cleanup.close()


# The schema is the app's own, read at collection from an app that connects nowhere; the
# requests go to the running server (base_url).
schema = schemathesis.openapi.from_dict(
    create_app(
        Settings(
            database_url="postgresql://nobody@127.0.0.1:1/none",
            secret_key=SecretStr("collection-only-" * 3),
        )
    ).openapi()
)
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@schema.parametrize()
@FUZZ
def test_no_server_error_as_admin(case: schemathesis.Case, fuzz_server: Server) -> None:
    case.call_and_validate(
        base_url=fuzz_server.url,
        headers=fuzz_server.headers("admin"),
        checks=[not_a_server_error],
        timeout=30,
    )


@schema.parametrize()
@FUZZ
def test_no_server_error_as_customer(case: schemathesis.Case, fuzz_server: Server) -> None:
    case.call_and_validate(
        base_url=fuzz_server.url,
        headers=fuzz_server.headers("customer"),
        checks=[not_a_server_error],
        timeout=30,
    )
