"""Index queries that read whole snapshots: their rows, tensors and tags, and the storage report's
raw figures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, select

from weightstore.index.listing import header_fields, snapshot_rows
from weightstore.index.models import SnapshotRow, TagRow, TaskRow, TensorRow
from weightstore.types import Snapshot, TensorEntry


@dataclass(frozen=True)
class SnapshotUsageRow:
    """Raw figures of one snapshot for the storage report (see :func:`usage_rows`).

    ``tensors`` holds ``(digest, nbytes)`` for each tensor, in state-dict order; the report joins
    the digests with :meth:`Index.all_objects` to attribute stored bytes.
    """

    id: str
    task: str
    step: int | None
    created_at: datetime
    logical_bytes: int
    tensors: tuple[tuple[str, int], ...]


def load_snapshots(conn: Connection, condition: ColumnElement[bool] | None) -> list[Snapshot]:
    """The snapshots matching ``condition`` (all when None), newest first, with tensors and tags."""
    snapshot_query = snapshot_rows()
    tensor_query = select(
        TensorRow.snapshot_id,
        TensorRow.name,
        TensorRow.dtype,
        TensorRow.shape,
        TensorRow.digest,
        TensorRow.nbytes,
    ).order_by(TensorRow.snapshot_id, TensorRow.position)
    tag_query = select(TagRow.snapshot_id, TagRow.name).order_by(TagRow.name)
    if condition is not None:
        # One query per table for all matching snapshots, not one per snapshot.
        ids = select(SnapshotRow.id).where(condition)
        snapshot_query = snapshot_query.where(condition)
        tensor_query = tensor_query.where(TensorRow.snapshot_id.in_(ids))
        tag_query = tag_query.where(TagRow.snapshot_id.in_(ids))
    rows = conn.execute(snapshot_query).all()
    if not rows:
        return []
    tensors: dict[str, list[TensorEntry]] = {}
    for t in conn.execute(tensor_query):
        tensors.setdefault(t.snapshot_id, []).append(
            TensorEntry(
                name=t.name,
                dtype=t.dtype,
                shape=tuple(int(d) for d in t.shape),
                digest=t.digest,
                nbytes=t.nbytes,
            )
        )
    tags: dict[str, list[str]] = {}
    for tag in conn.execute(tag_query):
        tags.setdefault(tag.snapshot_id, []).append(tag.name)
    return [Snapshot(**header_fields(r, tags), tensors=tuple(tensors.get(r.id, ()))) for r in rows]


def usage_rows(conn: Connection) -> list[SnapshotUsageRow]:
    """Every snapshot in commit order with its tensors' ``(digest, nbytes)``."""
    snapshots = conn.execute(
        select(
            SnapshotRow.id,
            TaskRow.name.label("task"),
            SnapshotRow.step,
            SnapshotRow.created_at,
            SnapshotRow.logical_bytes,
        )
        .join(TaskRow, TaskRow.id == SnapshotRow.task_id)
        .order_by(SnapshotRow.created_at, SnapshotRow.id)
    ).all()
    tensors: dict[str, list[tuple[str, int]]] = {}
    for row in conn.execute(
        select(TensorRow.snapshot_id, TensorRow.digest, TensorRow.nbytes).order_by(
            TensorRow.snapshot_id, TensorRow.position
        )
    ):
        tensors.setdefault(row.snapshot_id, []).append((row.digest, row.nbytes))
    return [
        SnapshotUsageRow(
            id=s.id,
            task=s.task,
            step=s.step,
            created_at=s.created_at,
            logical_bytes=s.logical_bytes,
            tensors=tuple(tensors.get(s.id, ())),
        )
        for s in snapshots
    ]
