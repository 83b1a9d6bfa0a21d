"""Prometheus metrics of one app (its own registry, so two apps in a process do not mix):
requests by route and status, latency to the response's start, bytes served, and conditional
requests answered from the client's cache (304)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "weightstore_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "weightstore_http_request_seconds",
            "Time to the response's start",
            ["method", "route"],
            registry=self.registry,
        )
        self.bytes_served = Counter(
            "weightstore_bytes_served", "Body bytes served", ["route"], registry=self.registry
        )
        self.cache_hits = Counter(
            "weightstore_not_modified",
            "Conditional requests answered 304 (client cache hits)",
            registry=self.registry,
        )

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def bytes_sent(request: Request) -> Callable[[float], None]:
    """What to call with each body chunk's size, to count it as served by this route."""
    route = getattr(request.scope.get("route"), "path", "unmatched")
    metrics: Metrics = request.app.state.metrics
    return metrics.bytes_served.labels(route).inc


def install(app: FastAPI, metrics: Metrics) -> None:
    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        began = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.latency.labels(request.method, route).observe(time.perf_counter() - began)
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        if response.status_code == 304:
            metrics.cache_hits.inc()
        return response
