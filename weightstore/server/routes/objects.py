"""``/objects``: encoded objects as stored, for clients that decode locally, and the object
exchange of push (which are missing, send one verified)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from weightstore.server.deps import CanRead, CanWrite, Settings, Store
from weightstore.server.metrics import bytes_sent
from weightstore.server.schemas import DigestList, MissingOut, ObjectOut
from weightstore.server.uploads import GuardedBodyRoute, read_body

router = APIRouter(prefix="/objects", tags=["objects"], route_class=GuardedBodyRoute)


@router.post(
    "/missing", operation_id="missingObjects", response_model=MissingOut, dependencies=[CanRead]
)
def missing(store: Store, body: DigestList) -> dict[str, Any]:
    """Which of these digests this store lacks (so a push sends only those)."""
    return {"missing": store.missing(body.digests)}


@router.get(
    "/{digest}",
    operation_id="getObject",
    dependencies=[CanRead],
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_object(request: Request, store: Store, digest: str) -> Response:
    """The encoded object, as stored: immutable, named by the digest of its decoded bytes
    (the client decodes and checks that digest)."""
    if request.headers.get("if-none-match") == f'"{digest}"':
        return Response(status_code=304)
    blob = store.get_object(digest)
    bytes_sent(request)(len(blob))
    return Response(
        blob,
        media_type="application/octet-stream",
        headers={"ETag": f'"{digest}"', "Cache-Control": "public, max-age=31536000, immutable"},
    )


@router.put(
    "/{digest}",
    operation_id="putObject",
    response_model=ObjectOut,
    status_code=201,
    dependencies=[CanWrite],
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {}}}},
)
async def put_object(
    request: Request, store: Store, settings: Settings, digest: str
) -> dict[str, Any]:
    """Keep an encoded object once verified: its header, its delta base present here, and
    its decoded bytes hashing to ``digest``; otherwise nothing is written."""
    blob = await read_body(request, settings.max_upload_bytes)
    rec = await run_in_threadpool(
        lambda: store.put_object(digest, blob, max_raw_bytes=settings.max_object_bytes)
    )
    return {
        "digest": rec.digest,
        "raw_size": rec.raw_size,
        "stored_size": rec.stored_size,
        "encoding": rec.encoding,
        "base": rec.base,
    }
