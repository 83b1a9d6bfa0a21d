"""Lookups that must stay flat as the index grows: an id prefix is resolved through the primary
key (a range), with exactly LIKE's answers, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from weightstore.errors import AmbiguousRef, RefNotFound
from weightstore.index import Index, IndexSettings
from weightstore.refs import parse_ref

# Lowercase hex, as every snapshot id is, crowded around the ranges the prefixes below cut.
IDS = ["ab00", "ab0000ff", "ab0f", "ab10", "abff", "abfff0", "ac00", "aaff", "ab0", "0000", "ffff"]


def _commit(index: Index, ids: list[str]) -> None:
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for n, sid in enumerate(ids):
        index.commit_snapshot(
            snapshot_id=sid,
            task="t",
            step=n,
            parent_id=None,
            created_at=when,
            message="",
            metadata={},
            logical_bytes=0,
            tensors=[],
            tags=[],
        )


def _answer(index: Index, prefix: str) -> str | None:
    try:
        return index.resolve(parse_ref(prefix))
    except AmbiguousRef:
        return "ambiguous"
    except RefNotFound:
        return None


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prefix=st.text(alphabet="0abf", min_size=4, max_size=6))
def test_an_id_prefix_finds_exactly_the_ids_it_starts(index: Index, prefix: str) -> None:
    if not index.tasks():
        _commit(index, IDS)
    found = [i for i in IDS if i.startswith(prefix)]
    expected = found[0] if len(found) == 1 else ("ambiguous" if found else None)
    assert _answer(index, prefix) == expected


def test_a_hex_prefix_is_searched_not_scanned_on_sqlite(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('scale') / 'index.db'}"
    with Index.open(IndexSettings(url=url)) as index:
        _commit(index, [f"{n:064x}" for n in range(50)])
        seen: list[tuple[str, Any]] = []

        def grab(conn: object, cur: object, stmt: str, params: Any, *_: object) -> None:
            seen.append((stmt, params))

        event.listen(index.engine, "before_cursor_execute", grab)
        assert index.resolve(parse_ref("0" * 62 + "31")) == f"{0x31:064x}"
        event.remove(index.engine, "before_cursor_execute", grab)
        lookups = [(s, p) for s, p in seen if "LIKE" in s]
        assert lookups
        with index.engine.connect() as conn:
            for stmt, params in lookups:
                plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + stmt, params).all()
                assert not any("SCAN snapshots" in str(row) for row in plan), plan
