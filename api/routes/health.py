"""Liveness and readiness probes for orchestrators and load balancers."""

from __future__ import annotations

import psycopg
import redis
from fastapi import APIRouter, Response, status

from api.deps import ResourcesDep
from api.resources import READY_TIMEOUT_S, describe_redis, first_line
from api.schemas import HealthPublic, ReadyPublic

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic)
def read_health() -> HealthPublic:
    """The process is up and answering. Touches nothing else: restart only if this fails."""
    return HealthPublic()


@router.get(
    "/ready",
    response_model=ReadyPublic,
    responses={503: {"model": ReadyPublic, "description": "a dependency is unreachable"}},
)
def read_ready(resources: ResourcesDep, response: Response) -> ReadyPublic:
    """Ready to serve: the database answers (and Redis, when REDIS_URL is set). 503 with what
    is wrong otherwise."""
    checks: dict[str, str] = {}
    try:
        resources.ensure_migrated()
        with resources.pool.connection(timeout=READY_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
        checks["database"] = "ok"
    except psycopg.OperationalError as exc:
        checks["database"] = f"unreachable at {resources.database}: {first_line(exc)}"
    if resources.redis is not None:
        try:
            resources.redis.ping()
            checks["redis"] = "ok"
        except redis.RedisError as exc:
            where = describe_redis(resources.settings.redis_url or "")
            checks["redis"] = f"unreachable at {where}: {first_line(exc)}"
    ready = all(check == "ok" for check in checks.values())
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return ReadyPublic(status="ready" if ready else "degraded", checks=checks)
