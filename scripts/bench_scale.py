"""How weightstore's costs grow with the number of snapshots, on SQLite and PostgreSQL.

For each size (1k and 10k snapshots; 100k with ``--huge``) the index is filled in bulk with
synthetic manifests (``--tensors`` tensors each, about a tenth of them new objects per snapshot,
stored as deltas of the previous version, plus unreachable objects for gc to remove), written
straight into the tables in one transaction. Then, on that index, with real objects only for the
snapshots they touch:

- ``save``: ``WeightStore.save`` of a small model with ``--tensors`` tensors (a new step);
- ``restore plan``: resolve a ref, load its manifest and every tensor's delta chain, for a step
  ref, an id prefix and a task's latest snapshot (what ``restore`` does before reading bytes);
- ``restore``: the whole ``WeightStore.restore`` of the saved model;
- ``show``: ``WeightStore.show`` of a synthetic snapshot (by step, id prefix, tag);
- ``gc``: one real gc (grace 1 h: the synthetic garbage is older), per object in the index;
- the index's size on disk.

The baseline is the smallest size: each row prints its ratio (largest / smallest). Flat means a
ratio near 1; linear in objects means gc's per-object time stays flat. Object throughput local vs
S3 (moto) is ``scripts/bench_objects.py``, run at the end unless ``--no-objects``.

    PYTHONPATH=$PWD python scripts/bench_scale.py [--sizes 1000,10000] [--huge] \\
        [--backends sqlite,postgresql] [--tensors 200]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from hashlib import sha256
from pathlib import Path
from typing import Any, cast

import torch
from _pg import pg_schema
from sqlalchemy import Engine, Table, insert, text

from weightstore import WeightStore
from weightstore.index.models import ObjectRow, SnapshotRow, TagRow, TaskRow, TensorRow
from weightstore.refs import parse_ref

TASKS = 10
CHURN = 10  # one tensor in CHURN changes per snapshot
MAX_DEPTH = 8  # a task's changed tensor is stored whole again after this many deltas
REPEAT = 5
# The same step at every size, so its delta chains are as deep at 1k as at 10k snapshots.
SOME_STEP = 50


def digest(*parts: object) -> str:
    return sha256(repr(parts).encode()).hexdigest()


@dataclass
class Synthetic:
    """What the filler wrote, for choosing refs to time."""

    snapshots: int
    objects: int
    some_id: str
    some_task: str
    some_step: int


def fill(engine: Engine, snapshots: int, tensors: int) -> Synthetic:
    """Write ``snapshots`` synthetic snapshots over TASKS tasks in one transaction."""
    t0 = datetime(2020, 1, 1, tzinfo=timezone.utc)
    per_task = snapshots // TASKS
    obj_rows: list[dict[str, Any]] = []
    snap_rows: list[dict[str, Any]] = []
    tensor_rows: list[dict[str, Any]] = []
    tag_rows: list[dict[str, Any]] = []
    nbytes = 4096

    def obj(d: str, base: str | None, depth: int, when: datetime) -> None:
        obj_rows.append(
            dict(
                digest=d,
                raw_size=nbytes,
                stored_size=nbytes // (2 if base else 1),
                encoding="delta" if base else "plain",
                base_digest=base,
                chain_depth=depth,
                created_at=when,
                last_used_at=when,
            )
        )

    some_id = ""
    for task in range(TASKS):
        current = [digest(task, n, 0) for n in range(tensors)]
        depth = [0] * tensors
        for d in current:
            obj(d, None, 0, t0)
        parent = None
        for step in range(per_task):
            when = t0 + timedelta(seconds=task * per_task + step)
            for n in range(step % CHURN, tensors, CHURN):
                new = digest(task, n, step + 1)
                deep = depth[n] < MAX_DEPTH
                depth[n] = depth[n] + 1 if deep else 0
                obj(new, current[n] if deep else None, depth[n], when)
                current[n] = new
            sid = digest("snapshot", task, step)
            snap_rows.append(
                dict(
                    id=sid,
                    task_id=task + 1,
                    step=step,
                    parent_id=parent,
                    created_at=when,
                    message="",
                    metadata={},
                    logical_bytes=tensors * nbytes,
                )
            )
            tensor_rows.extend(
                dict(
                    snapshot_id=sid,
                    name=f"layer{n}.weight",
                    position=n,
                    dtype="float32",
                    shape=[nbytes // 4],
                    digest=d,
                    nbytes=nbytes,
                )
                for n, d in enumerate(current)
            )
            if step % 100 == 0:
                tag_rows.append(
                    dict(task_id=task + 1, name=f"v{step}", snapshot_id=sid, updated_at=when)
                )
            parent = sid
            if task == TASKS // 2 and step == SOME_STEP:
                some_id = sid
    # Unreachable objects (a tenth of the reachable ones) for gc to delete.
    for g in range(len(obj_rows) // 10):
        obj(digest("garbage", g), None, 0, t0)
    with engine.begin() as conn:
        conn.execute(
            insert(TaskRow), [dict(id=t + 1, name=f"task{t}", created_at=t0) for t in range(TASKS)]
        )
        for model, rows in (
            (ObjectRow, obj_rows),
            (SnapshotRow, snap_rows),
            (TensorRow, tensor_rows),
            (TagRow, tag_rows),
        ):
            for start in range(0, len(rows), 20_000):
                conn.execute(insert(cast(Table, model.__table__)), rows[start : start + 20_000])
        if conn.dialect.name == "postgresql":
            # Identity sequences do not see explicit ids; the planner needs fresh statistics.
            conn.execute(text("SELECT setval('tasks_id_seq', (SELECT max(id) FROM tasks))"))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    return Synthetic(snapshots, len(obj_rows), some_id, f"task{TASKS // 2}", SOME_STEP)


def best(fn: Callable[[], object], repeat: int = REPEAT) -> float:
    """Median seconds of ``repeat`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def plan(store: WeightStore, ref: str) -> None:
    snap = store.index.get_snapshot(store.index.resolve(parse_ref(ref)))
    store.reader.chains({t.digest for t in snap.tensors})


def model(tensors: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"layer{n}.weight": torch.randn(1024, generator=g) for n in range(tensors)}


@contextmanager
def index_url(backend: str, tmp: Path) -> Iterator[tuple[str, Callable[[], int]]]:
    """A fresh index database and a function giving its size in bytes."""
    if backend == "sqlite":
        db = tmp / "index.db"
        # The write-ahead log holds recent pages until a checkpoint: count it too.
        wal = db.with_name(db.name + "-wal")
        yield (
            f"sqlite:///{db}",
            lambda: db.stat().st_size + (wal.stat().st_size if wal.exists() else 0),
        )
        return
    with pg_schema() as schema:

        def size() -> int:
            with schema.admin.connect() as conn:
                return int(
                    conn.scalar(
                        text(
                            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) "
                            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = :s AND c.relkind = 'r'"
                        ),
                        {"s": schema.name},
                    )
                )

        yield schema.url, size


def measure(backend: str, snapshots: int, tensors: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, index_url(backend, Path(tmp)) as (url, size):
        store = WeightStore.open(Path(tmp) / "store", index_url=url)
        try:
            t = time.perf_counter()
            syn = fill(store.index.engine, snapshots, tensors)
            fill_s = time.perf_counter() - t
            steps = iter(range(10**6))
            save_s = best(lambda: store.save("real", model(tensors, 0), step=next(steps)))
            real = store.log("real")[0].id
            some = f"{syn.some_task}@{syn.some_step}"
            out = {
                "fill s (setup)": fill_s,
                "save ms": save_s * 1e3,
                "restore plan @step ms": best(lambda: plan(store, some)) * 1e3,
                "restore plan id-prefix ms": best(lambda: plan(store, syn.some_id[:10])) * 1e3,
                "restore plan latest ms": best(lambda: plan(store, syn.some_task)) * 1e3,
                "restore (real) ms": best(lambda: store.restore(real[:12])) * 1e3,
                "show @step ms": best(lambda: store.show(some)) * 1e3,
                "show id-prefix ms": best(lambda: store.show(syn.some_id[:10])) * 1e3,
                "show :tag ms": best(lambda: store.show(f"{syn.some_task}:v0")) * 1e3,
            }
            t = time.perf_counter()
            gc = store.gc(grace_seconds=3600)
            gc_s = time.perf_counter() - t
            out["gc s"] = gc_s
            out["gc us/object"] = gc_s / syn.objects * 1e6
            out["gc removed"] = gc.objects_removed
            out["objects"] = syn.objects
            out["index MB"] = size() / 1e6
            return out
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--huge", action="store_true", help="also 100k snapshots (slow)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--tensors", type=int, default=200)
    parser.add_argument("--no-objects", action="store_true", help="skip bench_objects.py")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] + ([100_000] if args.huge else [])
    for backend in args.backends.split(","):
        results = {}
        for n in sizes:
            results[n] = measure(backend, n, args.tensors)
            print(f"# {backend} {n}: done", file=sys.stderr, flush=True)
        head = " | ".join(f"{n} snapshots" for n in sizes)
        print(f"\n## {backend}, {args.tensors} tensors per snapshot\n")
        print(f"| measure | {head} | ratio {sizes[-1]}/{sizes[0]} |")
        print("|---" * (len(sizes) + 2) + "|")
        for name in results[sizes[0]]:
            vals = [results[n][name] for n in sizes]
            ratio = vals[-1] / vals[0] if vals[0] else float("nan")
            cells = " | ".join(f"{v:.3g}" for v in vals)
            print(f"| {name} | {cells} | {ratio:.2f} |", flush=True)
    if not args.no_objects:
        bench = Path(__file__).with_name("bench_objects.py")
        subprocess.run([sys.executable, str(bench), "--objects", "32"], check=True)


if __name__ == "__main__":
    main()
