"""The index's queries: every read and write of metadata rows goes through :class:`Index`."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    and_,
    delete,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from weightstore.errors import (
    AmbiguousRef,
    Conflict,
    InvalidInput,
    LockHeld,
    ObjectNotFound,
    RefNotFound,
    StorageError,
)
from weightstore.index.engine import READ_ONLY_OPTION, IndexSettings, make_engine
from weightstore.index.listing import ListingQueries, added_bytes_of, header_fields, snapshot_rows
from weightstore.index.meta import MetaQueries
from weightstore.index.models import (
    LockRow,
    ObjectRow,
    SnapshotRow,
    TagRow,
    TaskRow,
    TensorRow,
    UTCDateTime,
)
from weightstore.index.rows import aware as _aware
from weightstore.index.rows import (
    closure_records,
    depth_of,
    existing,
    insert_for,
    not_before,
    object_columns,
    object_select,
    pin,
    record_of,
)
from weightstore.index.schema import ensure_schema
from weightstore.index.sql import CHUNK, chunks
from weightstore.refs import Ref, check_name
from weightstore.types import ObjectRecord, Snapshot, TensorEntry

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# How many names an error message lists before it abbreviates.
_HINT_LIMIT = 10
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
# Snapshot ids are lowercase hex digests; such a prefix can be searched as a key range.
_HEX_PREFIX = re.compile("[0-9a-f]+")


@dataclass(frozen=True)
class SnapshotUsageRow:
    """Raw figures of one snapshot for the storage report (see :meth:`Index.usage_rows`).

    ``tensors`` holds ``(digest, nbytes)`` for each tensor, in state-dict order; the report joins
    the digests with :meth:`Index.all_objects` to attribute stored bytes.
    """

    id: str
    task: str
    step: int | None
    created_at: datetime
    logical_bytes: int
    tensors: tuple[tuple[str, int], ...]


class Index(MetaQueries, ListingQueries):
    """Metadata of tasks, snapshots, objects, tags and locks in a SQL database.

    Every public method runs in its own transaction. Datetimes going in must be tz-aware; all
    datetimes coming out are tz-aware UTC.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, settings: IndexSettings, *, create: bool = True) -> Index:
        """Connect to the index at ``settings.url``, creating its schema if empty and ``create``."""
        engine = make_engine(settings)
        try:
            ensure_schema(engine, create=create)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def _write(self, *, raw_integrity_errors: bool = False) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except IntegrityError as exc:
            if raw_integrity_errors:
                raise
            raise StorageError(f"the index rejected a write: {exc.orig}") from exc
        except DBAPIError as exc:
            raise StorageError(f"index database error: {exc.orig}") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with (
                self.engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn,
                conn.begin(),
            ):
                yield conn
        except DBAPIError as exc:
            raise StorageError(f"index database error: {exc.orig}") from exc

    # -- tasks and objects ----------------------------------------------------------------------

    def tasks(self) -> list[str]:
        """Names of all tasks, sorted."""
        with self._read() as conn:
            return list(conn.scalars(select(TaskRow.name).order_by(TaskRow.name)))

    def pin_objects(self, digests: Collection[str], now: datetime) -> set[str]:
        """Mark the objects as used at ``now`` (so gc spares them) and return those that exist.

        ``last_used_at`` never moves backwards, so a late pin with an older clock cannot shorten
        the grace period granted by a newer one.
        """
        now = _aware(now, "now")
        with self._write() as conn:
            return pin(conn, digests, now)

    def get_objects(self, digests: Collection[str]) -> dict[str, ObjectRecord]:
        """The index rows of those ``digests`` that exist."""
        out: dict[str, ObjectRecord] = {}
        with self._read() as conn:
            for chunk in chunks(digests):
                for row in conn.execute(object_select().where(ObjectRow.digest.in_(chunk))):
                    out[row.digest] = record_of(row)
        return out

    def get_closure(self, digests: Collection[str]) -> dict[str, ObjectRecord]:
        """The rows of those ``digests`` that exist and of all their delta bases (one query
        whatever the chains' depth)."""
        with self._read() as conn:
            return closure_records(conn, digests)

    def add_object(self, rec: ObjectRecord, now: datetime) -> ObjectRecord:
        """Record a stored object; if it is already recorded only refresh its ``last_used_at``.

        Returns the row as it now stands: ``rec``, or the row a concurrent saver recorded
        first (whose encoding and base the blob must then follow).
        """
        self.add_objects([rec], now)
        return self.get_objects([rec.digest]).get(rec.digest, rec)

    def add_objects(self, records: Sequence[ObjectRecord], now: datetime) -> None:
        """:meth:`add_object` for many objects in one transaction (one round trip per 500).

        A delta's base must be in the index already or among ``records``; otherwise
        :class:`ObjectNotFound` is raised and nothing is written.
        """
        now = _aware(now, "now")
        # Bases before their deltas (a base is always shallower), one row per digest.
        unique = sorted({r.digest: r for r in reversed(records)}.values(), key=depth_of)
        if not unique:
            return
        with self._write() as conn:
            outside = {r.base for r in unique if r.base is not None} - {r.digest for r in unique}
            missing = outside - existing(conn, outside)
            if missing:
                base = sorted(missing)[0]
                needer = next(r.digest for r in unique if r.base == base)
                raise ObjectNotFound(
                    f"object {needer} is a delta against {base}, which is not in the index"
                )
            stmt = insert_for(conn, ObjectRow)
            stmt = stmt.on_conflict_do_update(
                index_elements=[ObjectRow.digest], set_={"last_used_at": not_before(now)}
            )
            for start in range(0, len(unique), CHUNK):
                conn.execute(
                    stmt,
                    [
                        {
                            "digest": r.digest,
                            "raw_size": r.raw_size,
                            "stored_size": r.stored_size,
                            "encoding": r.encoding,
                            "base_digest": r.base,
                            "chain_depth": r.chain_depth,
                            "created_at": now,
                            "last_used_at": now,
                        }
                        for r in unique[start : start + CHUNK]
                    ],
                )

    def commit_snapshot(
        self,
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
    ) -> None:
        """Record a snapshot, its tensors and its tags in one transaction.

        Creates the task on first use and moves each tag to the new snapshot. Raises
        :class:`Conflict` if the task already has a snapshot at ``step`` and
        :class:`StorageError` if a tensor's object is no longer in the index (gc removed it
        while the caller was saving); in both cases nothing is written.
        """
        if not 0 < len(snapshot_id) <= 64:
            raise InvalidInput(f"snapshot id {snapshot_id!r} must be 1 to 64 characters")
        check_name(task, "task")
        for tag in tags:
            check_name(tag, "tag")
        created_at = _aware(created_at, "created_at")
        if step is not None and not _BIGINT_MIN <= step <= _BIGINT_MAX:
            raise InvalidInput(f"step {step} is out of range: it must fit in a signed 64-bit int")
        seen: set[str] = set()
        for t in tensors:
            if t.name in seen:
                raise InvalidInput(f"tensor name {t.name!r} appears twice in one snapshot")
            seen.add(t.name)
        try:
            with self._write(raw_integrity_errors=True) as conn:
                task_id = _ensure_task(conn, task, created_at)
                if step is not None:
                    _raise_if_step_taken(conn, task_id, task, step)
                if parent_id is not None and conn.scalar(_snapshot_exists(parent_id)) is None:
                    raise RefNotFound(f"parent snapshot {parent_id[:12]} is not in the index")
                digests = {t.digest for t in tensors}
                # Pin at the commit's own time, not the save's start: a gc whose cutoff lies
                # between the two must see these objects as just used.
                missing = digests - pin(conn, digests, datetime.now(timezone.utc))
                if missing:
                    shown = ", ".join(sorted(missing)[:3])
                    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
                    raise StorageError(
                        f"object {shown}{more} was garbage-collected during the save; retry"
                    )
                conn.execute(
                    insert_for(conn, SnapshotRow).values(
                        id=snapshot_id,
                        task_id=task_id,
                        step=step,
                        parent_id=parent_id,
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
                    _upsert_tag(conn, task_id, tag, snapshot_id, created_at)
        except IntegrityError as exc:
            # A concurrent saver can win the race between our check and our insert.
            raise self._explain_rejected_commit(snapshot_id, task, step, exc) from exc

    def _explain_rejected_commit(
        self, snapshot_id: str, task: str, step: int | None, exc: IntegrityError
    ) -> Exception:
        with self._read() as conn:
            task_id = conn.scalar(select(TaskRow.id).where(TaskRow.name == task))
            if step is not None and task_id is not None:
                try:
                    _raise_if_step_taken(conn, task_id, task, step)
                except Conflict as conflict:
                    return conflict
            if conn.scalar(_snapshot_exists(snapshot_id)) is not None:
                return Conflict(f"snapshot {snapshot_id[:12]} is already in the index")
        return StorageError(f"the index rejected the snapshot: {exc.orig}")

    # -- reading snapshots ----------------------------------------------------------------------

    def resolve(self, ref: Ref) -> str:
        """The id of the snapshot ``ref`` names; :class:`RefNotFound` or :class:`AmbiguousRef`."""
        with self._read() as conn:
            task_id = conn.scalar(select(TaskRow.id).where(TaskRow.name == ref.task))
            if ref.kind == "latest":
                if task_id is not None:
                    latest = _latest(conn, task_id)
                    if latest is None:
                        raise RefNotFound(f"task {ref.task!r} has no snapshots")
                    if ref.id_prefix is not None:
                        _refuse_task_shadowing_id(conn, ref.id_prefix, latest)
                    return latest
                if ref.id_prefix is not None:
                    return _by_prefix(conn, ref.id_prefix)
                raise RefNotFound(f"no task {ref.task!r}; {_tasks_hint(conn)}")
            if task_id is None:
                raise RefNotFound(f"no task {ref.task!r}; {_tasks_hint(conn)}")
            if ref.kind == "step":
                assert ref.step is not None
                found = None
                if _BIGINT_MIN <= ref.step <= _BIGINT_MAX:
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
                raise RefNotFound(
                    f"task {ref.task!r} has no tag {ref.tag!r}; {_tags_hint(conn, task_id)}"
                )
            return found

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        """The snapshot with that exact id, tensors in state-dict order, tags sorted."""
        with self._read() as conn:
            found = _load_snapshots(conn, SnapshotRow.id == snapshot_id)
            if not found:
                raise RefNotFound(f"no snapshot {snapshot_id[:12]} in the index")
            added = added_bytes_of(conn, [snapshot_id]).get(snapshot_id, 0)
        return dataclasses.replace(found[0], added_bytes=added)

    def _require_task(self, conn: Connection, task: str) -> int:
        """The id of ``task``; RefNotFound naming the tasks there are when it does not exist."""
        task_id = conn.scalar(select(TaskRow.id).where(TaskRow.name == task))
        if task_id is None:
            raise RefNotFound(f"no task {task!r}; {_tasks_hint(conn)}")
        return task_id

    def list_snapshots(self, task: str | None = None) -> list[Snapshot]:
        """All snapshots, or those of ``task``, newest first (RefNotFound for an unknown task)."""
        with self._read() as conn:
            if task is None:
                return _load_snapshots(conn, None)
            task_id = self._require_task(conn, task)
            return _load_snapshots(conn, SnapshotRow.task_id == task_id)

    def latest_snapshot_id(self, task: str) -> str | None:
        """The newest snapshot of ``task``, or None when the task has none or does not exist."""
        with self._read() as conn:
            task_id = conn.scalar(select(TaskRow.id).where(TaskRow.name == task))
            return None if task_id is None else _latest(conn, task_id)

    # -- tags and deletion ------------------------------------------------------------------------

    def set_tag(self, snapshot_id: str, tag: str) -> None:
        """Point ``tag`` of the snapshot's task at the snapshot (moving it if it exists)."""
        check_name(tag, "tag")
        with self._write() as conn:
            task_id = conn.scalar(select(SnapshotRow.task_id).where(SnapshotRow.id == snapshot_id))
            if task_id is None:
                raise RefNotFound(f"no snapshot {snapshot_id[:12]} in the index")
            _upsert_tag(conn, task_id, tag, snapshot_id, datetime.now(timezone.utc))

    def delete_tag(self, task: str, tag: str) -> None:
        """Remove a tag; the snapshot it pointed at stays."""
        with self._write() as conn:
            task_id = self._require_task(conn, task)
            deleted = conn.execute(
                delete(TagRow).where(TagRow.task_id == task_id, TagRow.name == tag)
            ).rowcount
            if not deleted:
                raise RefNotFound(f"task {task!r} has no tag {tag!r}; {_tags_hint(conn, task_id)}")

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Remove a snapshot with its tensor rows and tags; its children lose their parent.

        The objects stay: removing unreferenced objects is gc's job.
        """
        with self._write() as conn:
            # Done explicitly rather than left to ON DELETE rules, so the result does not depend
            # on the connection having SQLite foreign key enforcement turned on.
            conn.execute(
                update(SnapshotRow)
                .where(SnapshotRow.parent_id == snapshot_id)
                .values(parent_id=None)
            )
            conn.execute(delete(TagRow).where(TagRow.snapshot_id == snapshot_id))
            conn.execute(delete(TensorRow).where(TensorRow.snapshot_id == snapshot_id))
            deleted = conn.execute(delete(SnapshotRow).where(SnapshotRow.id == snapshot_id))
            if not deleted.rowcount:
                raise RefNotFound(f"no snapshot {snapshot_id[:12]} in the index")

    # -- reachability and gc --------------------------------------------------------------------

    def snapshots_for_digests(self, digests: Collection[str]) -> dict[str, list[str]]:
        """For each digest, the snapshots (oldest first) that need its object.

        A snapshot needs an object when one of its tensors references it directly, or references
        an object whose chain of delta bases passes through it. Every requested digest is a key.
        """
        out: dict[str, list[str]] = {d: [] for d in digests}
        child = ObjectRow.__table__.alias("child")
        with self._read() as conn:
            for chunk in chunks(out):
                seed = select(
                    ObjectRow.digest.label("root"), ObjectRow.digest.label("digest")
                ).where(ObjectRow.digest.in_(chunk))
                deps = seed.cte("dependents", recursive=True)
                # UNION (not UNION ALL) drops repeats, so even a corrupt cyclic chain terminates.
                deps = deps.union(
                    select(deps.c.root, child.c.digest).where(child.c.base_digest == deps.c.digest)
                )
                query = (
                    select(deps.c.root, SnapshotRow.id, SnapshotRow.created_at)
                    .join(TensorRow, TensorRow.digest == deps.c.digest)
                    .join(SnapshotRow, SnapshotRow.id == TensorRow.snapshot_id)
                    .distinct()
                    .order_by(SnapshotRow.created_at, SnapshotRow.id)
                )
                for root, snapshot_id, _ in conn.execute(query):
                    out[root].append(snapshot_id)
        return out

    def all_objects(self) -> list[tuple[ObjectRecord, datetime]]:
        """Every object row with its ``last_used_at``, by digest."""
        with self._read() as conn:
            rows = conn.execute(
                select(*object_columns(), ObjectRow.last_used_at).order_by(ObjectRow.digest)
            )
            return [(record_of(r), r.last_used_at) for r in rows]

    def reachable_digests(self) -> set[str]:
        """Digests referenced by any snapshot tensor, plus all their transitive delta bases."""
        seed = select(TensorRow.digest.label("digest"))
        reach = seed.cte("reachable", recursive=True)
        reach = reach.union(
            select(ObjectRow.base_digest).where(
                ObjectRow.digest == reach.c.digest, ObjectRow.base_digest.is_not(None)
            )
        )
        with self._read() as conn:
            return set(conn.scalars(select(reach.c.digest)))

    def delete_object_if_unused(
        self, digest: str, cutoff: datetime, before_commit: Callable[[], None]
    ) -> bool:
        """Delete the object's row if it is unreferenced and unused since ``cutoff``.

        The row goes only if ``last_used_at < cutoff``, no tensor references it and no object
        uses it as a delta base. When it went, ``before_commit()`` runs inside the transaction
        (the caller deletes the blob there); if it raises, the row is kept and the error
        propagates. Returns whether the row was deleted.
        """
        cutoff = _aware(cutoff, "cutoff")
        child = ObjectRow.__table__.alias("child")
        # One statement on purpose: on PostgreSQL it row-locks the object, so a concurrent
        # pin_objects (a saver about to reference it) waits and then sees it gone, or the
        # delete sees the fresh last_used_at and keeps it.
        stmt = delete(ObjectRow).where(
            ObjectRow.digest == digest,
            ObjectRow.last_used_at < cutoff,
            ~exists().where(TensorRow.digest == digest),
            ~exists().where(child.c.base_digest == digest),
        )
        try:
            with self._write(raw_integrity_errors=True) as conn:
                if not conn.execute(stmt).rowcount:
                    return False
                before_commit()
        except IntegrityError:
            # PostgreSQL re-checks only the locked row after waiting for a saver's commit, not
            # the NOT EXISTS on its old snapshot; the foreign key then refuses the delete. The
            # object just became referenced: keep it.
            return False
        return True

    def delete_orphan_blob(self, digest: str, before_commit: Callable[[], None]) -> bool:
        """Let the caller delete a blob that has no object row, unless someone is saving it.

        A placeholder row is inserted for the digest for the length of the transaction; if a row
        already exists (a saver recorded it) nothing is called and False is returned. A saver
        that records the digest meanwhile waits on the primary key until we are done.
        """
        with self._write() as conn:
            if conn.scalar(select(exists().where(TensorRow.digest == digest))):
                return False  # a snapshot names it; only its row is missing (a damaged index)
            placeholder = (
                insert_for(conn, ObjectRow)
                .values(
                    digest=digest,
                    raw_size=0,
                    stored_size=0,
                    encoding="raw",
                    base_digest=None,
                    chain_depth=0,
                    created_at=EPOCH,
                    last_used_at=EPOCH,
                )
                .on_conflict_do_nothing(index_elements=[ObjectRow.digest])
                # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT.
                .returning(ObjectRow.digest)
            )
            if conn.execute(placeholder).first() is None:
                return False
            before_commit()
            conn.execute(delete(ObjectRow).where(ObjectRow.digest == digest))
        return True

    # -- locks ------------------------------------------------------------------------------------

    def acquire_lock(self, name: str, holder: str, *, stale_after: timedelta) -> None:
        """Take the named lock for ``holder``, taking over a lock older than ``stale_after``.

        Raises :class:`LockHeld` if anyone (``holder`` included) holds it and it is not stale.
        """
        for _ in range(3):
            now = datetime.now(timezone.utc)
            with self._write() as conn:
                inserted = conn.execute(
                    insert_for(conn, LockRow)
                    .values(name=name, holder=holder, acquired_at=now)
                    .on_conflict_do_nothing(index_elements=[LockRow.name])
                    .returning(LockRow.name)
                ).first()
                if inserted is not None:
                    return
                current = conn.execute(
                    select(LockRow.holder, LockRow.acquired_at).where(LockRow.name == name)
                ).one_or_none()
                if current is None:
                    continue  # released since our insert; try again
                if current.acquired_at > now - stale_after:
                    raise LockHeld(
                        f"{name} lock held by {current.holder} since "
                        f"{current.acquired_at:%Y-%m-%d %H:%M:%S} UTC: wait for it to finish, or "
                        f"remove it with `weightstore db unlock {name}` if that process is dead "
                        f"(it is taken over automatically once older than {stale_after})"
                    )
                # Only if unchanged since we looked: another process may be taking it over too.
                taken = conn.execute(
                    update(LockRow)
                    .where(
                        LockRow.name == name,
                        LockRow.holder == current.holder,
                        LockRow.acquired_at == current.acquired_at,
                    )
                    .values(holder=holder, acquired_at=now)
                ).rowcount
                if taken:
                    log.warning(
                        "took over stale %s lock of %s (held since %s) for %s",
                        name,
                        current.holder,
                        current.acquired_at.isoformat(),
                        holder,
                    )
                    return
        raise LockHeld(f"{name} lock keeps changing hands; try again")

    def release_lock(self, name: str, holder: str) -> bool:
        """Release the lock if ``holder`` still holds it; return whether it did."""
        with self._write() as conn:
            stmt = delete(LockRow).where(LockRow.name == name, LockRow.holder == holder)
            return bool(conn.execute(stmt).rowcount)

    def break_lock(self, name: str) -> str | None:
        """Remove the lock whoever holds it (for a dead holder); return the holder it had."""
        with self._write() as conn:
            holder = conn.scalar(select(LockRow.holder).where(LockRow.name == name))
            conn.execute(delete(LockRow).where(LockRow.name == name))
            return holder

    @contextmanager
    def lock(self, name: str, holder: str, stale_after: timedelta) -> Iterator[None]:
        """Hold the named lock for the ``with`` block."""
        self.acquire_lock(name, holder, stale_after=stale_after)
        try:
            yield
        finally:
            self.release_lock(name, holder)

    # -- reporting --------------------------------------------------------------------------------

    def usage_rows(self) -> list[SnapshotUsageRow]:
        """Every snapshot in commit order with its tensors' ``(digest, nbytes)``."""
        with self._read() as conn:
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


# -- helpers ------------------------------------------------------------------------------------


def _snapshot_exists(snapshot_id: str) -> Select[int]:
    return select(literal(1)).where(SnapshotRow.id == snapshot_id)


def _ensure_task(conn: Connection, task: str, now: datetime) -> int:
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


def _raise_if_step_taken(conn: Connection, task_id: int, task: str, step: int) -> None:
    existing = conn.scalar(
        select(SnapshotRow.id).where(SnapshotRow.task_id == task_id, SnapshotRow.step == step)
    )
    if existing is not None:
        raise Conflict(
            f"task {task!r} already has a snapshot at step {step} ({existing[:12]}): "
            "use another step or delete it first"
        )


def _upsert_tag(conn: Connection, task_id: int, tag: str, snapshot_id: str, now: datetime) -> None:
    stmt = insert_for(conn, TagRow).values(
        task_id=task_id, name=tag, snapshot_id=snapshot_id, updated_at=now
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[TagRow.task_id, TagRow.name],
            set_={"snapshot_id": snapshot_id, "updated_at": literal(now, UTCDateTime())},
        )
    )


def _latest(conn: Connection, task_id: int) -> str | None:
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
        raise RefNotFound(f"no task or snapshot id {prefix!r}; {_tasks_hint(conn)}")
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


def _tasks_hint(conn: Connection) -> str:
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


def _tags_hint(conn: Connection, task_id: int) -> str:
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


def _load_snapshots(conn: Connection, condition: ColumnElement[bool] | None) -> list[Snapshot]:
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
