"""Fixtures shared by the whole suite: real PostgreSQL/TimescaleDB, the embedded PostgreSQL
(no TimescaleDB, as in the demo) and real Redis.

Each test that asks for a database gets a fresh one, cloned from a migrated template, so tests
never see each other's rows. The servers are the machine's own (`.ci/run` starts them); point
the suite elsewhere with MW_TEST_PG_URL / MW_TEST_REDIS_URL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from hypothesis import settings as hypothesis_settings
from pipeline_fixtures import Scenario, make_scenario
from pydantic_settings import BaseSettings, SettingsConfigDict

from meterwatch.db import embedded_database, migrate
from meterwatch.settings import Settings, get_settings


class TestServers(BaseSettings):
    """Where the test suite finds its servers (environment: MW_TEST_PG_URL, ...)."""

    __test__ = False  # not a test class
    model_config = SettingsConfigDict(env_prefix="MW_TEST_")

    # An admin connection to the PostgreSQL server with TimescaleDB preloaded.
    pg_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/15"


SERVERS = TestServers()

# Timing belongs in benchmarks, not in tests: no per-example deadline (the first example pays
# for imports and connections on a busy CI machine).
hypothesis_settings.register_profile("meterwatch", deadline=None)
hypothesis_settings.load_profile("meterwatch")


def _with_database(url: str, name: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=name)


class DatabaseFactory:
    """Creates migrated databases on one server by cloning a template; drops them afterwards."""

    def __init__(self, admin_url: str, prefix: str) -> None:
        self.admin_url = admin_url
        self.prefix = prefix
        self.template = f"{prefix}_template"
        self.created: list[str] = []
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.template}"')
            conn.execute(f'CREATE DATABASE "{self.template}"')
        migrate(_with_database(admin_url, self.template))
        # CREATE DATABASE … TEMPLATE needs a template nobody is connected to, and TimescaleDB's
        # background scheduler connects to every database that has the extension.
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{self.template}" WITH ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (self.template,),
            )

    def __call__(self) -> str:
        name = f"{self.prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return _with_database(self.admin_url, name)

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in [*self.created, self.template]:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def timescale_databases() -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(SERVERS.pg_url, f"mwt{uuid.uuid4().hex[:6]}")
    with psycopg.connect(factory.admin_url) as conn:
        row = conn.execute("SHOW shared_preload_libraries").fetchone()
    if not row or "timescaledb" not in row[0]:
        pytest.fail(
            "the test PostgreSQL does not preload TimescaleDB: run "
            "`sudo bash scripts/install-timescaledb.sh` (CI does it in .ci/run)"
        )
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session")
def embedded_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    with embedded_database(tmp_path_factory.mktemp("embedded")) as url:
        admin = _with_database(url, "postgres")
        factory = DatabaseFactory(admin, f"mwe{uuid.uuid4().hex[:6]}")
        yield factory
        factory.drop_all()


@pytest.fixture
def database_url(timescale_databases: DatabaseFactory) -> str:
    """A fresh, migrated database on PostgreSQL with TimescaleDB."""
    return timescale_databases()


@pytest.fixture
def plain_database_url(embedded_databases: DatabaseFactory) -> str:
    """A fresh, migrated database on the embedded PostgreSQL, which has no TimescaleDB."""
    return embedded_databases()


@pytest.fixture(params=["timescale", "plain"])
def any_database_url(request: pytest.FixtureRequest) -> str:
    """Runs the test twice: on TimescaleDB and on plain PostgreSQL."""
    return request.getfixturevalue(
        "database_url" if request.param == "timescale" else "plain_database_url"
    )


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(SERVERS.redis_url, decode_responses=True)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def stream_key(redis_client: redis.Redis) -> Iterator[str]:
    """A Redis Stream key no other test uses; deleted afterwards."""
    key = f"mwtest:{uuid.uuid4().hex[:10]}:reads"
    yield key
    for found in redis_client.scan_iter(f"{key}*"):
        redis_client.delete(found)


@pytest.fixture
def make_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Builds Settings the way a deployment would, from environment variables, and makes them
    the process-wide settings for the test."""

    def build(**values: object) -> Settings:
        monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
        for name, value in values.items():
            monkeypatch.setenv(name.upper(), str(value))
        get_settings.cache_clear()
        return get_settings()

    yield build  # type: ignore[misc]
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def small_scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """60 service points over 14 days of hourly reads, every delivery defect included."""
    return make_scenario(tmp_path_factory.mktemp("scenario"), meters=60, days=14, seed=11)
