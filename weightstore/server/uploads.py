"""Request bodies with a size limit: into memory (one object, a JSON body) or a temporary file
(a safetensors upload), refusing with 413 as soon as the limit is passed, with 408 when the body
stops arriving for the server's ``body_timeout`` or arrives slower than its
``min_body_rate``, and never before the caller's token is
checked."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from weightstore.errors import InvalidInput, PayloadTooLarge, RequestTimeout
from weightstore.rates import MinRate
from weightstore.server.deps import get_settings


def _declared(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise InvalidInput(f"invalid Content-Length {length[:40]!r}")
        if int(length) > limit:
            raise PayloadTooLarge(f"the body is {length} bytes, over this server's {limit}")


def _over(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body is over this server's limit of {limit} bytes")


async def _chunks(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks; :class:`RequestTimeout` when none arrives for ``body_timeout``
    seconds, or when it arrives slower than ``min_body_rate`` allows (``rates.MinRate``,
    with ``body_timeout`` as its grace). A client sending nothing, or a byte a minute, would
    otherwise hold its request for ever."""
    settings = get_settings(request)
    idle = settings.body_timeout
    loop = asyncio.get_running_loop()
    rule, received = MinRate(idle, settings.min_body_rate, loop.time()), 0
    stream = request.stream()
    while True:
        wait = min(idle, rule.left(received, loop.time()))
        try:
            if wait <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(stream.__anext__(), wait)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            if wait < idle:
                raise RequestTimeout(
                    f"the request body arrived slower than {rule.rate:g} bytes/s ({received} "
                    f"bytes in {loop.time() - rule.start:.1f} s): the request was dropped"
                ) from None
            raise RequestTimeout(
                f"no byte of the request body arrived for {idle:g} s: the request was dropped"
            ) from None
        received += len(chunk)
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes."""
    _declared(request, limit)
    parts, size = [], 0
    async for chunk in _chunks(request):
        size += len(chunk)
        if size > limit:
            raise _over(limit)
        parts.append(chunk)
    return b"".join(parts)


@asynccontextmanager
async def body_file(request: Request, limit: int, folder: Path, suffix: str) -> AsyncIterator[Path]:
    """The body streamed into a temporary file in ``folder`` (removed afterwards)."""
    _declared(request, limit)
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=suffix, dir=folder, prefix=".upload-")
    path = Path(name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as f:
            async for chunk in _chunks(request):
                size += len(chunk)
                if size > limit:
                    raise _over(limit)
                await anyio.to_thread.run_sync(f.write, chunk)
        yield path
    finally:
        path.unlink(missing_ok=True)


class GuardedBodyRoute(APIRoute):
    """A route whose declared body (JSON, parsed by FastAPI) is read only after the route's
    own dependencies (its token check) pass, and at most ``max_json_bytes`` of it.

    FastAPI reads and parses a declared body before it solves dependencies, so without this a
    caller without a token could make the server hold any amount of JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        checks = [d.dependency for d in self.dependencies if d.dependency is not None]

        async def guarded(request: Request) -> Response:
            for check in checks:
                await run_in_threadpool(check, request)
            limit = get_settings(request).max_json_bytes
            # Starlette keeps the body it read here; FastAPI's parsing then uses that copy.
            request._body = await read_body(request, limit)  # noqa: SLF001
            return await handler(request)

        return guarded
