"""A real uvicorn server on 127.0.0.1 (a free port, in a thread of the test process) over a
store on disk, with tokens of every scope; shared by the service and remote-client tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from weightstore.index.tokens import Tokens
from weightstore.server import ServerSettings, create_app
from weightstore.settings import StoreSettings
from weightstore.store import WeightStore

MAX_UPLOAD = 4 << 20


class _CountingBodies:
    """The app, counting per path the body bytes it took from the server (what it read)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.received: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:  # the app's state, routes...: the wrapped app's
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]

        async def counted() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                self.received[path] = self.received.get(path, 0) + len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@dataclass
class Served:
    url: str
    root: Path
    store: WeightStore  # a second handle on the same store, for seeding and checking
    tokens: dict[str, str]  # scope -> token
    server: uvicorn.Server
    received: dict[str, int]  # path -> body bytes the app read

    def client(self, scope: str | None = "read") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[scope]}"} if scope else {}
        return httpx.Client(base_url=f"{self.url}/v1", headers=headers, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve(root: Path, index_url: str, *, public_read: bool = False) -> Iterator[Served]:
    store = WeightStore.open(root, index_url=index_url, settings=StoreSettings(threads=2))
    tokens = {
        s: Tokens(store.index.engine).create(s, f"test {s}")[1] for s in ("read", "write", "admin")
    }
    settings = ServerSettings(
        str(root),
        index_url,
        public_read=public_read,
        max_upload_bytes=MAX_UPLOAD,
        max_object_bytes=MAX_UPLOAD * 4,
        threads=2,
    )
    port = free_port()
    app = _CountingBodies(create_app(settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", root, store, tokens, server, app.received)
    finally:
        server.should_exit = True
        thread.join(30)
        store.close()


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the server at ``url`` answers /readyz; raise if its process exits first."""
    deadline = time.monotonic() + 180  # a loaded CI machine starts processes slowly
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("weightstore serve did not start")
        time.sleep(0.2)


@contextmanager
def serve_process(root: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``weightstore serve`` in its own process (for several workers, or to kill it)."""
    port = free_port()
    cli = [sys.executable, "-m", "weightstore.cli.main", "--store", str(root), "serve"]
    proc = subprocess.Popen(
        [*cli, "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(30)


@contextmanager
def serve_cli(root: Path, *args: str, log: Path | None = None) -> Iterator[str]:
    """``weightstore serve`` as its own process over the store at ``root`` (extra ``args``),
    output to ``log``; yields its base URL once /healthz answers, and stops it afterwards."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "weightstore.cli.main",
        "--store",
        str(root),
        "serve",
        "--port",
        str(port),
        *args,
    ]
    with open(log if log is not None else os.devnull, "w") as sink:
        server = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"}
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    why = log.read_text() if log else "the server did not start"
                    raise RuntimeError(why) from None
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(60)
