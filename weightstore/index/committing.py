"""Index writes of a snapshot: its checks, the task it creates, its rows, tensors and tags."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Select, literal, select
from sqlalchemy.exc import IntegrityError

from weightstore.errors import Conflict, InvalidInput, RefNotFound, StorageError
from weightstore.index.models import SnapshotRow, TagRow, TaskRow, TensorRow, UTCDateTime
from weightstore.index.resolving import BIGINT_MAX, BIGINT_MIN
from weightstore.index.rows import insert_for, pin
from weightstore.refs import check_name
from weightstore.types import TensorEntry


def check_commit(
    snapshot_id: str,
    task: str,
    step: int | None,
    tensors: Sequence[TensorEntry],
    tags: Sequence[str],
) -> None:
    """:class:`InvalidInput` for what the index cannot hold: bad names, ids, steps, repeats."""
    if not 0 < len(snapshot_id) <= 64:
        raise InvalidInput(f"snapshot id {snapshot_id!r} must be 1 to 64 characters")
    check_name(task, "task")
    for tag in tags:
        check_name(tag, "tag")
    if step is not None and not BIGINT_MIN <= step <= BIGINT_MAX:
        raise InvalidInput(f"step {step} is out of range: it must fit in a signed 64-bit int")
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise InvalidInput(f"tensor name {t.name!r} appears twice in one snapshot")
        seen.add(t.name)


def insert_snapshot(
    conn: Connection,
    *,
    snapshot_id: str,
    task: str,
    step: int | None,
    parent_id: str | None,
    created_at: datetime,
    message: str,
    metadata: dict[str, Any],
    logical_bytes: int,
    tensors: Sequence[TensorEntry],
    tags: Sequence[str],
    origin_parent: str | None = None,
) -> None:
    """Write the snapshot's rows in the caller's transaction (see :meth:`Index.commit_snapshot`)."""
    task_id = ensure_task(conn, task, created_at)
    if step is not None:
        raise_if_step_taken(conn, task_id, task, step)
    if parent_id is not None and conn.scalar(snapshot_exists(parent_id)) is None:
        raise RefNotFound(f"parent snapshot {parent_id[:12]} is not in the index")
    digests = {t.digest for t in tensors}
    # Pin at the commit's own time, not the save's start: a gc whose cutoff lies
    # between the two must see these objects as just used.
    missing = digests - pin(conn, digests, datetime.now(timezone.utc))
    if missing:
        shown = ", ".join(sorted(missing)[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise StorageError(f"object {shown}{more} was garbage-collected during the save; retry")
    conn.execute(
        insert_for(conn, SnapshotRow).values(
            id=snapshot_id,
            task_id=task_id,
            step=step,
            parent_id=parent_id,
            origin_parent_id=origin_parent if origin_parent is not None else (parent_id or ""),
            created_at=created_at,
            message=message,
            metadata=metadata,
            logical_bytes=logical_bytes,
        )
    )
    if tensors:
        conn.execute(
            insert_for(conn, TensorRow),
            [
                {
                    "snapshot_id": snapshot_id,
                    "position": position,
                    "name": t.name,
                    "dtype": t.dtype,
                    "shape": list(t.shape),
                    "digest": t.digest,
                    "nbytes": t.nbytes,
                }
                for position, t in enumerate(tensors)
            ],
        )
    for tag in dict.fromkeys(tags):
        upsert_tag(conn, task_id, tag, snapshot_id, created_at)


def explain_rejected(
    conn: Connection, snapshot_id: str, task: str, step: int | None, exc: IntegrityError
) -> Exception:
    """The error to raise when a concurrent saver won the race between our check and insert."""
    task_id = conn.scalar(select(TaskRow.id).where(TaskRow.name == task))
    if step is not None and task_id is not None:
        try:
            raise_if_step_taken(conn, task_id, task, step)
        except Conflict as conflict:
            return conflict
    if conn.scalar(snapshot_exists(snapshot_id)) is not None:
        return Conflict(f"snapshot {snapshot_id[:12]} is already in the index")
    return StorageError(f"the index rejected the snapshot: {exc.orig}")


def snapshot_exists(snapshot_id: str) -> Select[int]:
    """A query that finds a row when the snapshot exists."""
    return select(literal(1)).where(SnapshotRow.id == snapshot_id)


def ensure_task(conn: Connection, task: str, now: datetime) -> int:
    """The id of ``task``, created when new."""
    # ON CONFLICT DO NOTHING rather than check-then-insert: two first saves to a new task may
    # run at once on PostgreSQL.
    conn.execute(
        insert_for(conn, TaskRow)
        .values(name=task, created_at=now)
        .on_conflict_do_nothing(index_elements=[TaskRow.name])
    )
    task_id = conn.scalar(select(TaskRow.id).where(TaskRow.name == task))
    assert task_id is not None
    return task_id


def raise_if_step_taken(conn: Connection, task_id: int, task: str, step: int) -> None:
    """:class:`Conflict` when the task has a snapshot at ``step``."""
    existing = conn.scalar(
        select(SnapshotRow.id).where(SnapshotRow.task_id == task_id, SnapshotRow.step == step)
    )
    if existing is not None:
        raise Conflict(
            f"task {task!r} already has a snapshot at step {step} ({existing[:12]}): "
            "use another step or delete it first"
        )


def upsert_tag(conn: Connection, task_id: int, tag: str, snapshot_id: str, now: datetime) -> None:
    """Point the tag at the snapshot, creating or moving it."""
    stmt = insert_for(conn, TagRow).values(
        task_id=task_id, name=tag, snapshot_id=snapshot_id, updated_at=now
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[TagRow.task_id, TagRow.name],
            set_={"snapshot_id": snapshot_id, "updated_at": literal(now, UTCDateTime())},
        )
    )
