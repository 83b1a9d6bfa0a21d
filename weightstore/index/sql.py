"""Small SQL helpers shared by the index's query modules."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

# Keeps every IN (...) list far below SQLite's and PostgreSQL's bound-parameter limits.
CHUNK = 500


def chunks(items: Iterable[str]) -> Iterator[list[str]]:
    """``items`` without repeats, sorted, in lists of at most :data:`CHUNK`."""
    # Sorted so that concurrent writers touch rows in one order (fewer deadlocks on PostgreSQL).
    ordered = sorted(set(items))
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]
