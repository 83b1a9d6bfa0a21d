"""A loopback HTTP proxy that injects faults between an S3 client and its server: error
answers (500, 503), connections reset before or after the server acted, delayed answers,
response bodies with a flipped byte, bodies cut off halfway (``truncate``), and bodies sent a
few bytes at a time, each piece ``delay`` seconds after the last (``trickle``: inside any
per-read timeout, for ever in total). Tests point a backend's endpoint at it.

A ``plan`` decides per request: ``plan(method, path)`` returns the :data:`Fault` to inject;
``rewrite(method, path, body)``, when given, returns the response body to relay instead (a
tampering middlebox: a changed manifest, swapped names).
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

__all__ = ["Fault", "FaultProxy", "Rewrite", "no_faults", "random_faults"]


def no_faults(method: str, path: str) -> Fault:
    """A plan that relays every request unchanged."""
    return "pass"


Fault = Literal["pass", "error", "reset", "reset_after", "delay", "corrupt", "truncate", "trickle"]
Plan = Callable[[str, str], Fault]
Rewrite = Callable[[str, str, bytes], bytes]
_TRICKLE = 64  # bytes per piece of a trickled answer, ``delay`` seconds apart
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def random_faults(
    rate: float,
    kinds: Collection[Fault] = ("error", "reset", "reset_after"),
    *,
    methods: Collection[str] = ("GET", "PUT", "POST", "HEAD", "DELETE"),
    seed: int = 0,
) -> Plan:
    """A plan injecting one of ``kinds`` into a ``rate`` fraction of requests with ``methods``."""
    rng, lock, choices = random.Random(seed), threading.Lock(), sorted(kinds)

    def plan(method: str, path: str) -> Fault:
        with lock:
            if method in methods and rng.random() < rate:
                fault: Fault = rng.choice(choices)
                return fault
        return "pass"

    return plan


class FaultProxy:
    """Relays HTTP requests to ``upstream`` (``http://host:port``), faults as ``plan`` says.

    ``counts`` tallies the faults injected. Use as a context manager, or ``start``/``stop``.
    """

    def __init__(
        self, upstream: str, plan: Plan, *, delay: float = 2.0, rewrite: Rewrite | None = None
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.plan = plan
        self.rewrite = rewrite
        self.delay = delay
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def count(self, fault: Fault) -> None:
        with self._lock:
            self.counts[fault] = self.counts.get(fault, 0) + 1

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # tests read outcomes, not access logs

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # the connection was reset on purpose
            super().finish()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reset(self) -> None:
        # SO_LINGER 0: close sends RST, as a crashed server or a broken middlebox does.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _relay(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._body()
        fault = proxy.plan(self.command, self.path)
        if fault != "pass":
            proxy.count(fault)
        if fault == "reset":
            self._reset()
            return
        if fault == "error":
            status = random.choice((500, 503))
            payload = (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>"
                + (b"InternalError" if status == 500 else b"ServiceUnavailable")
                + b"</Code><Message>injected</Message></Error>"
            )
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if fault == "delay":
            time.sleep(proxy.delay)
        status, headers, data = self._forward(proxy, body)
        if fault == "reset_after":  # the server acted, the client never hears of it
            self._reset()
            return
        if proxy.rewrite is not None and self.command != "HEAD":
            data = proxy.rewrite(self.command, self.path, data)
        if fault == "corrupt" and data and self.command == "GET":
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0x01
            data = bytes(flipped)
        self.send_response(status)
        length = len(data)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
            elif self.command == "HEAD" and name.lower() == "content-length":
                length = int(value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if fault == "truncate" and self.command == "GET" and data:
            self.wfile.write(data[: len(data) // 2])  # the promised length, half the bytes
            self.wfile.flush()
            self.close_connection = True  # an orderly close: the client sees a short body
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "trickle" and self.command == "GET":
            for at in range(0, len(data), _TRICKLE):  # each piece well inside a read timeout
                try:
                    self.wfile.write(data[at : at + _TRICKLE])
                    self.wfile.flush()
                except OSError:
                    return  # the client gave up
                time.sleep(proxy.delay)
            return
        if self.command != "HEAD":
            self.wfile.write(data)

    def _forward(self, proxy: FaultProxy, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.getheaders(), answer.read()
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay
