"""Liveness, readiness, Prometheus metrics and the storage report."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from weightstore.forms import stats_json
from weightstore.server.deps import CanRead, Store
from weightstore.server.schemas import Health, StatsOut

router = APIRouter(tags=["service"])


@router.get("/healthz", operation_id="healthz", response_model=Health)
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", operation_id="readyz", response_model=Health)
def readyz(store: Store) -> dict[str, str]:
    """The index and the object backend answer."""
    store.check_ready()
    return {"status": "ready"}


@router.get("/metrics", operation_id="metrics", responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    rendered: Response = request.app.state.metrics.render()
    return rendered


@router.get("/stats", operation_id="stats", response_model=StatsOut, dependencies=[CanRead])
def stats(store: Store) -> dict[str, Any]:
    """The storage report: logical vs stored bytes per task and in total."""
    return stats_json(store.stats())
