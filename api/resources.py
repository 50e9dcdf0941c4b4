"""What the API opens once and shares between requests: the database pool, the Redis client,
the throughput sampler. `Resources.start()` runs in the app's lifespan.

Start-up waits for the database with a bounded retry and applies the migrations. If the
database is still unreachable after that, the API serves anyway — /health answers, /ready and
the data routes answer 503 — and applies the migrations as soon as the database answers, so an
orchestrator sees a live but unready service rather than a crash loop.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit

import psycopg
import redis
from psycopg_pool import ConnectionPool

from api.usage import ensure_rollup
from meterwatch.db import migrate
from meterwatch.reports import Throughput
from meterwatch.settings import Settings

log = logging.getLogger(__name__)

# Seconds /ready waits for a pooled connection: a probe must answer quickly.
READY_TIMEOUT_S = 2.0


def describe_database(url: str) -> str:
    """host:port/dbname of a database URL or conninfo string, without any password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparseable DATABASE_URL)"
    host = info.get("host") or "localhost"
    port = info.get("port") or 5432
    return f"{host}:{port}/{info.get('dbname') or ''}"


def describe_redis(url: str) -> str:
    """host:port/db of a Redis URL, without any password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Resources:
    """The API's process-wide resources, built from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database_url = settings.require_database_url()
        self.database = describe_database(self.database_url)
        self.throughput = Throughput(window_s=60.0)
        self.pool = ConnectionPool(
            self.database_url,
            min_size=1,
            max_size=settings.api_pool_size,
            timeout=settings.api_db_timeout_s,
            # a connection the database dropped (restart, failover) is replaced, not handed out
            check=ConnectionPool.check_connection,
            open=False,
            name="meterwatch-api",
        )
        self.redis: redis.Redis | None = None
        self._migrated = False
        self._migrate_lock = threading.Lock()

    def start(self) -> None:
        """Wait for the database (bounded), apply migrations, open the pool and Redis client."""
        try:
            migrate(self.database_url, retries=self.settings.api_db_startup_retries)
            self._prepare_rollup()
            self._migrated = True
        except psycopg.OperationalError as exc:
            log.error(
                "database unreachable at %s after %d attempts (%s): serving anyway; /ready "
                "answers 503 until it is back. Check DATABASE_URL and that the server runs.",
                self.database,
                self.settings.api_db_startup_retries + 1,
                first_line(exc),
            )
        self.pool.open(wait=False)
        if self.settings.redis_url:
            self.redis = redis.Redis.from_url(
                self.settings.redis_url,
                decode_responses=True,
                socket_timeout=2.0,
                socket_connect_timeout=2.0,
            )

    def _prepare_rollup(self) -> None:
        """Keep the daily usage rollup in the utility's time zone (api.usage.ensure_rollup)."""
        with psycopg.connect(self.database_url) as conn:
            if ensure_rollup(conn, self.settings.utility_tz):
                log.info("daily usage rollup rebuilt for %s", self.settings.utility_tz)

    def close(self) -> None:
        self.pool.close()
        if self.redis is not None:
            self.redis.close()

    def ensure_migrated(self) -> None:
        """Apply the migrations if start-up could not; raises OperationalError while the
        database is still unreachable."""
        if self._migrated:
            return
        with self._migrate_lock:
            if not self._migrated:
                migrate(self.database_url)
                self._prepare_rollup()
                self._migrated = True
                log.info("database at %s is reachable again; migrations applied", self.database)
