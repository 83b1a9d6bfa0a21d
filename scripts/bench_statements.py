"""SQL statements per operation on SQLite and PostgreSQL (transaction control not counted):
save of 50 changed tensors, restore, export, the /safetensors download, and a push of 200
objects, on 5 snapshots of 50 tensors of 64x64 fp32, the newest 4 deltas deep; and the wall
time of export and download (best of 5, milliseconds).

    python scripts/bench_statements.py [--postgres URL]

Run it from a checkout: it serves the store with tests/served.py (uvicorn on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from served import serve
from test_statement_counts import app_store, counted, weights

from weightstore.remote import RemoteStore
from weightstore.settings import StoreSettings
from weightstore.store import WeightStore
from weightstore.sync import push


def best_ms(fn: Callable[[], object], runs: int = 5) -> int:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(min(times) * 1e3)


def measure(tmp: Path, index_url: str, push_url: str) -> dict[str, int]:
    out: dict[str, int] = {}
    store = WeightStore.open(tmp / "s", index_url=index_url, settings=StoreSettings(threads=2))
    for step in range(4):
        store.save("t", weights(step), step=step)
    with counted(store.index.engine) as seen:
        store.save("t", weights(4), step=4)
    out["save"] = len(seen)
    with counted(store.index.engine) as seen:
        store.restore("t")
    out["restore"] = len(seen)
    with counted(store.index.engine) as seen:
        store.export("t", tmp / "x.safetensors")
    out["export"] = len(seen)
    out["export ms"] = best_ms(lambda: store.export("t", tmp / "x.safetensors", overwrite=True))
    store.close()
    with serve(tmp / "s", index_url) as served, served.client() as http:
        http.get("/tasks")
        with counted(app_store(served).index.engine) as seen:
            http.get("/snapshots/t/safetensors").raise_for_status()
        out["download"] = len(seen)
        out["download ms"] = best_ms(
            lambda: http.get("/snapshots/t/safetensors").raise_for_status()
        )
    source = WeightStore.open(tmp / "src", settings=StoreSettings(threads=2))
    for step in range(4):
        source.save("t", weights(step), step=step)
    WeightStore.open(tmp / "dst", index_url=push_url).close()
    with (
        serve(tmp / "dst", push_url) as served,
        RemoteStore(served.url, token=served.tokens["write"], cache_dir=tmp / "c") as r,
        counted(source.index.engine) as a,
        counted(app_store(served).index.engine) as b,
    ):
        report = push(source, r)
    out["push objects"] = report.objects
    out["push, at the source"] = len(a)
    out["push, at the receiver"] = len(b)
    source.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    schemas = [f"ws_bench_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with admin.connect() as conn:
        for s in schemas:
            conn.execute(text(f'CREATE SCHEMA "{s}"'))
    try:
        pg = [f"{args.postgres}?options=-csearch_path%3D{s}" for s in schemas]
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            lite = measure(Path(a), f"sqlite:///{a}/s.db", f"sqlite:///{a}/dst.db")
            post = measure(Path(b), pg[0], pg[1])
    finally:
        with admin.connect() as conn:
            for s in schemas:
                conn.execute(text(f'DROP SCHEMA "{s}" CASCADE'))
        admin.dispose()
    print(f"{'operation':<24}{'SQLite':>8}{'PostgreSQL':>12}")
    for key in lite:
        print(f"{key:<24}{lite[key]:>8}{post[key]:>12}")


if __name__ == "__main__":
    main()
