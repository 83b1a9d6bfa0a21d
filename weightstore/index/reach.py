"""Index queries of reachability for gc: which snapshots need an object, what any snapshot
reaches, and the guarded deletes of object rows and orphan blobs."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timezone

from sqlalchemy import Connection, Delete, delete, exists, select

from weightstore.index.models import ObjectRow, SnapshotRow, TensorRow
from weightstore.index.rows import insert_for
from weightstore.index.sql import chunks

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def needed_by(conn: Connection, digests: Collection[str]) -> dict[str, list[str]]:
    """For each digest, the snapshots (oldest first) that need its object.

    A snapshot needs an object when one of its tensors references it directly, or references
    an object whose chain of delta bases passes through it. Every requested digest is a key.
    """
    out: dict[str, list[str]] = {d: [] for d in digests}
    child = ObjectRow.__table__.alias("child")
    for chunk in chunks(out):
        seed = select(ObjectRow.digest.label("root"), ObjectRow.digest.label("digest")).where(
            ObjectRow.digest.in_(chunk)
        )
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


def reachable(conn: Connection) -> set[str]:
    """Digests referenced by any snapshot tensor, plus all their transitive delta bases."""
    seed = select(TensorRow.digest.label("digest"))
    reach = seed.cte("reachable", recursive=True)
    reach = reach.union(
        select(ObjectRow.base_digest).where(
            ObjectRow.digest == reach.c.digest, ObjectRow.base_digest.is_not(None)
        )
    )
    return set(conn.scalars(select(reach.c.digest)))


def delete_if_unused(digest: str, cutoff: datetime) -> Delete:
    """The delete of the object's row, if unreferenced, no delta's base and unused since
    ``cutoff``.

    One statement on purpose: on PostgreSQL it row-locks the object, so a concurrent pin (a
    saver about to reference it) waits and then sees it gone, or the delete sees the fresh
    ``last_used_at`` and keeps it.
    """
    child = ObjectRow.__table__.alias("child")
    return delete(ObjectRow).where(
        ObjectRow.digest == digest,
        ObjectRow.last_used_at < cutoff,
        ~exists().where(TensorRow.digest == digest),
        ~exists().where(child.c.base_digest == digest),
    )


def claim_orphan(conn: Connection, digest: str) -> bool:
    """Insert a placeholder row for a blob that has none, so no saver records it meanwhile;
    False when a snapshot names it or a row exists (a saver recorded it)."""
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
    return conn.execute(placeholder).first() is not None
