"""Snapshots as files: ``GET /snapshots/{ref}/safetensors`` (ranges, ETag) and one tensor's
raw bytes, every byte verified before it is sent."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from weightstore.errors import NotFound
from weightstore.read.layout import file_layout
from weightstore.server.deps import CanRead, Store
from weightstore.server.metrics import bytes_sent
from weightstore.server.problems import problem
from weightstore.server.stream import RangeNotSatisfiable, iter_bytes, parse_range
from weightstore.types import Snapshot

router = APIRouter(prefix="/snapshots", tags=["files"])
_BINARY = {
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
}


def _etag(snap: Snapshot) -> str:
    return f'"{snap.id}"'


@router.get(
    "/{ref:path}/safetensors",
    operation_id="downloadSafetensors",
    dependencies=[CanRead],
    responses={200: _BINARY, 206: _BINARY, 304: {}, 416: {}},
)
def safetensors(
    request: Request,
    store: Store,
    ref: str,
    range_: Annotated[str | None, Header(alias="range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    """The snapshot as a standard safetensors file, built on the fly. Its strong ETag is the
    snapshot id (the content never changes); single byte ranges are served as 206."""
    snap = store.show(ref)
    etag = _etag(snap)
    file = file_layout(snap)
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "no-cache"}
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    wanted = None if if_range not in (None, etag) else range_
    try:
        span = parse_range(wanted, file.size)
    except RangeNotSatisfiable as e:
        headers["Content-Range"] = f"bytes */{file.size}"
        return problem(416, str(e), "RangeNotSatisfiable", headers)
    start, end = span if span else (0, file.size - 1)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
    headers["Content-Length"] = str(end - start + 1)
    name = snap.task.replace("/", "_") + (f"-{snap.step}" if snap.step is not None else "")
    headers["Content-Disposition"] = f'attachment; filename="{name}.safetensors"'
    if request.method == "HEAD":  # the size and validators only: nothing is decoded
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    if not file.size:
        return StreamingResponse(iter(()), status, headers, media_type="application/octet-stream")
    # Chains of the tensors this range touches, resolved once for the whole response.
    read = store.tensor_reader(file.overlapping(start, end + 1), verify=True)
    body = iter_bytes(read, file, start, end, bytes_sent(request))
    return StreamingResponse(body, status, headers, media_type="application/octet-stream")


@router.head("/{ref:path}/safetensors", include_in_schema=False, dependencies=[CanRead])
def safetensors_head(request: Request, store: Store, ref: str) -> Response:
    """What lazy readers (fsspec, HF) ask first: the file's size, ETag and range support."""
    h = request.headers
    return safetensors(
        request, store, ref, h.get("range"), h.get("if-none-match"), h.get("if-range")
    )


@router.get(
    "/{ref:path}/tensors/{name:path}",
    operation_id="downloadTensor",
    dependencies=[CanRead],
    responses={200: _BINARY},
)
def tensor(request: Request, store: Store, ref: str, name: str) -> Response:
    """One tensor's raw little-endian bytes (dtype and shape in ``X-Weightstore-*`` headers)."""
    snap = store.show(ref)
    entry = next((t for t in snap.weights if t.name == name), None)
    if entry is None:
        raise NotFound(f"snapshot {snap.short_id} has no tensor {name!r}")
    data = store.read_tensor_bytes(entry, verify=True).tobytes()
    bytes_sent(request)(len(data))
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "ETag": f'"{entry.digest}"',
            "X-Weightstore-Dtype": entry.dtype,
            "X-Weightstore-Shape": ",".join(str(d) for d in entry.shape),
            "X-Weightstore-Digest": entry.digest,
        },
    )
