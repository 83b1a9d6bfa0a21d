"""Index queries that turn a ref into a snapshot id, with "did you mean" hints when none matches."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import ColumnElement, Connection, and_, func, select

from weightstore.errors import AmbiguousRef, RefNotFound
from weightstore.index.models import SnapshotRow, TagRow, TaskRow
from weightstore.refs import Ref

# How many names an error message lists before it abbreviates.
_HINT_LIMIT = 10
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
# Snapshot ids are lowercase hex digests; such a prefix can be searched as a key range.
_HEX_PREFIX = re.compile("[0-9a-f]+")


def resolve(conn: Connection, ref: Ref) -> str:
    """The id of the snapshot ``ref`` names; :class:`RefNotFound` or :class:`AmbiguousRef`."""
    task_id = conn.scalar(select(TaskRow.id).where(TaskRow.name == ref.task))
    if ref.kind == "latest":
        if task_id is not None:
            newest = latest(conn, task_id)
            if newest is None:
                raise RefNotFound(f"task {ref.task!r} has no snapshots")
            if ref.id_prefix is not None:
                _refuse_task_shadowing_id(conn, ref.id_prefix, newest)
            return newest
        if ref.id_prefix is not None:
            return _by_prefix(conn, ref.id_prefix)
        raise RefNotFound(f"no task {ref.task!r}; {tasks_hint(conn)}")
    if task_id is None:
        raise RefNotFound(f"no task {ref.task!r}; {tasks_hint(conn)}")
    if ref.kind == "step":
        assert ref.step is not None
        found = None
        if BIGINT_MIN <= ref.step <= BIGINT_MAX:
            found = conn.scalar(
                select(SnapshotRow.id).where(
                    SnapshotRow.task_id == task_id, SnapshotRow.step == ref.step
                )
            )
        if found is None:
            raise RefNotFound(
                f"task {ref.task!r} has no step {ref.step}; {_steps_hint(conn, task_id)}"
            )
        return found
    assert ref.tag is not None
    found = conn.scalar(
        select(TagRow.snapshot_id).where(TagRow.task_id == task_id, TagRow.name == ref.tag)
    )
    if found is None:
        raise RefNotFound(f"task {ref.task!r} has no tag {ref.tag!r}; {tags_hint(conn, task_id)}")
    return found


def require_task(conn: Connection, task: str) -> int:
    """The id of ``task``; RefNotFound naming the tasks there are when it does not exist."""
    task_id = conn.scalar(select(TaskRow.id).where(TaskRow.name == task))
    if task_id is None:
        raise RefNotFound(f"no task {task!r}; {tasks_hint(conn)}")
    return task_id


def latest(conn: Connection, task_id: int) -> str | None:
    return conn.scalar(
        select(SnapshotRow.id)
        .where(SnapshotRow.task_id == task_id)
        .order_by(SnapshotRow.created_at.desc(), SnapshotRow.id.desc())
        .limit(1)
    )


def _refuse_task_shadowing_id(conn: Connection, prefix: str, latest: str) -> None:
    # A task named like an id prefix (only possible for tasks made before such names were
    # refused) must not silently win over the snapshot the user may mean: `rm` would then
    # delete another snapshot than the one shown by that id.
    other = conn.scalar(
        select(SnapshotRow.id).where(_id_starts_with(prefix), SnapshotRow.id != latest).limit(1)
    )
    if other is not None:
        raise AmbiguousRef(
            f"{prefix!r} is both a task and the start of snapshot id {other[:12]}: write "
            f"{prefix}@STEP or {prefix}:TAG for the task, or more digits of the id"
        )


def _id_starts_with(prefix: str) -> ColumnElement[bool]:
    like = SnapshotRow.id.startswith(prefix, autoescape=True)
    if not _HEX_PREFIX.fullmatch(prefix):
        return like
    # LIKE alone scans every id: SQLite's LIKE ignores case and PostgreSQL uses an index for it
    # only under the C collation. The range lets both search the primary key; it is exact for
    # hex ids in any collation, since every hex digit sorts below "g".
    return and_(SnapshotRow.id >= prefix, SnapshotRow.id < prefix + "g", like)


def _by_prefix(conn: Connection, prefix: str) -> str:
    ids = list(
        conn.scalars(
            select(SnapshotRow.id)
            .where(_id_starts_with(prefix))
            .order_by(SnapshotRow.id)
            .limit(_HINT_LIMIT + 1)
        )
    )
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise RefNotFound(f"no task or snapshot id {prefix!r}; {tasks_hint(conn)}")
    width = max(12, len(prefix) + 4)
    shown = ", ".join(i[:width] for i in ids[:_HINT_LIMIT])
    more = ", ..." if len(ids) > _HINT_LIMIT else ""
    raise AmbiguousRef(
        f"id prefix {prefix!r} matches several snapshots: {shown}{more}; give more digits"
    )


def _hint(what: str, names: Sequence[str], total: int, *, last: bool = False) -> str:
    if not names:
        return f"it has no {what}" if what != "tasks" else "there are no tasks yet"
    if total > len(names):
        which = "last" if last else "first"
        return f"{what} ({which} {len(names)} of {total}): {', '.join(names)}"
    return f"{what}: {', '.join(names)}"


def tasks_hint(conn: Connection) -> str:
    names = list(conn.scalars(select(TaskRow.name).order_by(TaskRow.name).limit(_HINT_LIMIT)))
    total = conn.scalar(select(func.count()).select_from(TaskRow)) or 0
    return _hint("tasks", names, total)


def _steps_hint(conn: Connection, task_id: int) -> str:
    where = (SnapshotRow.task_id == task_id, SnapshotRow.step.is_not(None))
    steps = list(
        conn.scalars(
            select(SnapshotRow.step)
            .where(*where)
            .order_by(SnapshotRow.step.desc())
            .limit(_HINT_LIMIT)
        )
    )
    total = conn.scalar(select(func.count()).select_from(SnapshotRow).where(*where)) or 0
    return _hint("steps", [str(s) for s in reversed(steps)], total, last=True)


def tags_hint(conn: Connection, task_id: int) -> str:
    names = list(
        conn.scalars(
            select(TagRow.name)
            .where(TagRow.task_id == task_id)
            .order_by(TagRow.name)
            .limit(_HINT_LIMIT)
        )
    )
    total = conn.scalar(select(func.count()).select_from(TagRow).where(TagRow.task_id == task_id))
    return _hint("tags", names, total or 0)
