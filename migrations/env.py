"""Alembic environment of the weightstore index: runs the migrations on a connection or a URL.

weightstore itself passes an open connection in ``config.attributes["connection"]`` (see
``weightstore.index.schema``), so the migration runs inside the caller's transaction. Developers
can also use the ``alembic`` command line; the URL then comes from ``-x url=...``, the
``sqlalchemy.url`` option or the ``WEIGHTSTORE_INDEX_URL`` environment variable, e.g.::

    alembic -x url=sqlite:///runs/index.db upgrade head
    alembic -x url=sqlite:///runs/index.db revision --autogenerate -m "add foo" --rev-id 0002
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from weightstore.index.engine import IndexSettings, make_engine
from weightstore.index.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("WEIGHTSTORE_INDEX_URL")
    )
    if not url:
        raise RuntimeError(
            "no index URL: pass -x url=sqlite:///path/index.db, set sqlalchemy.url, "
            "or set WEIGHTSTORE_INDEX_URL"
        )
    return url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # make_engine applies the SQLite pragmas (foreign keys, WAL) that the schema relies on.
    engine = make_engine(IndexSettings(url=_url()))
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
