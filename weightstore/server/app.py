"""The app factory: ``create_app(settings)`` builds the FastAPI app; the store is opened when
the app starts (in each worker process) and closed when it stops. Nothing happens at import."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI

from weightstore.errors import InvalidInput
from weightstore.server import metrics, problems
from weightstore.server.protocol import configure
from weightstore.server.routes import files, health, hub, objects, snapshots, tasks
from weightstore.server.settings import SETTINGS_ENV, ServerSettings
from weightstore.settings import StoreSettings
from weightstore.store import WeightStore

API_PREFIX = "/v1"


def create_app(settings: ServerSettings) -> FastAPI:
    """The weightstore REST service over the store ``settings.store``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = WeightStore.open(
            settings.store,
            index_url=settings.index_url,
            settings=StoreSettings(threads=settings.threads),
            create=False,
        )
        app.state.store = store
        _drop_stale_uploads(settings.uploads_folder())
        try:
            yield
        finally:
            store.close()

    app = FastAPI(
        title="weightstore",
        summary="Versioned, content-addressed, delta-compressed weight snapshots over HTTP.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics.Metrics()
    problems.install(app)
    metrics.install(app, app.state.metrics)
    api = APIRouter(prefix=API_PREFIX)
    # files first: its /snapshots/{ref}/safetensors must win over /snapshots/{ref}.
    for router in (files.router, snapshots.router, tasks.router, objects.router, health.router):
        api.include_router(router)
    app.include_router(api)
    # /healthz etc. also at the root, where probes look (once in the schema: under /v1).
    app.include_router(health.router, include_in_schema=False)
    # Last: its /{repo}/resolve/... catch-all must not shadow any other route.
    app.include_router(hub.router)
    return app


def _drop_stale_uploads(folder: Path, older_than: float = 3600) -> None:
    """Remove upload files a killed server left behind (not those of a running worker)."""
    cutoff = time.time() - older_than
    for path in folder.glob(".upload-*"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()


def app_from_environment() -> FastAPI:
    """The app of a ``uvicorn --factory`` worker: settings from ``$WEIGHTSTORE_SERVER_SETTINGS``."""
    text = os.environ.get(SETTINGS_ENV)
    if text is None:
        raise InvalidInput(f"{SETTINGS_ENV} is not set: start the service with `weightstore serve`")
    settings = ServerSettings.from_json(text)
    configure(settings.header_timeout, settings.max_connections)  # this worker's protocol
    return create_app(settings)
