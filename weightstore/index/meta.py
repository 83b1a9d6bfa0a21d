"""Index queries about the store as a whole: its identity and the objects verify found damaged."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime

from sqlalchemy import Connection, delete, exists, insert, select

from weightstore.index.models import DamagedObjectRow, ObjectRow, SnapshotRow, StoreMetaRow
from weightstore.index.sql import chunks

STORE_ID_KEY = "store_id"


def store_id(conn: Connection) -> str | None:
    """The id of the store this index belongs to, or None if none was recorded yet."""
    return conn.scalar(select(StoreMetaRow.value).where(StoreMetaRow.key == STORE_ID_KEY))


def claim_store_id(conn: Connection, store_id: str) -> str:
    """Record ``store_id`` unless an id is recorded already; return the id that holds."""
    current = conn.scalar(select(StoreMetaRow.value).where(StoreMetaRow.key == STORE_ID_KEY))
    if current is not None:
        return current
    conn.execute(insert(StoreMetaRow).values(key=STORE_ID_KEY, value=store_id))
    return store_id


def holds_data(conn: Connection) -> bool:
    """Whether any snapshot or object is recorded."""
    return bool(
        conn.scalar(select(exists().select_from(SnapshotRow)))
        or conn.scalar(select(exists().select_from(ObjectRow)))
    )


def flag_damaged(conn: Connection, problems: Mapping[str, str], now: datetime) -> None:
    """Remember objects found missing or corrupt (replacing earlier findings)."""
    if not problems:
        return
    for chunk in chunks(problems):
        conn.execute(delete(DamagedObjectRow).where(DamagedObjectRow.digest.in_(chunk)))
        conn.execute(
            insert(DamagedObjectRow),
            [{"digest": d, "problem": problems[d], "found_at": now} for d in chunk],
        )


def clear_damaged(conn: Connection, digests: Collection[str]) -> None:
    """Forget findings about objects that were rewritten or verified whole."""
    if not digests:
        return
    for chunk in chunks(digests):
        conn.execute(delete(DamagedObjectRow).where(DamagedObjectRow.digest.in_(chunk)))


def damaged(conn: Connection, digests: Collection[str] | None = None) -> dict[str, str]:
    """Objects flagged as damaged (among ``digests``, or all), with the problem found."""
    if digests is None:
        rows = conn.execute(select(DamagedObjectRow.digest, DamagedObjectRow.problem))
        return {d: p for d, p in rows}
    out: dict[str, str] = {}
    for chunk in chunks(digests):
        query = select(DamagedObjectRow.digest, DamagedObjectRow.problem).where(
            DamagedObjectRow.digest.in_(chunk)
        )
        out.update({d: p for d, p in conn.execute(query)})
    return out
