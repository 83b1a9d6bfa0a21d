"""Engine creation for the index: connection settings and per-backend session setup."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import ConnectionPoolEntry

from weightstore.errors import InvalidInput

# Execution option that marks a connection as read-only so that, on SQLite, its transactions
# start with a plain (deferred) BEGIN: readers then never queue behind a writer under WAL.
READ_ONLY_OPTION = "weightstore_read_only"


@dataclass(frozen=True)
class IndexSettings:
    """Where the index lives and how to talk to it.

    ``url`` is a SQLAlchemy URL: ``sqlite:///path/to/index.db`` or
    ``postgresql+psycopg://user@host:5432/dbname``.
    """

    url: str
    busy_timeout_ms: int = 30000
    echo: bool = False


def make_engine(settings: IndexSettings) -> Engine:
    """Create (but do not connect) the engine for ``settings``."""
    try:
        url = make_url(settings.url)
        backend = url.get_backend_name()
        if backend == "sqlite":
            engine = create_engine(url, echo=settings.echo)
            _setup_sqlite(engine, settings.busy_timeout_ms, url.query.get("mode") == "ro")
            return engine
        if backend == "postgresql":
            return create_engine(url, echo=settings.echo, pool_pre_ping=True)
    except ArgumentError as exc:
        raise InvalidInput(f"invalid index URL {settings.url!r}: {exc}") from exc
    raise InvalidInput(
        f"unsupported index URL {settings.url!r}: use sqlite:///PATH or "
        "postgresql+psycopg://USER@HOST/DB"
    )


def _set_wal(cursor: Any, busy_timeout_ms: int) -> None:
    """Switch the file to WAL. Two connections opening a new file at once can both try; SQLite
    then answers "database is locked" at once, without its busy handler: retry until the
    busy timeout."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _setup_sqlite(engine: Engine, busy_timeout_ms: int, read_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # pysqlite's legacy transaction control emits a deferred BEGIN only before DML, so reads
        # and DDL run outside the transaction (no isolation, no atomic migrations). Turning it
        # off lets the "begin" listener below issue every BEGIN itself (SQLAlchemy's recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # First, so that switching a new file to WAL also waits for a concurrent opener.
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            # WAL with synchronous=NORMAL never loses or corrupts a committed transaction when a
            # process crashes (only an OS crash or power cut may drop the last commits), and it
            # lets readers proceed while one writer writes.
            # Asked first: switching is a write, which a read-only store must never attempt.
            if not read_only and cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                _set_wal(cursor, busy_timeout_ms)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front. A deferred transaction that reads first must
        # upgrade its lock when it writes, and SQLite refuses that at once with "database is
        # locked" while another writer is active; taken at BEGIN, writers queue through
        # busy_timeout instead.
        if conn.get_execution_options().get(READ_ONLY_OPTION):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
