"""Shared fixtures: empty index databases on SQLite and on PostgreSQL, and an open Index.

PostgreSQL tests use the server at ``WEIGHTSTORE_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), each test in a fresh schema that is
dropped afterwards. An unreachable server fails those tests unless ``WEIGHTSTORE_SKIP_POSTGRES=1``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from weightstore.index import Index, IndexSettings


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``gpu`` tests where no CUDA device is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


POSTGRES_URL = os.environ.get(
    "WEIGHTSTORE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
INDEX_BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An autocommit engine on the test PostgreSQL server, for creating and dropping schemas."""
    if os.environ.get("WEIGHTSTORE_SKIP_POSTGRES") == "1":
        pytest.skip("PostgreSQL tests skipped: WEIGHTSTORE_SKIP_POSTGRES=1")
    engine = create_engine(
        POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        pytest.fail(
            f"PostgreSQL at {POSTGRES_URL} is unreachable ({exc}); start it, point "
            "WEIGHTSTORE_TEST_POSTGRES_URL at one, or set WEIGHTSTORE_SKIP_POSTGRES=1",
            pytrace=False,
        )
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_admin: Engine) -> Iterator[str]:
    """URL of an empty PostgreSQL schema (via search_path) that lives for one test."""
    schema = f"ws_test_{uuid.uuid4().hex[:16]}"
    with postgres_admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    # application_name lets the teardown find connections a failed test leaked.
    url = make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": schema, "connect_timeout": "5"}
    )
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with postgres_admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": schema},
            )
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=INDEX_BACKENDS)
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty index database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def index(index_url: str) -> Iterator[Index]:
    """An open index with the current schema, once per backend."""
    idx = Index.open(IndexSettings(url=index_url))
    try:
        yield idx
    finally:
        idx.close()


# ----------------------------------------------------------------------------------- S3 (moto)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of moto's standalone S3 server on 127.0.0.1, one for the session.

    Fails when moto is not installed (the ``test`` extra has it) unless WEIGHTSTORE_SKIP_S3=1.
    """
    if os.environ.get("WEIGHTSTORE_SKIP_S3") == "1":
        pytest.skip("S3 tests skipped: WEIGHTSTORE_SKIP_S3=1")
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        pytest.fail(
            f"S3 tests need boto3 and moto[server] ({exc}): pip install -e '.[test]', or set "
            "WEIGHTSTORE_SKIP_S3=1",
            pytrace=False,
        )
    from weightstore.testing.s3server import TEST_CREDENTIALS, moto_server

    saved = {k: os.environ.get(k) for k in TEST_CREDENTIALS}
    os.environ.update(TEST_CREDENTIALS)  # clients in this process must never find real ones
    try:
        with moto_server() as server:
            yield server.endpoint_url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_url(s3_endpoint: str) -> str:
    """``s3://bucket/prefix`` of a fresh, empty bucket on the moto server."""
    import boto3

    bucket = f"ws-test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    return f"s3://{bucket}/store"
