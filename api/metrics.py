"""Prometheus metrics of the API itself: requests answered and how long they took, by route
template (never by raw path, which would make one series per meter id). Served at /metrics.

Each app gets its own registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import fastapi.routing
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

router = APIRouter(tags=["operations"])


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "meterwatch_api_requests",
            "HTTP requests answered, by method, route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "meterwatch_api_request_duration_seconds",
            "Time to answer an HTTP request (seconds), by method and route template",
            ["method", "route"],
            registry=self.registry,
        )


def route_templates(app: FastAPI) -> dict[Any, str]:
    """Each endpoint function of `app` → its full path template ('/v1/flags/latest'), however
    the routers were nested. (FastAPI ≥ 0.16x includes routers lazily: `app.routes` holds the
    routers and `iter_route_contexts` walks them; older versions flatten `app.routes`.)"""
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Iterable[Any] = walk(app.routes) if walk else app.routes
    return {
        route.endpoint: route.path_format
        for route in routes
        if getattr(route, "endpoint", None) is not None
    }


def instrument(app: FastAPI) -> ApiMetrics:
    """Count and time every request of `app`; returns the metrics (also on app.state)."""
    metrics = ApiMetrics()
    app.state.metrics = metrics
    templates: dict[Any, str] = {}

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500  # if the handler raises, the server answers 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            if not templates:  # first request: every route is in place by now
                templates.update(route_templates(app))
            route = templates.get(request.scope.get("endpoint"), "(unmatched)")
            metrics.requests.labels(request.method, route, str(status)).inc()
            metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)

    return metrics


@router.get("/metrics", include_in_schema=False)
def read_metrics(request: Request) -> Response:
    """The Prometheus text exposition of this app's metrics."""
    metrics: ApiMetrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
