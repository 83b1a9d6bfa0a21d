"""Which S3 client the S3 object backend uses, measured: boto3 vs obstore vs s3fs against one
moto server (``python -m moto.server`` in a child process on 127.0.0.1).

For each client: parallel PUT of N objects (8 threads or the client's own batching), ranged GET
of 64 KiB pieces (the codec's frame size) in parallel, and whether a conditional create
(``If-None-Match: *``) refuses an existing key. Printed side by side, as ratios to boto3.
moto holds every object in one Python process, so absolute figures are moto's; the ratios show
the client overhead. s3fs pins an older botocore than boto3's newest, so run this in a venv of
its own (docs/design.md, "S3 client"):

    python -m venv /tmp/s3bench && /tmp/s3bench/bin/pip install boto3 obstore s3fs
    /tmp/s3bench/bin/python scripts/bench_s3_clients.py \
        --server-python .venv/bin/python   # any interpreter with moto[server]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# The server helper alone, not the weightstore package: this runs in a venv without torch.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "weightstore" / "testing"))
from s3server import TEST_CREDENTIALS, moto_server

THREADS = 8
PIECE = 64 * 1024


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def make_boto3(endpoint: str, bucket: str) -> dict[str, Callable[..., Any]]:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(max_pool_connections=THREADS * 2),
    )
    s3.create_bucket(Bucket=bucket)
    pool = ThreadPoolExecutor(THREADS)

    def put_all(items: dict[str, bytes]) -> None:
        list(
            pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), items.items())
        )

    def get_ranges(key: str, starts: list[int]) -> list[bytes]:
        def one(s: int) -> bytes:
            r = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={s}-{s + PIECE - 1}")
            return bytes(r["Body"].read())

        return list(pool.map(one, starts))

    def create_if_absent(key: str) -> bool:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=b"x", IfNoneMatch="*")
        except ClientError as e:
            return e.response["Error"]["Code"] not in ("PreconditionFailed", "412")
        return True

    return {"put_all": put_all, "get_ranges": get_ranges, "create_if_absent": create_if_absent}


def make_obstore(endpoint: str, bucket: str) -> dict[str, Callable[..., Any]]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True, "pool_max_idle_per_host": str(THREADS * 2)},
    )

    async def _put_all(items: dict[str, bytes]) -> None:
        await asyncio.gather(*(obstore.put_async(store, k, v) for k, v in items.items()))

    def put_all(items: dict[str, bytes]) -> None:
        asyncio.run(_put_all(items))

    pool = ThreadPoolExecutor(THREADS)

    def get_ranges(key: str, starts: list[int]) -> list[bytes]:
        # One request per range, as boto3 and s3fs make: obstore.get_ranges would coalesce
        # nearby ranges into fewer, larger requests (listed as a row of its own).
        return list(
            pool.map(lambda s: bytes(obstore.get_range(store, key, start=s, length=PIECE)), starts)
        )

    def get_ranges_coalesced(key: str, starts: list[int]) -> list[bytes]:
        got = obstore.get_ranges(store, key, starts=starts, lengths=[PIECE] * len(starts))
        return [bytes(b) for b in got]

    def create_if_absent(key: str) -> bool:
        try:
            obstore.put(store, key, b"x", mode="create")
        except Exception as e:  # AlreadyExistsError, or the server ignoring the header
            return "exist" not in type(e).__name__.lower() and "exist" not in str(e).lower()
        return True

    return {
        "put_all": put_all,
        "get_ranges": get_ranges,
        "get_ranges_coalesced": get_ranges_coalesced,
        "create_if_absent": create_if_absent,
    }


def make_s3fs(endpoint: str, bucket: str) -> dict[str, Callable[..., Any]]:
    import s3fs

    fs = s3fs.S3FileSystem(
        endpoint_url=endpoint, client_kwargs={"region_name": "us-east-1"}, max_concurrency=THREADS
    )

    def put_all(items: dict[str, bytes]) -> None:
        fs.pipe({f"{bucket}/{k}": v for k, v in items.items()}, batch_size=THREADS)

    def get_ranges(key: str, starts: list[int]) -> list[bytes]:
        path = f"{bucket}/{key}"
        got: list[bytes] = fs.cat_ranges(
            [path] * len(starts), starts, [s + PIECE for s in starts], batch_size=THREADS
        )
        return got

    def create_if_absent(key: str) -> bool:
        try:
            fs.pipe_file(f"{bucket}/{key}", b"x", mode="create")
        except (FileExistsError, TypeError, ValueError):
            return False
        return True

    return {"put_all": put_all, "get_ranges": get_ranges, "create_if_absent": create_if_absent}


def measure(
    name: str,
    client: dict[str, Callable[..., Any]],
    big: bytes,
    payload: bytes,
    starts: list[int],
    args: argparse.Namespace,
) -> dict[str, tuple[float, float, bool]]:
    """PUT MB/s, ranged GET MB/s and whether a conditional create refuses, per variant."""
    client["put_all"]({"big": big})
    put_s = min(
        timed(
            functools.partial(
                client["put_all"], {f"o{r}-{j}": payload for j in range(args.objects)}
            )
        )
        for r in range(args.repeat)
    )
    put = args.objects * len(payload) / 1e6 / put_s
    got = client["get_ranges"]("big", starts)
    assert got == [big[s : s + PIECE] for s in starts], f"{name} returned wrong bytes"
    assert client["create_if_absent"]("fresh") is True
    refuses = client["create_if_absent"]("fresh") is False
    rows = {}
    for variant, label in (("get_ranges", name), ("get_ranges_coalesced", f"{name} (coalesced)")):
        if variant in client:
            assert client[variant]("big", starts) == got
            get_s = min(
                timed(functools.partial(client[variant], "big", starts)) for _ in range(args.repeat)
            )
            rows[label] = (put, len(starts) * PIECE / 1e6 / get_s, refuses)
    return rows


CLIENTS = {"boto3": make_boto3, "obstore": make_obstore, "s3fs": make_s3fs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=48, help="objects per PUT round")
    parser.add_argument("--size-mib", type=float, default=1.0, help="size of each object")
    parser.add_argument("--ranges", type=int, default=256, help="64 KiB ranged GETs")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--server-python", help="interpreter that has moto (default: this one)")
    args = parser.parse_args()
    os.environ.update(TEST_CREDENTIALS)
    size = int(args.size_mib * 1024 * 1024)
    rng = random.Random(0)
    payload = rng.randbytes(size)
    big = rng.randbytes(max(PIECE * 64, size))
    starts = [rng.randrange(0, len(big) - PIECE) for _ in range(args.ranges)]
    rows: dict[str, tuple[float, float, bool]] = {}
    with moto_server(python=args.server_python) as server:
        for i, (name, make) in enumerate(CLIENTS.items()):
            try:
                client = make(server.endpoint_url, f"bench-{i}")
            except ImportError as e:
                print(f"{name}: not installed ({e})")
                continue
            if name != "boto3":  # only the boto3 maker creates its bucket
                make_boto3(server.endpoint_url, f"bench-{i}")
            rows.update(measure(name, client, big, payload, starts, args))
    base = rows.get("boto3")
    print(
        f"\n{args.objects} x {args.size_mib:g} MiB parallel PUT, {args.ranges} x 64 KiB "
        f"ranged GET, moto {server.endpoint_url}\n"
    )
    print(
        "| client | PUT MB/s | vs boto3 | ranged GET MB/s | vs boto3 | If-None-Match: * refuses |"
    )
    print("|---|---|---|---|---|---|")
    for name, (put, get, refuses) in rows.items():
        rp = f"{put / base[0]:.2f}x" if base else "-"
        rg = f"{get / base[1]:.2f}x" if base else "-"
        print(f"| {name} | {put:.0f} | {rp} | {get:.0f} | {rg} | {'yes' if refuses else 'no'} |")


if __name__ == "__main__":
    main()
