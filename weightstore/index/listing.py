"""Index queries for listings: snapshot summaries without tensor rows, tasks, costs.

Listing commands (``log -n N``, ``tasks``) read only the rows they show: the page of snapshot
rows, a count of their tensors, their tags and what they added to the store; never every
tensor row of every snapshot. Their cost is flat in the number of snapshots in the index.

What a snapshot *added* is the stored size of the objects it references that no snapshot
committed before it references (each object counted once per snapshot). It is what saving it
cost the store; after an earlier snapshot is deleted, its objects count for the next one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, func, literal, or_, select

from weightstore.index.models import ObjectRow, SnapshotRow, TagRow, TaskRow, TensorRow
from weightstore.index.reach import needed_by
from weightstore.index.resolving import require_task
from weightstore.index.sql import CHUNK, chunks
from weightstore.types import RESERVED_PREFIX, DeletionEffect, SnapshotSummary, TaskSummary


def list_summaries(
    conn: Connection,
    task: str | None,
    *,
    limit: int | None,
    offset: int,
    before: tuple[datetime, str] | None,
) -> list[SnapshotSummary]:
    """See :meth:`Index.list_summaries`."""
    conditions = []
    if task is not None:
        conditions.append(SnapshotRow.task_id == require_task(conn, task))
    if before is not None:
        at, sid = before
        conditions.append(
            or_(
                SnapshotRow.created_at < at,
                and_(SnapshotRow.created_at == at, SnapshotRow.id < sid),
            )
        )
    condition = and_(*conditions) if conditions else None
    return _summaries(conn, condition, limit, offset)


def count_snapshots(conn: Connection, task: str) -> int:
    """How many snapshots ``task`` has (RefNotFound for an unknown task)."""
    task_id = require_task(conn, task)
    query = select(func.count()).select_from(SnapshotRow)
    return int(conn.scalar(query.where(SnapshotRow.task_id == task_id)) or 0)


def summaries_by_id(conn: Connection, ids: Sequence[str]) -> dict[str, SnapshotSummary]:
    """The summaries of those ``ids`` that exist."""
    out: dict[str, SnapshotSummary] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = list(ids[start : start + CHUNK])
        out.update((s.id, s) for s in _summaries(conn, SnapshotRow.id.in_(chunk), None))
    return out


def task_summaries(conn: Connection) -> list[TaskSummary]:
    """Every task, sorted by name, with its snapshot count and newest snapshot."""
    count = (
        select(func.count())
        .select_from(SnapshotRow)
        .where(SnapshotRow.task_id == TaskRow.id)
        .scalar_subquery()
    )
    latest = (
        select(SnapshotRow.id)
        .where(SnapshotRow.task_id == TaskRow.id)
        .order_by(SnapshotRow.created_at.desc(), SnapshotRow.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(TaskRow.name, count.label("n"), latest.label("latest")).order_by(TaskRow.name)
    ).all()
    found = summaries_by_id(conn, [r.latest for r in rows if r.latest is not None])
    return [
        TaskSummary(r.name, r.n, found.get(r.latest) if r.latest is not None else None)
        for r in rows
    ]


def added_bytes(conn: Connection, snapshot_ids: Collection[str]) -> dict[str, int]:
    """Per snapshot, the stored bytes of the objects it was the first to reference."""
    out = dict.fromkeys(snapshot_ids, 0)
    for chunk in chunks(out):
        out.update(added_bytes_of(conn, chunk))
    return out


def deletion_effect(conn: Connection, snapshot_id: str) -> DeletionEffect:
    """What gc could free once the snapshot is deleted, and what its deltas' dependents keep."""
    direct = set(conn.scalars(select(TensorRow.digest).where(TensorRow.snapshot_id == snapshot_id)))
    records = _closure(conn, direct)
    needs = needed_by(conn, list(records))
    freed = [d for d in records if set(needs[d]) <= {snapshot_id}]
    shared = set(
        conn.scalars(
            select(TensorRow.digest)
            .where(TensorRow.digest.in_(direct), TensorRow.snapshot_id != snapshot_id)
            .distinct()
        )
    )
    as_bases = [d for d in direct - shared if d not in freed]
    return DeletionEffect(
        frees_objects=len(freed),
        frees_bytes=sum(records[d] for d in freed),
        kept_as_bases=len(as_bases),
        kept_as_bases_bytes=sum(records[d] for d in as_bases),
    )


