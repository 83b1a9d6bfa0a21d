"""A fresh PostgreSQL schema for the benchmarks, dropped afterwards.

The server is the one the tests use: ``WEIGHTSTORE_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``, as in ``tests/conftest.py``). The index
is pointed at the schema through ``search_path`` in the connection URL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get(
    "WEIGHTSTORE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class PgSchema(NamedTuple):
    url: str  # index URL whose connections use the schema (search_path)
    name: str  # the schema's name
    admin: Engine  # autocommit engine on the server, for queries outside the schema


@contextmanager
def pg_schema(prefix: str = "ws_bench") -> Iterator[PgSchema]:
    """Create a schema named ``<prefix>_<random>``, yield it, drop it (CASCADE) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={name}"})
        try:
            yield PgSchema(url.render_as_string(hide_password=False), name, admin)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    finally:
        admin.dispose()
