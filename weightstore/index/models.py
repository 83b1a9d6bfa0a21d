"""SQLAlchemy models of the index tables: the one description the migrations must match."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from weightstore.types import ENCODINGS

# Deterministic constraint names let later migrations drop or alter constraints by name on every
# backend (SQLite would otherwise leave them unnamed and PostgreSQL would invent its own).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always reads back as a tz-aware UTC ``datetime``.

    SQLite has no time zone support and SQLAlchemy's SQLite DATETIME drops ``tzinfo``, so values
    are normalised to naive UTC there; every stored value uses one format, which keeps SQLite's
    textual comparisons (``last_used_at < :cutoff``) correct.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: weightstore stores tz-aware UTC only")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base whose metadata carries the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TaskRow(Base):
    """A named line of snapshots (a training run, a model family)."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SnapshotRow(Base):
    """One committed snapshot; its tensors live in ``snapshot_tensors``."""

    __tablename__ = "snapshots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    step: Mapped[int | None] = mapped_column(BigInteger)
    # Indexed because ON DELETE SET NULL looks children up by parent on every snapshot delete.
    parent_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("snapshots.id", ondelete="SET NULL"), index=True
    )
    # The parent the snapshot was saved against, kept when that parent is deleted (its id is
    # derived with it): the parent's id, "" for none, NULL when unknown (revision 0005).
    origin_parent_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    message: Mapped[str] = mapped_column(Text)
    # ``metadata`` is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    logical_bytes: Mapped[int] = mapped_column(BigInteger)

    # Two NULL steps never compare equal, so step-less snapshots may repeat within a task.
    __table_args__ = (
        UniqueConstraint("task_id", "step"),
        # id too: "newest first" breaks created_at ties by id, so the latest is one probe.
        Index("ix_snapshots_task_id_created_at_id", "task_id", "created_at", "id"),
        Index("ix_snapshots_created_at_id", "created_at", "id"),
    )


class ObjectRow(Base):
    """One stored object (a tensor's bytes, possibly as a delta against ``base_digest``)."""

    __tablename__ = "objects"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    raw_size: Mapped[int] = mapped_column(BigInteger)
    stored_size: Mapped[int] = mapped_column(BigInteger)
    encoding: Mapped[str] = mapped_column(String(16))
    base_digest: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("objects.digest"), index=True
    )
    chain_depth: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # BLAKE3 of the stored (encoded) bytes, once written; NULL for objects from before 0006.
    checksum: Mapped[str | None] = mapped_column(String(64))
    # codec.devhash of the raw bytes (checkable on a GPU); NULL for objects from before 0007.
    device_checksum: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint(
            "encoding IN ({})".format(", ".join(f"'{e}'" for e in ENCODINGS)), name="encoding"
        ),
    )


class TensorRow(Base):
    """One named tensor of a snapshot, pointing at the object that holds its bytes."""

    __tablename__ = "snapshot_tensors"

    snapshot_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    dtype: Mapped[str] = mapped_column(String(32))
    shape: Mapped[list[int]] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(String(64), ForeignKey("objects.digest"), index=True)
    nbytes: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("snapshot_id", "position"),)


class TagRow(Base):
    """A movable name for one snapshot of a task."""

    __tablename__ = "tags"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    # Indexed because ON DELETE CASCADE looks tags up by snapshot on every snapshot delete.
    snapshot_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("snapshots.id", ondelete="CASCADE"), index=True
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LockRow(Base):
    """An advisory, named lock held by one process (for example the gc)."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(Text)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StoreMetaRow(Base):
    """A fact about the store as a whole; ``store_id`` ties the index to its objects."""

    __tablename__ = "store_meta"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class DamagedObjectRow(Base):
    """An object ``verify`` found missing or corrupt: a save of its content rewrites it."""

    __tablename__ = "damaged_objects"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    problem: Mapped[str] = mapped_column(Text)
    found_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TokenRow(Base):
    """A bearer token of the REST service: only the SHA-256 of the secret is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (CheckConstraint("scope IN ('read', 'write', 'admin')", name="scope"),)


WEIGHTSTORE_TABLES: frozenset[str] = frozenset(Base.metadata.tables)
