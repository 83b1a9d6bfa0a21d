"""Listing cost against the number of snapshots: ``log -n 1``, ``tasks`` and ``show``.

Fills an index (SQLite file, or a fresh schema on the PostgreSQL server) with synthetic
manifests through the Index API: N snapshots of T tensors each, over 10 tasks, every snapshot
changing one tensor (so 1.1 N + T objects). Then times, in process, the listing paths the CLI
uses (:class:`weightstore.catalog.Catalog`) beside the baseline they replace: ``store.log()``
as ``log -n 1`` and ``tasks`` used it (every snapshot with every tensor row).

    python scripts/bench_listing.py --sizes 1000 10000 --backends sqlite postgresql
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

from _pg import pg_schema
from _timing import best_of
from sqlalchemy import text

from weightstore.catalog import Catalog
from weightstore.index import Index, IndexSettings
from weightstore.types import ObjectRecord, TensorEntry

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
TASKS = 10


def digest(label: object) -> str:
    return hashlib.sha256(str(label).encode()).hexdigest()


def fill(index: Index, snapshots: int, tensors: int) -> None:
    """``snapshots`` manifests; each one's tensor i % tensors is new, the rest as before."""
    current = [digest(("base", i)) for i in range(tensors)]
    index.add_objects([ObjectRecord(d, 4096, 3000, "plain", None, 0) for d in current], T0)
    for n in range(snapshots):
        slot = n % tensors
        new = digest(("snap", n))
        index.add_objects([ObjectRecord(new, 4096, 300, "delta", current[slot], 1)], T0)
        current[slot] = new
        index.commit_snapshot(
            snapshot_id=digest(("id", n)),
            task=f"task-{n % TASKS}",
            step=n,
            parent_id=None,
            created_at=T0 + timedelta(seconds=n),
            message=f"checkpoint {n}",
            metadata={"loss": 1.0 / (n + 1)},
            logical_bytes=4096 * tensors,
            tensors=[
                TensorEntry(f"layer.{i}.weight", "float32", (32, 32), d, 4096)
                for i, d in enumerate(current)
            ],
            tags=["latest"] if n % 50 == 0 else [],
        )


@contextmanager
def index_at(backend: str, folder: Path) -> Iterator[Index]:
    if backend == "sqlite":
        url = f"sqlite:///{folder / f'index-{uuid.uuid4().hex[:8]}.sqlite'}"
        with Index.open(IndexSettings(url=url)) as index:
            yield index
        return
    with pg_schema() as schema, Index.open(IndexSettings(url=schema.url)) as index:
        yield index


def _passes(backend: str, index: Index) -> Iterator[str]:
    """Measure as filled; on PostgreSQL again after ANALYZE (what autovacuum does in time),
    as the planner's statistics of a freshly filled table are stale."""
    yield backend
    if backend == "postgresql":
        with index.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        yield "pg+analyze"


def _measure(index: Index, backend: str, size: int, tensors: int, runs: int) -> None:
    catalog = Catalog(index)
    queries: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {
        "log -n 1": (partial(catalog.log, limit=1), index.list_snapshots),
        "tasks": (catalog.tasks, index.list_snapshots),
        "show": (partial(catalog.show, "task-3"), None),
    }
    for name, (new, old) in queries.items():
        new_s = best_of(new, runs)
        row = f"{backend:<11}{size:>10}{size * tensors:>12}  {name:<10}"
        if old is None:  # show reads one manifest, as it did before
            print(f"{row}{new_s * 1e3:>11.1f}{'-':>12}{'-':>10}")
            continue
        old_s = best_of(old, 1)  # loads every row: one run is enough
        print(f"{row}{new_s * 1e3:>11.1f}{old_s * 1e3:>12.1f}{old_s / new_s:>9.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--tensors", type=int, default=100)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{'backend':<11}{'snapshots':>10}{'tensor rows':>12}  {'query':<10}"
        f"{'catalog ms':>11}{'baseline ms':>12}{'speed-up':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            for size in args.sizes:
                with index_at(backend, Path(tmp)) as index:
                    start = time.perf_counter()
                    fill(index, size, args.tensors)
                    filled = time.perf_counter() - start
                    for label in _passes(backend, index):
                        _measure(index, label, size, args.tensors, args.runs)
                    print(f"  (filled in {filled:.0f} s)")
    print(
        f"catalog: best of {args.runs} runs; baseline: Index.list_snapshots(), what `log -n 1` "
        "and `tasks` read before (every snapshot with its tensor rows), one run"
    )


if __name__ == "__main__":
    main()
