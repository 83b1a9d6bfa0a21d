"""``/tasks``: the task list, a task's snapshots (paginated), safetensors uploads, tag removal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from weightstore.errors import InvalidInput
from weightstore.forms import snapshot_json, tasks_json
from weightstore.refs import check_name
from weightstore.server.deps import CanRead, CanWrite, Settings, Store
from weightstore.server.schemas import ManifestOut, SnapshotPage, TaskOut
from weightstore.server.uploads import body_file

router = APIRouter(prefix="/tasks", tags=["tasks"])
UPLOADS = ".uploads"


@router.get("", operation_id="listTasks", response_model=list[TaskOut], dependencies=[CanRead])
def list_tasks(store: Store) -> list[dict[str, Any]]:
    return tasks_json(store.index.task_summaries())


@router.get(
    "/{task:path}/snapshots",
    operation_id="listSnapshots",
    response_model=SnapshotPage,
    dependencies=[CanRead],
)
def list_snapshots(
    store: Store,
    task: str,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    snaps = store.index.list_summaries(check_name(task))  # no tensor rows read
    page = snaps[offset : offset + limit]
    more = offset + limit < len(snaps)
    return {
        "items": [snapshot_json(s) for s in page],
        "total": len(snaps),
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if more else None,
    }


@router.put(
    "/{task:path}/snapshots",
    operation_id="uploadSafetensors",
    response_model=ManifestOut,
    status_code=201,
    dependencies=[CanWrite],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_safetensors(
    request: Request,
    store: Store,
    settings: Settings,
    task: str,
    step: Annotated[int | None, Query(ge=0)] = None,
    tag: Annotated[list[str] | None, Query()] = None,
    message: str = "",
    metadata: str | None = None,
    parent: str | None = None,
) -> dict[str, Any]:
    """Save a plain safetensors body as a new snapshot of ``task``; nothing is written unless
    the whole file arrives within the size limit and reads as safetensors."""
    check_name(task)
    meta = _metadata(metadata)
    folder = Path(settings.store) / UPLOADS
    async with body_file(request, settings.max_upload_bytes, folder, ".safetensors") as path:
        snap = await run_in_threadpool(
            lambda: store.import_file(
                task, path, step=step, tags=tag or (), metadata=meta, message=message, parent=parent
            )
        )
    return snapshot_json(snap, tensors=True)


def _metadata(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidInput(f"metadata must be a JSON object: {e}") from e
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be a JSON object")
    return value


@router.delete(
    "/{task:path}/tags/{tag:path}",
    operation_id="deleteTag",
    status_code=204,
    dependencies=[CanWrite],
)
def delete_tag(store: Store, task: str, tag: str) -> Response:
    store.untag(task, tag)
    return Response(status_code=204)
