"""Request bodies with a size limit: into memory (one object) or a temporary file (a
safetensors upload), refusing with 413 as soon as the limit is passed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import Request

from weightstore.errors import InvalidInput, PayloadTooLarge


def _declared(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise InvalidInput(f"invalid Content-Length {length[:40]!r}")
        if int(length) > limit:
            raise PayloadTooLarge(f"the body is {length} bytes, over this server's {limit}")


def _over(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body is over this server's limit of {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes."""
    _declared(request, limit)
    parts, size = [], 0
    async for chunk in request.stream():
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
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _over(limit)
                await anyio.to_thread.run_sync(f.write, chunk)
        yield path
    finally:
        path.unlink(missing_ok=True)
