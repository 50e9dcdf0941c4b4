"""Every setting meterwatch has, read from the environment (or a `.env` file) in one place.

No other module reads `os.environ`. Each field's comment gives its unit; the README's settings
table is written from these.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import Field, SecretStr, field_validator
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

    # --- customer alerts (alerts/) --------------------------------------------------------------
    # Who the messages come from (a name customers recognise) and the customer's usage page
    # every message links to (URL; keep it short: it goes into a 160-character SMS).
    utility_name: str = "Your utility"
    portal_url: str = "http://127.0.0.1:8000/v1/me/usage"
    # How often the dataflow picks up changed alert thresholds (seconds).
    alert_refresh_s: float = Field(default=2.0, gt=0)
    # Until an account's rate plan is priced by the billing package, projected bills and the
    # cost in messages use this price (currency per gal; per kWh) and fixed charge (currency
    # per billing period).
    alert_price_per_gal: float = Field(default=0.01, ge=0)
    alert_price_per_kwh: float = Field(default=0.15, ge=0)
    alert_fixed_charge: float = Field(default=0.0, ge=0)
    # A projected bill is not judged before this much of the billing period has passed (days):
    # one heavy first day would otherwise project an absurd bill.
    alert_projection_min_days: float = Field(default=3.0, ge=0)

    # --- email (SMTP) -----------------------------------------------------------------------------
    # The SMTP server alerts are sent through. Unset: email alerts fail with that reason and are
    # retried, so nothing is lost while it is being set up.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    # `starttls` (port 587), `tls` (implicit TLS, port 465) or `none` (a local relay only).
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # The From address of alert emails.
    smtp_from: str = "alerts@example.com"
    # A CA bundle to verify the SMTP server's certificate with (file); unset: the system's CAs.
    smtp_ca_file: Path | None = None
    # How long one SMTP conversation may take (seconds).
    smtp_timeout_s: float = Field(default=15.0, gt=0)

    # --- SMS (Twilio) -----------------------------------------------------------------------------
    # Twilio credentials and sender: an E.164 number (+15551234567) or a Messaging Service SID
    # (MG…). Unset: SMS alerts fail with that reason and are retried.
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    # Twilio's API address (URL); unset: Twilio's own. Set for a proxy or a test server.
    twilio_api_url: str | None = None
    # How long one Twilio request may take (seconds).
    twilio_timeout_s: float = Field(default=15.0, gt=0)

    # --- the notifier (`meterwatch notify`) -------------------------------------------------------
    # Without a NOTIFY from the database it looks for due alerts this often anyway (seconds).
    notify_poll_s: float = Field(default=5.0, gt=0)
    # Attempts before an alert is `failed` (attempts); the wait between them doubles from
    # NOTIFY_RETRY_S up to NOTIFY_MAX_RETRY_S (seconds).
    notify_max_attempts: int = Field(default=8, ge=1)
    notify_retry_s: float = Field(default=30.0, gt=0)
    notify_max_retry_s: float = Field(default=3600.0, gt=0)
    # How long a notifier holds an alert it is sending (seconds). A notifier that dies while
    # sending leaves the alert `sending`; another sends it again once this has passed. Keep it
    # well above SMTP_TIMEOUT_S + TWILIO_TIMEOUT_S.
    notify_lease_s: float = Field(default=120.0, gt=0)

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

    # --- access to the API ----------------------------------------------------------------------
    # `production` refuses to start the API without SECRET_KEY; `development` (the demo, tests)
    # generates one and keeps it in DATA_DIR/secret_key, shared by the API and the dashboard.
    environment: Literal["development", "production"] = "development"
    # Signs the API's access tokens (JWT, HS256). At least 32 characters; keep it secret, and the
    # same in every API process. Changing it signs everyone out.
    secret_key: SecretStr | None = None
    # How long an access token from POST /v1/auth/token is valid (minutes).
    access_token_expire_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    # The dashboard's credential for the API: an API token of an `operator` user (`meterwatch
    # users token`). Unset: the dashboard signs its own short-lived operator token with
    # SECRET_KEY (it shares the API's settings).
    dashboard_api_token: SecretStr | None = None
    # Largest request body POST /v1/reads accepts (bytes) and most reads in one request (reads).
    api_max_ingest_bytes: int = Field(default=10_000_000, ge=1000)
    api_max_ingest_reads: int = Field(default=50_000, ge=1)

    # --- the demo -------------------------------------------------------------------------------
    # Meters the demo simulates, and how many simulated seconds pass per wall second until the
    # simulated clock catches up with now.
    demo_meters: int = Field(default=300, ge=1)
    demo_speedup: float = Field(default=7200.0, gt=0)
    # Days of history the demo starts with (days before now).
    demo_history_days: float = Field(default=7.0, ge=3)

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

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError(
                "SECRET_KEY is shorter than 32 characters: generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
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