def snapshot_rows() -> Select[Any]:
    """The snapshot rows' own columns with the task's name, newest first."""
    return (
        select(
            SnapshotRow.id,
            TaskRow.name.label("task"),
            SnapshotRow.step,
            SnapshotRow.parent_id,
            SnapshotRow.origin_parent_id,
            SnapshotRow.created_at,
            SnapshotRow.message,
            SnapshotRow.meta.label("meta"),
            SnapshotRow.logical_bytes,
        )
        .join(TaskRow, TaskRow.id == SnapshotRow.task_id)
        .order_by(SnapshotRow.created_at.desc(), SnapshotRow.id.desc())
    )


def header_fields(row: Any, tags: dict[str, list[str]]) -> dict[str, Any]:
    """The :class:`SnapshotHeader` fields of a :func:`snapshot_rows` row."""
    return {
        "id": row.id,
        "task": row.task,
        "step": row.step,
        "parent": row.parent_id,
        "origin_parent": row.origin_parent_id or None,
        "created_at": row.created_at,
        "message": row.message,
        "metadata": row.meta,
        "tags": tuple(tags.get(row.id, ())),
        "logical_bytes": row.logical_bytes,
    }


def _summaries(
    conn: Connection, condition: ColumnElement[bool] | None, limit: int | None, offset: int = 0
) -> list[SnapshotSummary]:
    query = snapshot_rows()
    if condition is not None:
        query = query.where(condition)
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    rows = conn.execute(query).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    counts: dict[str, int] = dict(
        conn.execute(
            select(TensorRow.snapshot_id, func.count())
            .where(TensorRow.snapshot_id.in_(ids), ~TensorRow.name.startswith(RESERVED_PREFIX))
            .group_by(TensorRow.snapshot_id)
        ).all()
    )
    tags: dict[str, list[str]] = {}
    for tag in conn.execute(
        select(TagRow.snapshot_id, TagRow.name)
        .where(TagRow.snapshot_id.in_(ids))
        .order_by(TagRow.name)
    ):
        tags.setdefault(tag.snapshot_id, []).append(tag.name)
    added = added_bytes_of(conn, ids)
    return [
        SnapshotSummary(
            **header_fields(r, tags),
            tensor_count=counts.get(r.id, 0),
            added_bytes=added.get(r.id, 0),
        )
        for r in rows
    ]


def added_bytes_of(conn: Connection, ids: Sequence[str]) -> dict[str, int]:
    mine = (
        select(TensorRow.snapshot_id, TensorRow.digest)
        .where(TensorRow.snapshot_id.in_(ids))
        .distinct()
        .subquery()
    )
    this = SnapshotRow.__table__.alias("this")
    other = SnapshotRow.__table__.alias("other")
    earlier_use = TensorRow.__table__.alias("earlier_use")
    # A scalar subquery with LIMIT 1, not NOT EXISTS: PostgreSQL would plan the latter as an
    # anti-join over every tensor row; this way each digest is looked up through its index and
    # the lookup stops at the first earlier reference.
    earlier = (
        select(literal(1))
        .select_from(earlier_use.join(other, other.c.id == earlier_use.c.snapshot_id))
        .where(
            earlier_use.c.digest == mine.c.digest,
            or_(
                other.c.created_at < this.c.created_at,
                and_(other.c.created_at == this.c.created_at, other.c.id < this.c.id),
            ),
        )
        .limit(1)
        .scalar_subquery()
    )
    query: Any = (
        select(mine.c.snapshot_id, func.sum(ObjectRow.stored_size))
        .join(this, this.c.id == mine.c.snapshot_id)
        .join(ObjectRow, ObjectRow.digest == mine.c.digest)
        .where(earlier.is_(None))
        .group_by(mine.c.snapshot_id)
    )
    return {sid: int(total or 0) for sid, total in conn.execute(query)}


def _closure(conn: Connection, digests: Collection[str]) -> dict[str, int]:
    """``digests`` and their delta bases, transitively: digest -> stored size."""
    sizes: dict[str, int] = {}
    todo = set(digests)
    while todo:
        batch = sorted(todo)[:CHUNK]
        todo -= set(batch)
        for digest, stored, base in conn.execute(
            select(ObjectRow.digest, ObjectRow.stored_size, ObjectRow.base_digest).where(
                ObjectRow.digest.in_(batch)
            )
        ):
            sizes[digest] = stored
            if base is not None and base not in sizes:
                todo.add(base)
    return sizes
