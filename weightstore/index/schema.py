"""Index schema versioning: find the Alembic revision of a database, check it, upgrade it."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from weightstore.errors import SchemaOutdated, StorageError
from weightstore.index.engine import READ_ONLY_OPTION
from weightstore.index.models import WEIGHTSTORE_TABLES

# Alembic is imported where a migration or a mismatch needs it, not at start-up: opening an
# index that is already at HEAD (every command of the CLI) does without it.
if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

HEAD = "0007"
"""The schema revision this version of weightstore reads and writes."""

# Any constant works; it only has to be the same in every weightstore process so that two
# processes opening a fresh PostgreSQL index do not both try to create the tables.
_PG_SCHEMA_LOCK_KEY = 0x77_65_69_67_68_74  # "weight"


def migrations_dir() -> str:
    """Filesystem path of the Alembic script folder (installed package or source checkout)."""
    try:
        found = importlib.resources.files("weightstore_migrations")
    except ModuleNotFoundError:
        found = None
    if isinstance(found, Path) and (found / "env.py").is_file():
        return str(found)
    # Running from a source checkout without installing: migrations/ sits next to weightstore/.
    return str(Path(__file__).resolve().parents[2] / "migrations")


def alembic_config(
    connection: Connection | None = None, *, script_location: str | None = None
) -> Config:
    """An Alembic ``Config`` built in code (no alembic.ini); ``connection`` is used by env.py."""
    from alembic.config import Config

    config = Config()
    # Config options go through ConfigParser interpolation, where "%" is special.
    config.set_main_option(
        "script_location", (script_location or migrations_dir()).replace("%", "%%")
    )
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def current_revision(engine: Engine) -> str | None:
    """The revision recorded in the database, or None for an unversioned (e.g. empty) one."""
    with (
        _db_errors(engine),
        engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn,
        conn.begin(),
    ):
        return _revision(conn)


def upgrade(engine: Engine, revision: str = "head", *, script_location: str | None = None) -> None:
    """Migrate the database to ``revision`` in one transaction (DDL is transactional on both
    SQLite and PostgreSQL, so a failed migration leaves the schema as it was)."""
    from alembic import command
    from alembic.script import ScriptDirectory

    with _db_errors(engine), engine.begin() as conn:
        _lock_schema(conn)
        config = alembic_config(conn, script_location=script_location)
        _refuse_unknown(ScriptDirectory.from_config(config), conn)
        command.upgrade(config, revision)


def _refuse_unknown(script: ScriptDirectory, conn: Connection) -> None:
    """Refuse to touch a schema at a revision this weightstore does not know (written by a
    newer one): alembic would fail half-way with an untyped error."""
    from alembic.util import CommandError

    revision = _revision(conn)
    if revision is None:
        return
    try:
        known = script.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        head = script.get_current_head()
        raise SchemaOutdated(
            f"index schema is at revision {revision}, which this weightstore does not know (it "
            f"needs {head}): the index was upgraded by a newer weightstore; upgrade weightstore. "
            "Nothing was changed"
        )


def ensure_schema(engine: Engine, *, create: bool, script_location: str | None = None) -> None:
    """Make sure the database holds the schema this weightstore needs.

    An empty database is migrated to head when ``create`` is true. Any other state than head
    raises :class:`SchemaOutdated` saying which side needs upgrading. ``script_location`` is for
    tests that exercise an alternative migration history.
    """
    if script_location is None:
        with (
            _db_errors(engine),
            engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn,
            conn.begin(),
        ):
            revision = _revision(conn)
            if revision == HEAD:
                return  # the common case, decided without loading the migration scripts
            has_tables = bool(set(inspect(conn).get_table_names()) & WEIGHTSTORE_TABLES)
        if create and not has_tables and revision is None:
            with _db_errors(engine), engine.begin() as conn:
                _lock_schema(conn)
                # Another process may have created the schema since we looked.
                if _state(conn) == (False, None):
                    _create_at_head(conn)
                    return
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(script_location=script_location))
    head = script.get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    with _db_errors(engine):
        _ensure(engine, script, head, create, script_location)


def _create_at_head(conn: Connection) -> None:
    """Make an empty database's schema at HEAD from the models, and stamp it, as `alembic
    upgrade head` would leave it (tests/test_migrations.py checks the two schemas equal, every
    constraint and index by name), without loading Alembic and replaying every migration:
    most of what `weightstore init` cost."""
    from weightstore.index.models import Base

    Base.metadata.create_all(conn)
    conn.execute(
        text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": HEAD})


def _ensure(
    engine: Engine, script: ScriptDirectory, head: str, create: bool, script_location: str | None
) -> None:
    with engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn, conn.begin():
        has_tables, revision = _state(conn)
    if revision == head:
        return
    if not has_tables and revision is None and create:
        with engine.begin() as conn:
            _lock_schema(conn)
            # Another process may have created the schema since we looked.
            has_tables, revision = _state(conn)
            if not has_tables and revision is None:
                from alembic import command

                command.upgrade(alembic_config(conn, script_location=script_location), head)
                return
        if revision == head:
            return
    _raise_mismatch(script, head, has_tables, revision)


@contextmanager
def _db_errors(engine: Engine) -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise StorageError(f"cannot use the index at {where}: {exc.orig}") from exc


def _state(conn: Connection) -> tuple[bool, str | None]:
    tables = set(inspect(conn).get_table_names())
    return bool(tables & WEIGHTSTORE_TABLES), _revision(conn)


def _revision(conn: Connection) -> str | None:
    """The revision in ``alembic_version``, read as Alembic's MigrationContext reads it."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = list(conn.scalars(text("SELECT version_num FROM alembic_version")))
    if len(rows) > 1:
        # Several heads: a branched history, which weightstore never writes.
        return ",".join(sorted(rows))
    return rows[0] if rows else None


def _lock_schema(conn: Connection) -> None:
    # SQLite's BEGIN IMMEDIATE already serialises writers; PostgreSQL needs an explicit lock
    # because CREATE TABLE does not block a concurrent CREATE TABLE of the same name.
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK_KEY})


def _raise_mismatch(
    script: ScriptDirectory, head: str, has_tables: bool, revision: str | None
) -> None:
    if revision is None:
        if not has_tables:
            raise SchemaOutdated(
                "the index has no weightstore schema yet: run `weightstore db upgrade` to create it"
            )
        raise SchemaOutdated(
            "the index has weightstore tables but records no schema revision (its "
            "alembic_version table is missing or empty), so it was not created by weightstore "
            f"or was changed by hand: restore it from a backup, or, if you are sure it matches "
            f"revision {head}, record that with `alembic stamp {head}`"
        )
    from alembic.util import CommandError

    try:
        known = script.get_revision(revision) is not None
    except CommandError:
        known = False
    if known:
        raise SchemaOutdated(
            f"index schema is at revision {revision}, this weightstore needs {head}: "
            "run `weightstore db upgrade` (back up first)"
        )
    raise SchemaOutdated(
        f"index schema is at revision {revision}, which this weightstore does not know (it "
        f"needs {head}): the index was upgraded by a newer weightstore; upgrade weightstore"
    )
