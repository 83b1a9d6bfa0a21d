"""``/tasks``: the task list, a task's snapshots (paginated), safetensors uploads, tag removal."""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from weightstore.errors import InvalidInput
from weightstore.forms import snapshot_json, tasks_json
from weightstore.inputs import load_json_object
from weightstore.refs import check_name
from weightstore.server.deps import CanRead, CanWrite, Settings, Store
from weightstore.server.schemas import ManifestOut, SnapshotPage, TaskOut
from weightstore.server.uploads import body_file
from weightstore.types import SnapshotSummary

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get("", operation_id="listTasks", response_model=list[TaskOut], dependencies=[CanRead])
def list_tasks(store: Store) -> list[dict[str, Any]]:
    return tasks_json(store.task_summaries())


@router.get(
    "/{task:path}/snapshots",
    operation_id="listSnapshots",
    response_model=SnapshotPage,
    dependencies=[CanRead],
)
def list_snapshots(
    store: Store,
    task: str,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """A page of the task's snapshots, newest first, without their tensor lists. Follow
    ``next_cursor`` (a keyset page: each costs the same however deep) or ``next_offset``."""
    before = _parse_cursor(cursor) if cursor is not None else None
    total = store.count_snapshots(task)
    # One more than asked tells whether another page follows, without counting.
    rows = store.summaries(task, limit=limit + 1, offset=offset, before=before)
    page, more = rows[:limit], len(rows) > limit
    return {
        "items": [snapshot_json(s) for s in page],
        "total": total,
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if more and cursor is None else None,
        "next_cursor": _cursor(page[-1]) if more else None,
    }


def _cursor(snap: SnapshotSummary) -> str:
    text = f"{snap.created_at.isoformat()}|{snap.id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, sid = text.split("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not re.fullmatch(r"[0-9a-f]{64}", sid):
            raise ValueError("not a cursor")
    except ValueError as e:
        raise InvalidInput(
            f"invalid cursor {cursor[:80]!r}: pass the next_cursor of a previous page"
        ) from e
    return when, sid


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
    folder = settings.uploads_folder()
    async with body_file(request, settings.max_upload_bytes, folder, ".safetensors") as path:
        snap = await run_in_threadpool(
            lambda: store.import_file(
                task, path, step=step, tags=tag or (), metadata=meta, message=message, parent=parent
            )
        )
    return snapshot_json(snap, tensors=True)


def _metadata(text: str | None) -> dict[str, Any]:
    return {} if text is None else load_json_object(text, "metadata")


@router.delete(
    "/{task:path}/tags/{tag:path}",
    operation_id="deleteTag",
    status_code=204,
    dependencies=[CanWrite],
)
def delete_tag(store: Store, task: str, tag: str) -> Response:
    store.untag(task, tag)
    return Response(status_code=204)
