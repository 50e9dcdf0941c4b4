"""Every setting meterwatch has, read from the environment (or a `.env` file) in one place.

No other module reads `os.environ`. Each field's comment gives its unit; the README's settings
table is written from these.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """The user's data folder for meterwatch (the embedded database, dataflow recovery)."""
    return Path(platformdirs.user_data_dir("meterwatch", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # --- where things are -------------------------------------------------------------------
    # PostgreSQL/TimescaleDB. Unset: `meterwatch demo` starts an embedded PostgreSQL; the other
    # commands refuse to guess and say so.
    database_url: str | None = None
    # Redis. Unset: the demo feeds the dataflow from the simulator in process.
    redis_url: str | None = None
    # Local state: embedded database files, dataflow recovery snapshots.
    data_dir: Path = Field(default_factory=default_data_dir)

    # --- the reads stream ---------------------------------------------------------------------
    # Redis Stream key of incoming reads; with `reads_stream_shards` > 1 the shards are
    # `<key>:0` … `<key>:N-1` and a meter always lands on the same shard.
    reads_stream: str = "meterwatch:reads"
    reads_stream_shards: int = Field(default=1, ge=1, le=1024)
    # How long stream entries are kept after they were added (hours). Entries older than this
    # are trimmed; the dataflow's recovery snapshots must be newer than this.
    stream_retention_hours: float = Field(default=48.0, gt=0)
    # Largest batch the dataflow takes from a source at once (reads).
    source_batch_size: int = Field(default=2000, ge=1, le=100_000)

    # --- the dataflow -------------------------------------------------------------------------
    # Bytewax epoch length and snapshot interval (seconds). A crash replays at most this much.
    snapshot_interval_s: float = Field(default=10.0, gt=0)
    # How far back the per-meter state remembers which intervals it has stored, to recognise a
    # duplicate without asking the database (days). Older duplicates are caught by the database.
    dedup_window_days: int = Field(default=35, ge=1, le=400)
    # How often the dataflow rereads meter assignments after an import (seconds).
    assignments_refresh_s: float = Field(default=30.0, gt=0)

    # --- plausibility of reads ------------------------------------------------------------------
    # A read further in the future than this is rejected (hours past the wall clock).
    max_future_hours: float = Field(default=48.0, ge=0)
    # A read older than this is rejected (ISO date).
    min_read_date: str = "2000-01-01"
    # An interval consumption beyond this absolute value is rejected as absurd (gallons, or kWh
    # for electric meters). No service meter moves this much in one interval.
    max_abs_interval_value: float = Field(default=1_000_000.0, gt=0)

    # --- the utility ----------------------------------------------------------------------------
    # Days and billing periods are counted in this time zone (IANA name).
    utility_tz: str = "UTC"
    # Currency shown on bills and alerts (ISO 4217 code).
    currency: str = "USD"

    # --- servers ------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8050, ge=1, le=65535)
    # Where the dashboard finds the API (URL). Unset: http://<api_host>:<api_port>.
    api_url: str | None = None
    # The dashboard's live page refresh (milliseconds).
    dashboard_refresh_ms: int = Field(default=2000, ge=250)
    # How long the dashboard waits for an answer from the API (seconds).
    dashboard_api_timeout_s: float = Field(default=5.0, gt=0)
    # Attempts the API makes to reach the database at start-up (attempts; the wait doubles from
    # 0.5 s up to 10 s, so 10 attempts is about a minute). After that it serves anyway, answering
    # 503 on /ready until the database comes back.
    api_db_startup_retries: int = Field(default=10, ge=0, le=100)
    # Database connections the API keeps open at most (connections).
    api_pool_size: int = Field(default=10, ge=1, le=500)
    # How long a request waits for a free database connection before it gets 503 (seconds).
    api_db_timeout_s: float = Field(default=5.0, gt=0)

    # --- the demo -------------------------------------------------------------------------------
    # Meters the demo simulates, and how many simulated seconds pass per wall second until the
    # simulated clock catches up with now.
    demo_meters: int = Field(default=300, ge=1)
    demo_speedup: float = Field(default=7200.0, gt=0)
    # Days of history the demo starts with (days before now).
    demo_history_days: float = Field(default=3.0, gt=0)

    @field_validator("utility_tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as 'America/Chicago'"
            ) from exc
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.utility_tz)

    @property
    def stream_keys(self) -> list[str]:
        """The Redis Stream keys reads are published to and consumed from."""
        if self.reads_stream_shards == 1:
            return [self.reads_stream]
        return [f"{self.reads_stream}:{i}" for i in range(self.reads_stream_shards)]

    @property
    def effective_api_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    def require_database_url(self) -> str:
        if not self.database_url:
            raise MissingSetting(
                "DATABASE_URL is not set: point it at PostgreSQL/TimescaleDB, for example "
                "postgresql://postgres@127.0.0.1:5432/meterwatch (or run `meterwatch demo`, "
                "which starts an embedded database)"
            )
        return self.database_url

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise MissingSetting(
                "REDIS_URL is not set: point it at Redis, for example redis://127.0.0.1:6379/0"
            )
        return self.redis_url


class MissingSetting(RuntimeError):
    """A command needs a setting that is not configured."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings. Tests that change the environment call `cache_clear()`."""
    return Settings()
