"""The index's transactions: every read and write of metadata rows goes through :class:`Index`.

Each method opens one transaction and runs the queries of one module over it: ``resolving``
(refs), ``committing`` (a snapshot's rows), ``loading`` (whole snapshots), ``listing``
(summaries), ``reach`` (gc), ``locks``, ``meta`` (store id, damaged objects) and ``rows``
(object rows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from weightstore.errors import LockHeld, ObjectNotFound, RefNotFound, StorageError
from weightstore.index import committing, listing, loading, locks, meta, reach, resolving
from weightstore.index.engine import READ_ONLY_OPTION, IndexSettings, make_engine
from weightstore.index.listing import added_bytes_of
from weightstore.index.loading import SnapshotUsageRow
from weightstore.index.models import ObjectRow, SnapshotRow, TagRow, TaskRow, TensorRow
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
from weightstore.types import (
    DeletionEffect,
    ObjectRecord,
    Snapshot,
    SnapshotSummary,
    TaskSummary,
    TensorEntry,
)

__all__ = ["Index", "SnapshotUsageRow"]


class Index:
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

    def replace_objects(self, records: Sequence[ObjectRecord]) -> None:
        """Give existing object rows a new encoding (a damaged object rewritten standalone)
        and the checksum of its new blob."""
        if not records:
            return
        with self._write() as conn:
            conn.execute(
                update(ObjectRow)
                .where(ObjectRow.digest == bindparam("d"))
                .values(
                    stored_size=bindparam("s"),
                    encoding=bindparam("e"),
                    base_digest=bindparam("b"),
                    chain_depth=bindparam("n"),
                    checksum=bindparam("c"),
                ),
                [
                    {
                        "d": r.digest,
                        "s": r.stored_size,
                        "e": r.encoding,
                        "b": r.base,
                        "n": r.chain_depth,
                        "c": r.checksum,
                    }
                    for r in records
                ],
            )

    def set_checksums(self, checksums: Mapping[str, str]) -> None:
        """Record the checksum of each object's stored bytes (objects without a row: none)."""
        self._set_per_object(ObjectRow.checksum, checksums)

    def set_device_checksums(self, checksums: Mapping[str, int]) -> None:
        """Record the device checksum of each object's raw bytes (objects without a row:
        none)."""
        self._set_per_object(ObjectRow.device_checksum, checksums)

    def _set_per_object(self, column: Any, values: Mapping[str, object]) -> None:
        if not values:
            return
        with self._write() as conn:
            conn.execute(
                update(ObjectRow)
                .where(ObjectRow.digest == bindparam("d"))
                .values({column.key: bindparam("v")}),
                [{"d": d, "v": v} for d, v in values.items()],
            )

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
                            "checksum": r.checksum,
                            "device_checksum": r.device_checksum,
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
        origin_parent: str | None = None,
    ) -> None:
        """Record a snapshot, its tensors and its tags in one transaction.

        ``origin_parent``: the parent its id was derived with when that is not ``parent_id``
        (a received snapshot whose parent was deleted at its source).

        Creates the task on first use and moves each tag to the new snapshot. Raises
        :class:`Conflict` if the task already has a snapshot at ``step`` and
        :class:`StorageError` if a tensor's object is no longer in the index (gc removed it
        while the caller was saving); in both cases nothing is written.
        """
        committing.check_commit(snapshot_id, task, step, tensors, tags)
        created_at = _aware(created_at, "created_at")
        try:
            with self._write(raw_integrity_errors=True) as conn:
                committing.insert_snapshot(
                    conn,
                    snapshot_id=snapshot_id,
                    task=task,
                    step=step,
                    parent_id=parent_id,
                    created_at=created_at,
                    message=message,
                    metadata=metadata,
                    logical_bytes=logical_bytes,
                    tensors=tensors,
                    tags=tags,
                    origin_parent=origin_parent,
                )
        except IntegrityError as exc:
            # A concurrent saver can win the race between our check and our insert.
            with self._read() as conn:
                raise committing.explain_rejected(conn, snapshot_id, task, step, exc) from exc

    # -- reading snapshots ----------------------------------------------------------------------

    def resolve(self, ref: Ref) -> str:
        """The id of the snapshot ``ref`` names; :class:`RefNotFound` or :class:`AmbiguousRef`."""
        with self._read() as conn:
            return resolving.resolve(conn, ref)

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        """The snapshot with that exact id, tensors in state-dict order, tags sorted."""
        with self._read() as conn:
            found = loading.load_snapshots(conn, SnapshotRow.id == snapshot_id)
            if not found:
                raise RefNotFound(f"no snapshot {snapshot_id[:12]} in the index")
            added = added_bytes_of(conn, [snapshot_id]).get(snapshot_id, 0)
        return dataclasses.replace(found[0], added_bytes=added)

    def list_snapshots(self, task: str | None = None) -> list[Snapshot]:
        """All snapshots, or those of ``task``, newest first (RefNotFound for an unknown task)."""
        with self._read() as conn:
            if task is None:
                return loading.load_snapshots(conn, None)
            task_id = resolving.require_task(conn, task)
            return loading.load_snapshots(conn, SnapshotRow.task_id == task_id)

    def unknown_origins(self, snapshot_ids: Collection[str]) -> set[str]:
        """Those of the snapshots whose parent at save is unknown (saved before revision 0005,
        their parent deleted since): their ids cannot be derived again."""
        out: set[str] = set()
        with self._read() as conn:
            for chunk in chunks(snapshot_ids):
                out.update(
                    conn.scalars(
                        select(SnapshotRow.id).where(
                            SnapshotRow.id.in_(chunk), SnapshotRow.origin_parent_id.is_(None)
                        )
                    )
                )
        return out

    def latest_snapshot_id(self, task: str) -> str | None:
        """The newest snapshot of ``task``, or None when the task has none or does not exist."""
        with self._read() as conn:
            task_id = conn.scalar(select(TaskRow.id).where(TaskRow.name == task))
            return None if task_id is None else resolving.latest(conn, task_id)

    def list_summaries(
        self,
        task: str | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        before: tuple[datetime, str] | None = None,
    ) -> list[SnapshotSummary]:
        """Snapshots newest first, of ``task`` or of all, at most ``limit`` of them, without
        their tensors (RefNotFound for an unknown task). ``before``: a keyset page, those older
        than (created_at, id); ``offset`` skips that many first."""
        with self._read() as conn:
            return listing.list_summaries(conn, task, limit=limit, offset=offset, before=before)

    def count_snapshots(self, task: str) -> int:
        """How many snapshots ``task`` has (RefNotFound for an unknown task)."""
        with self._read() as conn:
            return listing.count_snapshots(conn, task)

    def summaries_by_id(self, ids: Sequence[str]) -> dict[str, SnapshotSummary]:
        """The summaries of those ``ids`` that exist."""
        with self._read() as conn:
            return listing.summaries_by_id(conn, ids)

    def task_summaries(self) -> list[TaskSummary]:
        """Every task, sorted by name, with its snapshot count and newest snapshot."""
        with self._read() as conn:
            return listing.task_summaries(conn)

    def added_bytes(self, snapshot_ids: Collection[str]) -> dict[str, int]:
        """Per snapshot, the stored bytes of the objects it was the first to reference."""
        with self._read() as conn:
            return listing.added_bytes(conn, snapshot_ids)

    def deletion_effect(self, snapshot_id: str) -> DeletionEffect:
        """What gc could free once the snapshot is deleted, and what its deltas' dependents
        keep (the store itself is not changed)."""
        with self._read() as conn:
            return listing.deletion_effect(conn, snapshot_id)

    # -- tags and deletion ------------------------------------------------------------------------

    def set_tag(self, snapshot_id: str, tag: str) -> None:
        """Point ``tag`` of the snapshot's task at the snapshot (moving it if it exists)."""
        check_name(tag, "tag")
        with self._write() as conn:
            task_id = conn.scalar(select(SnapshotRow.task_id).where(SnapshotRow.id == snapshot_id))
            if task_id is None:
                raise RefNotFound(f"no snapshot {snapshot_id[:12]} in the index")
            committing.upsert_tag(conn, task_id, tag, snapshot_id, datetime.now(timezone.utc))

    def delete_tag(self, task: str, tag: str) -> None:
        """Remove a tag; the snapshot it pointed at stays."""
        with self._write() as conn:
            task_id = resolving.require_task(conn, task)
            deleted = conn.execute(
                delete(TagRow).where(TagRow.task_id == task_id, TagRow.name == tag)
            ).rowcount
            if not deleted:
                hint = resolving.tags_hint(conn, task_id)
                raise RefNotFound(f"task {task!r} has no tag {tag!r}; {hint}")

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
        """For each digest, the snapshots (oldest first) that need its object (directly or as a
        delta base on a chain). Every requested digest is a key."""
        with self._read() as conn:
            return reach.needed_by(conn, digests)

    def all_objects(self) -> list[tuple[ObjectRecord, datetime]]:
        """Every object row with its ``last_used_at``, by digest."""
        with self._read() as conn:
            rows = conn.execute(
                select(*object_columns(), ObjectRow.last_used_at).order_by(ObjectRow.digest)
            )
            return [(record_of(r), r.last_used_at) for r in rows]

    def reachable_digests(self) -> set[str]:
        """Digests referenced by any snapshot tensor, plus all their transitive delta bases."""
        with self._read() as conn:
            return reach.reachable(conn)

    def delete_object_if_unused(
        self, digest: str, cutoff: datetime, before_commit: Callable[[], None]
    ) -> bool:
        """Delete the object's row if it is unreferenced and unused since ``cutoff``.

        The row goes only if ``last_used_at < cutoff``, no tensor references it and no object
        uses it as a delta base. When it went, ``before_commit()`` runs inside the transaction
        (the caller deletes the blob there); if it raises, the row is kept and the error
        propagates. Returns whether the row was deleted.
        """
        stmt = reach.delete_if_unused(digest, _aware(cutoff, "cutoff"))
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
            if not reach.claim_orphan(conn, digest):
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
            with self._write() as conn:
                now = datetime.now(timezone.utc)
                if locks.try_acquire(conn, name, holder, now, stale_after):
                    return
        raise LockHeld(f"{name} lock keeps changing hands; try again")

    def release_lock(self, name: str, holder: str) -> bool:
        """Release the lock if ``holder`` still holds it; return whether it did."""
        with self._write() as conn:
            return locks.release(conn, name, holder)

    def lock_holder(self, name: str) -> str | None:
        """Who holds the named lock now, if anyone."""
        with self._read() as conn:
            return locks.holder_of(conn, name)

    def break_lock(self, name: str) -> str | None:
        """Remove the lock whoever holds it (for a dead holder); return the holder it had."""
        with self._write() as conn:
            return locks.break_lock(conn, name)

    @contextmanager
    def lock(self, name: str, holder: str, stale_after: timedelta) -> Iterator[None]:
        """Hold the named lock for the ``with`` block."""
        self.acquire_lock(name, holder, stale_after=stale_after)
        try:
            yield
        finally:
            self.release_lock(name, holder)

    # -- the store as a whole ---------------------------------------------------------------------

    def usage_rows(self) -> list[SnapshotUsageRow]:
        """Every snapshot in commit order with its tensors' ``(digest, nbytes)``."""
        with self._read() as conn:
            return loading.usage_rows(conn)

    def store_id(self) -> str | None:
        """The id of the store this index belongs to, or None if none was recorded yet."""
        with self._read() as conn:
            return meta.store_id(conn)

    def claim_store_id(self, store_id: str) -> str:
        """Record ``store_id`` unless an id is recorded already; return the id that holds."""
        with self._write() as conn:
            return meta.claim_store_id(conn, store_id)

    def holds_data(self) -> bool:
        """Whether any snapshot or object is recorded."""
        with self._read() as conn:
            return meta.holds_data(conn)

    def flag_damaged(self, problems: Mapping[str, str], now: datetime) -> None:
        """Remember objects found missing or corrupt (replacing earlier findings)."""
        if problems:
            with self._write() as conn:
                meta.flag_damaged(conn, problems, now)

    def clear_damaged(self, digests: Collection[str]) -> None:
        """Forget findings about objects that were rewritten or verified whole."""
        if digests:
            with self._write() as conn:
                meta.clear_damaged(conn, digests)

    def damaged(self, digests: Collection[str] | None = None) -> dict[str, str]:
        """Objects flagged as damaged (among ``digests``, or all), with the problem found."""
        with self._read() as conn:
            return meta.damaged(conn, digests)
