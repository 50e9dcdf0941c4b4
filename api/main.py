"""Builds the FastAPI app (`create_app`) and runs it (`serve`).

/health, /ready       probes (root, unversioned)
/v1/auth              sign in (OAuth2 password flow), who am I
/v1/me                customers: their accounts, usage, Green Button, alerts, leaks, flags
/v1/accounts          staff: the single account view, bill previews, contacts
/v1/flags             staff: flag review (and the newest flags)
/v1/alerts            staff: the newest alerts of every account
/v1/billing-cycles    staff: cycles, readiness, closing
/v1/rate-plans        staff: the imported rate plans
/v1/exceptions        staff: rejected and unmatched reads, meter assignment, reprocessing
/v1/reads             head-ends and staff: ingest onto the reads stream
/v1/stats             counts (the `stats --json` numbers)
/v1/live              everything the dashboard's live page shows
/metrics              Prometheus
/docs                 OpenAPI

Every /v1 route needs a bearer token and declares the roles it lets through (api/deps.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import uvicorn
from anyio import to_thread
from fastapi import APIRouter, FastAPI, Request, status
from fastapi.responses import JSONResponse

from api import metrics
from api.resources import Resources, first_line
from api.routes import (
    accounts,
    alerts,
    auth,
    cycles,
    exceptions,
    flags,
    health,
    live,
    me,
    rates,
    reads,
    stats,
)
from api.security import secret_key
from meterwatch.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Every route declares its own role check (api/deps.py), where the tests find it.
v1 = APIRouter(prefix="/v1")
v1.include_router(auth.router)
v1.include_router(me.router)
v1.include_router(accounts.router)
v1.include_router(flags.router)
v1.include_router(alerts.router)
v1.include_router(cycles.router)
v1.include_router(rates.router)
v1.include_router(exceptions.router)
v1.include_router(reads.router)
v1.include_router(stats.router)
v1.include_router(live.router)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for `settings` (default: the process settings). Raises MissingSetting when
    DATABASE_URL is not set. Nothing connects until the app starts (its lifespan)."""
    settings = settings or get_settings()
    resources = Resources(settings)
    secret_key(settings)  # production without SECRET_KEY stops here, with the fix

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # blocking start-up work (connecting with retries, migrating) off the event loop
        await to_thread.run_sync(resources.start)
        try:
            yield
        finally:
            await to_thread.run_sync(resources.close)

    app = FastAPI(
        title="meterwatch API",
        summary="Smart-meter reads, flags and alerts for utility staff, customers and the "
        "live dashboard.",
        version="1",
        lifespan=lifespan,
    )
    app.state.resources = resources
    app.include_router(health.router)
    app.include_router(v1)
    app.include_router(metrics.router)
    metrics.instrument(app)

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # also psycopg_pool.PoolTimeout: no connection could be had in time
        log.warning("database unavailable for %s: %s", request.url.path, first_line(exc))
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"detail": f"database unavailable at {resources.database}: {first_line(exc)}"},
        )

    @app.exception_handler(psycopg.DataError)
    async def invalid_value(request: Request, exc: Exception) -> JSONResponse:
        # a value PostgreSQL cannot take (a NUL character, a number out of range): the
        # request's fault, said plainly rather than as a server error
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"detail": f"a value in the request cannot be stored: {first_line(exc)}"},
        )

    return app


def serve(settings: Settings | None = None) -> None:
    """Run the API with uvicorn on settings.api_host:settings.api_port until interrupted."""
    settings = settings or get_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port)
