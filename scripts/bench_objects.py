"""Object throughput of weightstore's backends, local folder vs S3 (moto), side by side.

Through the ObjectBackend interface, as a save and a restore use it: ``put_many`` of N objects,
``get`` of each (parallel, like restore's workers), and ``exists_many``. The baseline is the
local backend with fsync; S3 is moto's standalone server on 127.0.0.1 (one Python process, so
its figures are a floor, not what MinIO or AWS give).

    PYTHONPATH=$PWD python scripts/bench_objects.py [--objects 64 --size-mib 1]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

from weightstore.objects import LocalBackend, ObjectBackend
from weightstore.objects.s3 import S3Backend
from weightstore.objects.s3config import S3Settings
from weightstore.testing.s3server import TEST_CREDENTIALS, moto_server

THREADS = 8


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(backend: ObjectBackend, items: list[tuple[str, bytes]]) -> dict[str, float]:
    total = sum(len(b) for _, b in items) / 1e6
    keys = [k for k, _ in items]
    pool = ThreadPoolExecutor(THREADS)
    put_s = timed(lambda: backend.put_many(items))
    get_s = timed(lambda: list(pool.map(backend.get, keys)))
    exists_s = timed(lambda: backend.exists_many(keys))
    pool.shutdown()
    return {
        "put_many MB/s": total / put_s,
        "get MB/s": total / get_s,
        "exists_many objects/s": len(keys) / exists_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=64)
    parser.add_argument("--size-mib", type=float, default=1.0)
    args = parser.parse_args()
    rng = random.Random(0)
    size = int(args.size_mib * 1024 * 1024)
    items = [(f"{i:064x}", rng.randbytes(size)) for i in range(args.objects)]
    os.environ.update(TEST_CREDENTIALS)
    with tempfile.TemporaryDirectory() as tmp:
        local = measure(LocalBackend(Path(tmp) / "objects"), items)
    with moto_server() as server:
        boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1").create_bucket(
            Bucket="bench"
        )
        s3 = S3Backend(S3Settings("bench", "store", endpoint_url=server.endpoint_url))
        remote = measure(s3, items)
        s3.close()
    print(f"\n{args.objects} objects x {args.size_mib:g} MiB, {THREADS} threads\n")
    print("| measure | local (baseline) | S3 on moto | S3 / local |\n|---|---|---|---|")
    for name in local:
        ratio = remote[name] / local[name]
        print(f"| {name} | {local[name]:.0f} | {remote[name]:.0f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
