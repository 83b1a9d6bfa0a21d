"""Tests of the index schema's Alembic migrations and of weightstore.index.schema."""

from __future__ import annotations

import argparse
import io
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from weightstore.errors import InvalidInput, SchemaOutdated, StorageError
from weightstore.index import Index, IndexSettings
from weightstore.index.engine import make_engine
from weightstore.index.models import WEIGHTSTORE_TABLES, Base
from weightstore.index.schema import (
    HEAD,
    alembic_config,
    current_revision,
    ensure_schema,
    migrations_dir,
    upgrade,
)

# A later revision as a future weightstore would ship it, for the "schema is behind" case.
NEXT_REVISION = f'''"""Add a table (test-only revision)."""

import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("extra", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("extra")
'''


@pytest.fixture
def engine(index_url: str) -> Iterator[Engine]:
    eng = make_engine(IndexSettings(url=index_url))
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def newer_scripts(tmp_path: Path) -> str:
    """A copy of the migrations folder with one more revision, 9999."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "versions" / "9999_extra.py").write_text(NEXT_REVISION)
    return str(folder)


def tables(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names()) & WEIGHTSTORE_TABLES


def test_head_is_the_newest_script() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_current_head() == HEAD
    assert (Path(migrations_dir()) / "versions" / "0001_initial.py").is_file()


def test_migrated_schema_equals_the_models(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        # The naming convention reached the database, so later migrations can use the names.
        uniques = {u["name"] for u in inspect(conn).get_unique_constraints("snapshots")}
        assert "uq_snapshots_task_id_step" in uniques
    assert current_revision(engine) == HEAD


def _schema(engine: Engine) -> dict[str, object]:
    """Everything the database says of its tables: columns (type, nullability, default),
    keys, foreign keys with their actions, indexes, unique and check constraints, by name."""
    out: dict[str, object] = {}
    with engine.connect() as conn:
        insp = inspect(conn)
        for table in sorted(insp.get_table_names()):
            checks = insp.get_check_constraints(table)
            out[table] = {
                # By name: a migration that adds a column puts it last, the models in place.
                "columns": sorted(
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in insp.get_columns(table)
                ),
                "pk": insp.get_pk_constraint(table),
                "fks": sorted(
                    (
                        str(f["name"]),
                        tuple(f["constrained_columns"]),
                        f["referred_table"],
                        tuple(f["referred_columns"]),
                        str(sorted(f.get("options", {}).items())),
                    )
                    for f in insp.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (str(i["name"]), tuple(i["column_names"]), bool(i["unique"]))
                    for i in insp.get_indexes(table)
                ),
                "uniques": sorted(
                    (str(u["name"]), tuple(u["column_names"]))
                    for u in insp.get_unique_constraints(table)
                ),
                "checks": sorted(
                    (str(c["name"]), " ".join(str(c["sqltext"]).split())) for c in checks
                ),
            }
    return out


def test_a_new_schema_made_from_the_models_equals_the_migrated_one(engine: Engine) -> None:
    """`init` creates an empty database from the models and stamps it HEAD, without Alembic
    (index/schema.py, `_create_at_head`): it must be the schema the migrations build, to the
    last constraint name, or a later migration would fail on stores made by `init`."""
    ensure_schema(engine, create=True)  # the fast path: an empty database
    assert current_revision(engine) == HEAD
    created = _schema(engine)
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE alembic_version"))
    upgrade(engine)
    assert _schema(engine) == created
    assert set(created) == WEIGHTSTORE_TABLES | {"alembic_version"}


def test_schema_is_created_on_first_use(index_url: str) -> None:
    for _ in range(2):  # the second open finds it in place
        Index.open(IndexSettings(url=index_url)).close()
    engine = make_engine(IndexSettings(url=index_url))
    try:
        assert current_revision(engine) == HEAD
        assert tables(engine) == WEIGHTSTORE_TABLES
    finally:
        engine.dispose()


def test_concurrent_first_opens_both_succeed(index_url: str) -> None:
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def open_index() -> None:
        try:
            barrier.wait()
            Index.open(IndexSettings(url=index_url)).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_index) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []


def test_empty_database_is_not_created_without_create(engine: Engine, index_url: str) -> None:
    with pytest.raises(SchemaOutdated, match="run `weightstore db upgrade` to create it"):
        Index.open(IndexSettings(url=index_url), create=False)
    assert tables(engine) == set()
    assert current_revision(engine) is None


def test_older_schema_asks_for_db_upgrade(engine: Engine, newer_scripts: str) -> None:
    upgrade(engine)  # revision HEAD, while the "installed" weightstore needs 9999
    for create in (False, True):  # never upgraded implicitly, even with create=True
        with pytest.raises(SchemaOutdated) as info:
            ensure_schema(engine, create=create, script_location=newer_scripts)
        assert str(info.value) == (
            f"index schema is at revision {HEAD}, this weightstore needs 9999: "
            "run `weightstore db upgrade` (back up first)"
        )
    upgrade(engine, script_location=newer_scripts)
    ensure_schema(engine, create=False, script_location=newer_scripts)
    assert current_revision(engine) == "9999"
    with engine.connect() as conn:
        assert "extra" in inspect(conn).get_table_names()


def test_newer_schema_asks_to_upgrade_weightstore(engine: Engine, newer_scripts: str) -> None:
    upgrade(engine, script_location=newer_scripts)
    with pytest.raises(SchemaOutdated) as info:
        ensure_schema(engine, create=True)
    message = str(info.value)
    assert "index schema is at revision 9999" in message
    assert f"needs {HEAD}" in message
    assert "upgrade weightstore" in message
    assert "db upgrade" not in message


def test_tables_without_a_revision_are_refused(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    with pytest.raises(SchemaOutdated, match="records no schema revision"):
        ensure_schema(engine, create=True)


def test_downgrade_to_base_and_upgrade_again(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert tables(engine) == set()
    with pytest.raises(SchemaOutdated, match="weightstore db upgrade"):
        ensure_schema(engine, create=False)
    upgrade(engine)
    ensure_schema(engine, create=False)
    assert tables(engine) == WEIGHTSTORE_TABLES


def test_env_py_runs_from_a_url_like_the_alembic_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    config = alembic_config()
    config.cmd_opts = argparse.Namespace(x=[f"url={url}"])
    command.upgrade(config, "head")
    engine = make_engine(IndexSettings(url=url))
    try:
        assert current_revision(engine) == HEAD
        assert tables(engine) == WEIGHTSTORE_TABLES
    finally:
        engine.dispose()

    offline = alembic_config()
    offline.output_buffer = io.StringIO()
    offline.set_main_option("sqlalchemy.url", "postgresql+psycopg://u@h/db")
    command.upgrade(offline, "head", sql=True)
    sql = offline.output_buffer.getvalue()
    assert "CREATE TABLE snapshots" in sql
    assert "uq_snapshots_task_id_step" in sql


def test_unusable_databases_raise_weightstore_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database " * 200)
    with pytest.raises(StorageError, match="cannot use the index at sqlite:///"):
        Index.open(IndexSettings(url=f"sqlite:///{garbage}"))
    with pytest.raises(StorageError, match="cannot use the index"):
        Index.open(IndexSettings(url=f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"))
    with pytest.raises(InvalidInput, match="unsupported index URL"):
        make_engine(IndexSettings(url="mysql://user@host/db"))
    with pytest.raises(InvalidInput, match="invalid index URL"):
        make_engine(IndexSettings(url="not a url"))


def test_upgrade_from_0001_adds_identity_and_token_tables_and_keeps_the_data(
    engine: Engine,
) -> None:
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tasks (name, created_at) VALUES ('kept', '2026-01-01 00:00:00')")
        )
    assert not {"api_tokens", "store_meta", "damaged_objects"} & tables(engine)
    with pytest.raises(SchemaOutdated, match="at revision 0001, this weightstore needs 0007"):
        ensure_schema(engine, create=True)
    upgrade(engine)
    ensure_schema(engine, create=False)
    assert current_revision(engine) == HEAD == "0007"
    assert tables(engine) == WEIGHTSTORE_TABLES
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT name FROM tasks")).scalars()) == ["kept"]
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_upgrade_to_0005_keeps_each_snapshots_parent_for_its_id(engine: Engine) -> None:
    """Rows with a parent get it as their origin; rows without one (a root, or a child whose
    parent was deleted before 0005) stay unknown (NULL)."""
    upgrade(engine, "0004")
    at = "'2026-01-01 00:00:00'"
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO tasks (name, created_at) VALUES ('t', {at})"))
        for sid, parent in (("a" * 64, None), ("b" * 64, "a" * 64), ("c" * 64, None)):
            conn.execute(
                text(
                    "INSERT INTO snapshots (id, task_id, step, parent_id, created_at, message, "
                    f"metadata, logical_bytes) VALUES (:id, 1, NULL, :parent, {at}, '', '{{}}', 0)"
                ),
                {"id": sid, "parent": parent},
            )
    upgrade(engine)
    with engine.connect() as conn:
        rows: dict[str, str | None] = dict(
            conn.execute(text("SELECT id, origin_parent_id FROM snapshots")).all()
        )
    assert rows == {"a" * 64: None, "b" * 64: "a" * 64, "c" * 64: None}
