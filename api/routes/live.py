"""The dashboard's live page in one call: throughput, lag, backlog, totals, usage by customer
class and the newest flags."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import APIRouter, Query

from api.deps import ConnDep, ResourcesDep, StaffAccess
from api.resources import Resources, describe_redis, first_line
from api.schemas import (
    FlagPublic,
    LiveMetricsPublic,
    LivePublic,
    StreamBacklogPublic,
    UsageByClassPublic,
)
from meterwatch import reports

router = APIRouter(prefix="/live", tags=["live"])


def _backlog(
    resources: Resources, sources: list[reports.SourceStatus]
) -> tuple[list[StreamBacklogPublic] | None, str | None]:
    """The Redis stream backlog, or None and why not: a dashboard must not fail because Redis
    is down."""
    if resources.redis is None:
        return None, "no Redis configured (REDIS_URL is not set)"
    positions = {source.source: source for source in sources}
    try:
        found = reports.stream_backlog(resources.redis, resources.settings.stream_keys, positions)
    except redis.RedisError as exc:
        where = describe_redis(resources.settings.redis_url or "")
        return None, f"Redis unreachable at {where}: {first_line(exc)}"
    return [StreamBacklogPublic.model_validate(b) for b in found], None


@router.get("", response_model=LivePublic, dependencies=[StaffAccess])
def read_live(
    conn: ConnDep,
    resources: ResourcesDep,
    hours: Annotated[float, Query(gt=0, le=168, description="usage window (hours)")] = 24,
    flags: Annotated[int, Query(ge=1, le=100, description="newest flags to include")] = 20,
) -> LivePublic:
    """Everything the live page shows. Usage covers the `hours` before the newest read (data
    time, so that a replay of history shows its own last day), in hourly buckets aligned in
    the utility's time zone."""
    metrics = reports.live_metrics(conn, throughput=resources.throughput)
    backlog, note = _backlog(resources, metrics.sources)
    usage = reports.usage_by_class(conn, hours=hours, tz=resources.settings.utility_tz)
    return LivePublic(
        metrics=LiveMetricsPublic.model_validate(
            {**vars(metrics), "backlog": backlog, "backlog_note": note}
        ),
        usage=UsageByClassPublic.model_validate(usage),
        latest_flags=[FlagPublic.model_validate(f) for f in reports.latest_flags(conn, flags)],
    )
