"""Object-row queries over a connection, shared by the index's query modules: records, pins,
existence, the delta-chain closure, and the dialect's upsert."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, Select, case, literal, select, update

from weightstore.errors import InvalidInput, StorageError
from weightstore.index.models import ObjectRow, UTCDateTime
from weightstore.index.sql import chunks
from weightstore.types import ObjectRecord

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite


def aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be a tz-aware datetime, got naive {value!r}")
    return value.astimezone(timezone.utc)


def insert_for(conn: Connection, model: type[Any]) -> sqlite.Insert | postgresql.Insert:
    """The dialect's INSERT, which has ON CONFLICT (imported here: a SQLite store's listing
    need not load the PostgreSQL dialect)."""
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(model)
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(model)
    raise StorageError(f"unsupported index database {name!r}: use SQLite or PostgreSQL")


def not_before(now: datetime) -> ColumnElement[datetime]:
    stamp = literal(now, UTCDateTime())
    return case((ObjectRow.last_used_at < stamp, stamp), else_=ObjectRow.last_used_at)


def pin(conn: Connection, digests: Collection[str], now: datetime) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(digests):
        stmt = (
            update(ObjectRow)
            .where(ObjectRow.digest.in_(chunk))
            .values(last_used_at=not_before(now))
            .returning(ObjectRow.digest)
        )
        found.update(conn.scalars(stmt))
    return found


def object_columns() -> tuple[Any, ...]:
    return (
        ObjectRow.digest,
        ObjectRow.raw_size,
        ObjectRow.stored_size,
        ObjectRow.encoding,
        ObjectRow.base_digest,
        ObjectRow.chain_depth,
        ObjectRow.checksum,
        ObjectRow.device_checksum,
    )


def object_select() -> Select[Any]:
    return select(*object_columns())


def record_of(row: Any) -> ObjectRecord:
    return ObjectRecord(
        digest=row.digest,
        raw_size=row.raw_size,
        stored_size=row.stored_size,
        encoding=row.encoding,
        base=row.base_digest,
        chain_depth=row.chain_depth,
        checksum=row.checksum,
        device_checksum=row.device_checksum,
    )


def depth_of(rec: ObjectRecord) -> int:
    return rec.chain_depth


def existing(conn: Connection, digests: Collection[str]) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(digests):
        found.update(conn.scalars(select(ObjectRow.digest).where(ObjectRow.digest.in_(chunk))))
    return found


def closure_records(conn: Connection, digests: Collection[str]) -> dict[str, ObjectRecord]:
    """The rows of ``digests`` and of every delta base below them, transitively, in one
    recursive query per chunk (not one per chain level); UNION stops a looping chain."""
    out: dict[str, ObjectRecord] = {}
    for chunk in chunks(digests):
        seed = select(ObjectRow.digest).where(ObjectRow.digest.in_(chunk))
        chain = seed.cte("chain", recursive=True)
        below = (
            select(ObjectRow.base_digest)
            .join(chain, ObjectRow.digest == chain.c.digest)
            .where(ObjectRow.base_digest.is_not(None))
        )
        chain = chain.union(below)
        query = object_select().join(chain, ObjectRow.digest == chain.c.digest)
        for row in conn.execute(query):
            out[row.digest] = record_of(row)
    return out
