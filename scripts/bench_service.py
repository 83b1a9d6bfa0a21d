"""Service benchmark: weightstore's REST service against plain baselines, side by side.

Builds a transformer-shaped bf16/fp32 state dict of ``--size-mb`` and a fine-tuned copy (every
weight nudged by a relative 1e-3), then measures on loopback, each server a uvicorn process:

1. download: ``GET /v1/snapshots/{ref}/safetensors`` (built on the fly, every tensor decoded and
   verified) vs uvicorn serving the same exported file as a static file (Starlette
   ``StaticFiles``); MB/s, best of ``--repeat``;
2. push: bytes on the wire to send the fine-tune to a server that has the base
   (``weightstore push``: missing objects only) vs uploading its safetensors file
   (``PUT /v1/tasks/{task}/snapshots``), and the time of each;
3. latency: p50 / p95 and requests/s of ``GET /v1/snapshots/{ref}`` (a manifest) and of
   ``GET /v1/snapshots/{ref}/tensors/{name}`` (a 4 KiB tensor) with 1, 8 and 32 concurrent
   clients (an asyncio httpx load generator in this process), against ``GET /healthz`` (the
   same HTTP stack doing no store work) as the baseline.

The load generator shares the machine's cores with the server: on a small machine its figures
bound the client as much as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import torch
from bench_restore import make_weights, nudge
from safetensors.torch import save_file

from weightstore import StoreSettings, WeightStore
from weightstore.index.tokens import Tokens
from weightstore.remote import RemoteStore
from weightstore.sync import push

STATIC_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
app = Starlette(routes=[Mount("/files", StaticFiles(directory=sys.argv[1]))])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def process(args: list[str], url: str) -> Iterator[None]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{args} did not start") from None
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def weightstore_server(store: Path, token_scope: str = "write") -> Iterator[tuple[str, str]]:
    with WeightStore.open(store) as s:
        token = Tokens(s.index.engine).create(token_scope, "bench")[1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "weightstore.cli.main", "--store", str(store), "serve"]
    with process([*cli, "--port", str(port), "--public-read"], f"{url}/healthz"):
        yield url, token


def download(url: str, repeat: int) -> tuple[float, int]:
    """Best MB/s and the byte count of downloading ``url``."""
    best, size = 0.0, 0
    with httpx.Client(timeout=600) as c:
        for _ in range(repeat):
            began = time.perf_counter()
            size = 0
            with c.stream("GET", url) as r:
                r.raise_for_status()
                for chunk in r.iter_raw(1 << 20):
                    size += len(chunk)
            best = max(best, size / (time.perf_counter() - began) / 1e6)
    return best, size


async def load(url: str, clients: int, seconds: float) -> tuple[float, float, float]:
    """p50 and p95 latency (ms) and requests/s of GETs of ``url`` by ``clients`` clients."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as c:

        async def one() -> None:
            while time.perf_counter() < stop:
                began = time.perf_counter()
                r = await c.get(url)
                r.raise_for_status()
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    q = statistics.quantiles(latencies, n=100)
    return q[49] * 1e3, q[94] * 1e3, len(latencies) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=128)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    print(f"weights: {args.size_mb} MiB {args.dtype}, fine-tune: every weight nudged by 1e-3")
    base = make_weights(args.size_mb, dtype)
    tuned = nudge(base)
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        root = Path(tmp)
        settings = StoreSettings(fsync=False)
        (root / "files").mkdir()
        # The trainer's store holds the base; the server's got it by a push (same snapshot ids).
        with (
            WeightStore.open(root / "local", settings=settings) as local,
            WeightStore.open(root / "server", settings=settings) as s,
        ):
            local.save("m", base, step=0)
            push(local, s)
            s.export("m@0", root / "files" / "m.safetensors")
        save_file(tuned, str(root / "tuned.safetensors"))

        print(f"\n1. download of the base model as safetensors (best of {args.repeat})")
        with weightstore_server(root / "server") as (url, _):
            ws_rate, ws_size = download(f"{url}/v1/snapshots/m@0/safetensors", args.repeat)
        port = free_port()
        static = f"http://127.0.0.1:{port}/files/m.safetensors"
        with process([sys.executable, "-c", STATIC_APP, str(root / "files"), str(port)], static):
            st_rate, st_size = download(static, args.repeat)
        assert ws_size == st_size
        print(f"   {'static file (uvicorn StaticFiles)':<44}{st_rate:>9.0f} MB/s")
        print(f"   {'weightstore /safetensors (decoded, verified)':<44}{ws_rate:>9.0f} MB/s")
        print(f"   ratio weightstore / static: {ws_rate / st_rate:.2f}")

        print("\n2. sending the fine-tune to a server that has the base")
        shutil.copytree(root / "server", root / "server2")  # the upload's own server
        with (
            WeightStore.open(root / "local", settings=settings) as local,
            weightstore_server(root / "server") as (url, token),
            RemoteStore(url, token=token, cache_dir=root / "cache") as r,
        ):
            local.save("m", tuned, step=1)
            began = time.perf_counter()
            report = push(local, r, ["m"])
            push_s = time.perf_counter() - began
        size = (root / "tuned.safetensors").stat().st_size
        with weightstore_server(root / "server2") as (url, token):
            began = time.perf_counter()
            with open(root / "tuned.safetensors", "rb") as f:
                up = httpx.put(
                    f"{url}/v1/tasks/upload/snapshots",
                    params={"parent": "m@0"},  # the server stores it as deltas too
                    content=f,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=600,
                )
            up.raise_for_status()
            upload_s = time.perf_counter() - began
        print(f"   {'upload the safetensors file':<44}{size / 2**20:>9.1f} MiB {upload_s:>7.2f} s")
        print(
            f"   {'weightstore push (missing objects only)':<44}"
            f"{report.object_bytes / 2**20:>9.1f} MiB {push_s:>7.2f} s"
        )
        print(f"   ratio bytes push / upload: {report.object_bytes / size:.3f}")

        print(f"\n3. latency with concurrent clients ({args.seconds:.0f} s each)")
        with weightstore_server(root / "server") as (url, _):
            small = next(n for n, t in base.items() if t.nbytes <= 8192)
            for what, path in (
                ("healthz", "/healthz"),  # baseline: the HTTP stack alone, no store work
                ("manifest", "/v1/snapshots/m@0"),
                ("tensor 4K", f"/v1/snapshots/m@0/tensors/{small}"),
            ):
                for clients in (1, 8, 32):
                    p50, p95, rps = asyncio.run(load(url + path, clients, args.seconds))
                    print(
                        f"   {what:<10} {clients:>3} clients: p50 {p50:7.1f} ms  "
                        f"p95 {p95:7.1f} ms  {rps:8.0f} req/s"
                    )
    print(f"\n(cores: {os.cpu_count()}; client and servers share them)")


if __name__ == "__main__":
    main()
