"""Stalled and excess clients are bounded (issue 17, item 4): a real ``weightstore serve``
process with a short ``--header-timeout`` and a small ``--max-connections``. Half-sent requests
are closed once the timeout passes; connections beyond the limit are closed as they come; a
slow request already under way is never cut; and the service keeps answering throughout."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from served import Served, serve, serve_cli

from weightstore import WeightStore


def _closed(s: socket.socket, wait: float) -> bool:
    """Whether the server closed ``s`` within ``wait`` seconds."""
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.mark.parametrize("workers", [1, 2])
def test_stalled_and_excess_connections_are_closed(tmp_path: Path, workers: int) -> None:
    root = tmp_path / "store"
    WeightStore.open(root).close()
    with WeightStore.open(root) as store:
        store.save("t", {"w": torch.randn(4, 4)}, step=1)
    args = ["--header-timeout", "1.5", "--max-connections", "40", "--workers", str(workers)]
    # Sockets close before the server stops (it waits for open connections).
    with serve_cli(root, *args, "--public-read") as base, contextlib.ExitStack() as opened:
        port = int(base.rsplit(":", 1)[1])
        # A slow request under way (its head sent, its body trickling in) is not cut.
        body = b'{"digests": ["' + b"0" * 64 + b'"]}'
        slow = socket.create_connection(("127.0.0.1", port))
        opened.callback(slow.close)
        slow.sendall(
            b"POST /v1/objects/missing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        stalled = []
        for _ in range(30 if workers == 1 else 20):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /v1/tasks HTTP/1.1\r\nHost: x\r\n")  # never finished
            stalled.append(s)
        for s in stalled:
            opened.callback(s.close)
        # Beyond the limit a connection is closed as it is accepted (per worker process).
        extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(60)]
        for s in extra:
            opened.callback(s.close)
        assert sum(_closed(s, 1.0) for s in extra) >= 60 - 40 * workers + 20
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        time.sleep(2.5)  # past the header timeout
        assert all(_closed(s, 2.0) for s in stalled)
        slow.sendall(body)  # the body, late
        slow.settimeout(10)
        answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
        assert httpx.get(f"{base}/v1/tasks", timeout=10).status_code == 200


@contextlib.contextmanager
def serving(tmp_path: Path, **settings: float) -> Iterator[Served]:
    """A served store (in this process) whose server settings take ``settings``."""
    with serve(tmp_path / "server", f"sqlite:///{tmp_path / 'index.sqlite'}") as served:
        app: Any = served.server.config.app
        app.state.settings = dataclasses.replace(app.state.settings, **settings)
        yield served


def test_a_body_that_stops_arriving_is_dropped_with_408_and_stores_nothing(
    tmp_path: Path,
) -> None:
    with serving(tmp_path, body_timeout=1.0, min_body_rate=0) as served:
        host, port = served.url.removeprefix("http://").split(":")
        before = sorted(p.name for p in (served.root / "objects").rglob("*") if p.is_file())
        answers = []
        for path in ("/v1/objects/" + "ab" * 32, "/v1/tasks/t/snapshots", "/v1/objects/missing"):
            with socket.create_connection((host, int(port)), timeout=30) as s:
                method = "POST" if path.endswith("missing") else "PUT"
                s.sendall(
                    f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                    f"Authorization: Bearer {served.tokens['write']}\r\n\r\n".encode()
                    + b"x" * 10  # then nothing more
                )
                start = time.monotonic()
                answers.append((s.recv(4096), time.monotonic() - start))
        for answer, waited in answers:
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert waited < 10
        after = sorted(p.name for p in (served.root / "objects").rglob("*") if p.is_file())
        assert after == before and served.store.log() == []
        uploads = served.root / ".uploads"
        assert not uploads.exists() or not any(uploads.iterdir())  # the spooled part is gone
        # A body that keeps coming, however slowly, is read.
        body = b'{"digests": ["' + b"0" * 64 + b'"]}'
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(
                f"POST /v1/objects/missing HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                f"Content-Type: application/json\r\n"
                f"Authorization: Bearer {served.tokens['read']}\r\n\r\n".encode()
            )
            for i in range(0, len(body), 20):
                s.sendall(body[i : i + 20])
                time.sleep(0.4)
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")


def test_a_body_trickling_below_the_minimum_rate_is_dropped_and_a_faster_one_read(
    tmp_path: Path,
) -> None:
    """Each byte comes well inside the body timeout, so only the rate rule can drop it."""
    with serving(tmp_path, body_timeout=1.0, min_body_rate=100) as served:
        host, port = served.url.removeprefix("http://").split(":")

        def send(path: str, body: bytes, piece: int, pause: float) -> bytes:
            with socket.create_connection((host, int(port)), timeout=30) as s:
                s.sendall(
                    f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                    f"Authorization: Bearer {served.tokens['write']}\r\n\r\n".encode()
                )
                s.setblocking(False)
                answer = b""
                for i in range(0, len(body), piece):
                    try:
                        s.sendall(body[i : i + piece])
                        answer = s.recv(4096)
                    except (BlockingIOError, ConnectionError):
                        pass
                    if answer:
                        break
                    time.sleep(pause)
                s.setblocking(True)
                return answer or s.recv(4096)

        def objects() -> list[str]:
            return sorted(p.name for p in (served.root / "objects").rglob("*") if p.is_file())

        before = objects()
        slow = send("/v1/objects/" + "ab" * 32, b"x" * 1000, 4, 0.2)  # 20 bytes/s
        assert slow.startswith(b"HTTP/1.1 408 "), slow[:100]
        assert b"slower than 100 bytes/s" in slow
        assert objects() == before
        uploads = served.root / ".uploads"
        assert not uploads.exists() or not any(uploads.iterdir())
        # 400 bytes/s for 2.5 s: past the body timeout, above the rate; read (and refused
        # on its merits: the bytes are no object, which proves the body arrived whole).
        fast = send("/v1/objects/" + "ab" * 32, b"x" * 1000, 40, 0.1)
        assert not fast.startswith(b"HTTP/1.1 408 "), fast[:100]
