"""Response schemas of the API (`…Public`). Request schemas (`…Create`, `…Update`) join them as
routes that change things arrive.

They mirror the rows of `meterwatch.reports` and validate from them directly
(`from_attributes`); the dashboard parses the API's answers with these same classes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class HealthPublic(_Public):
    status: Literal["ok"] = "ok"


class ReadyPublic(_Public):
    status: Literal["ready", "degraded"]
    # per dependency ("database", "redis"): "ok", or what is wrong and where
    checks: dict[str, str]


class ReadCountsPublic(_Public):
    stored: int
    rejected: int
    unmatched: int
    unmatched_by_reason: dict[str, int]
    duplicates: int


class FlagCountsPublic(_Public):
    total: int
    by_kind: dict[str, int]
    by_status: dict[str, int]


class AlertCountsPublic(_Public):
    total: int
    by_status: dict[str, int]


class StatsPublic(_Public):
    """The `meterwatch stats --json` counts."""

    reads: ReadCountsPublic
    flags: FlagCountsPublic
    alerts: AlertCountsPublic


class FlagPublic(_Public):
    flag_id: int
    meter_id: str
    account_id: str
    kind: str
    started_at: datetime
    ended_at: datetime | None = Field(description="null while the flag is open")
    detected_at: datetime = Field(description="data time of the read that raised it")
    created_at: datetime
    severity: str
    score: float
    status: str
    evidence: str


class ReadTotalsPublic(_Public):
    stored: int
    rejected: int
    unmatched: int
    duplicates: int


class SourcePublic(_Public):
    source: str
    worker: str
    position: str | None
    deliveries: int
    latest_read_ts: datetime | None
    updated_at: datetime


class StreamBacklogPublic(_Public):
    stream: str
    length: int
    entries_added: int
    last_id: str | None
    committed_position: str | None
    backlog: int = Field(description="entries published but not yet committed (reads)")
    exact: bool = Field(description="false: too long to count cheaply, estimated")


class LiveMetricsPublic(_Public):
    as_of: datetime
    newest_read_ts: datetime | None = Field(description="newest read committed (data time)")
    lag_s: float | None = Field(description="as_of − newest_read_ts (seconds)")
    reads_per_s: float | None = Field(description="deliveries committed per second")
    window_s: float
    totals: ReadTotalsPublic
    sources: list[SourcePublic]
    backlog: list[StreamBacklogPublic] | None = Field(
        default=None, description="per Redis stream; null when Redis is not used or unreachable"
    )
    backlog_note: str | None = Field(default=None, description="why there is no backlog")


class UsagePointPublic(_Public):
    bucket: datetime
    customer_class: str
    unit: str
    usage: float = Field(description="consumption in the bucket, in `unit`")
    reads: int


class UsageByClassPublic(_Public):
    since: datetime | None
    until: datetime | None
    hours: float
    bucket: str
    points: list[UsagePointPublic]


class LivePublic(_Public):
    """Everything the dashboard's live page shows, in one answer."""

    metrics: LiveMetricsPublic
    usage: UsageByClassPublic
    latest_flags: list[FlagPublic]
