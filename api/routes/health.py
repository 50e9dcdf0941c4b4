"""Liveness and readiness probes for orchestrators and load balancers."""

from __future__ import annotations

import time

import psycopg
import redis
from fastapi import APIRouter, Response, status

from api.deps import ResourcesDep
from api.resources import READY_TIMEOUT_S, describe_redis, first_line
from api.schemas import HealthPublic, ReadyPublic
from stream.health import BEAT_S, read_heartbeats

# A working dataflow process refreshes its heartbeat every BEAT_S seconds; one silent for
# longer than this is stuck (seconds).
STALE_S = 5 * BEAT_S

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
    is wrong otherwise.

    With Redis, `checks.pipeline` also says how the running dataflow processes are, from their
    heartbeats (stream.health): "ok", or what they wait for ("waiting_for_database since …").
    A dataflow that waits makes the status "degraded" but not the answer 503: the API itself
    still serves, and a load balancer should keep sending it requests."""
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
    serving = all(check == "ok" for check in checks.values())
    if resources.redis is not None and checks.get("redis") == "ok":
        pipeline = _pipeline_check(resources.redis, resources.settings.reads_stream)
        if pipeline is not None:
            checks["pipeline"] = pipeline
    if not serving:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    ready = all(check == "ok" for check in checks.values())
    return ReadyPublic(status="ready" if ready else "degraded", checks=checks)


def _pipeline_check(client: redis.Redis, stream: str) -> str | None:
    """ "ok" when every dataflow process that reports is working, what they wait for
    otherwise; None when none reports (no dataflow runs on this stream, or not yet)."""
    try:
        beats = read_heartbeats(client, stream)
    except redis.RedisError as exc:
        return f"heartbeats unreadable: {first_line(exc)}"
    if not beats:
        return None
    now = time.time()
    problems = []
    for beat in beats:
        state = str(beat.get("state", "unknown"))
        if state == "ok" and now - float(beat.get("beat", 0)) <= STALE_S:
            continue
        if state == "ok":
            problems.append(f"{beat.get('process')}: silent for {now - float(beat['beat']):.0f}s")
            continue
        since = now - float(beat.get("since", now))
        problems.append(f"{beat.get('process')}: {state} for {since:.0f}s ({beat.get('detail')})")
    return "; ".join(problems) if problems else "ok"
