"""Hugging Face Hub-compatible read routes, so ``from_pretrained``, ``snapshot_download``,
``HfFileSystem``, PEFT and sentence-transformers read a store with ``HF_ENDPOINT`` set.

- ``GET /api/models/{repo}[/revision/{rev}]``: ``ModelInfo`` (``sha``, ``siblings``, ...);
- ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``recursive``, ``expand``);
- ``POST /api/models/{repo}/paths-info/{rev}`` (form or JSON ``paths``);
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` and
  ``X-Linked-Etag`` (the file's SHA-256), ``X-Linked-Size``, ranges as 206.

Paths are parsed from the raw request path, so a revision holding '/' (sent as ``%2F``) stays
one segment. Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``, with ``X-Repo-Commit`` once the revision resolved), which the clients map to
their own error classes. A HEAD reads the index only; a GET decodes only what its range needs.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from weightstore.errors import InvalidInput
from weightstore.folders import folder_files
from weightstore.hub import (
    HubFile,
    HubNotFound,
    commit_of,
    hub_files,
    paths_info,
    resolve_revision,
    tree,
)
from weightstore.read.layout import FileLayout, file_layout, folder_file_layout
from weightstore.server.deps import CanRead, Store, require
from weightstore.server.metrics import bytes_sent
from weightstore.server.problems import problem
from weightstore.server.stream import RangeNotSatisfiable, iter_bytes, parse_range
from weightstore.store import WeightStore
from weightstore.types import Snapshot

router = APIRouter(tags=["hub"])
_KEYWORDS = ("revision", "tree", "paths-info")
_MAX_PATHS = 10_000
_MAX_FORM_BYTES = 1 << 20
_can_read = require("read")


def _segments(request: Request, prefix: str) -> list[str]:
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.decode("latin-1").split("?", 1)[0]
    rest = path[len(prefix) :] if path.startswith(prefix) else ""
    return [unquote(s) for s in rest.strip("/").split("/")] if rest.strip("/") else []


def _split(segments: list[str], keywords: tuple[str, ...]) -> tuple[str, str, str, list[str]]:
    """(repo, keyword, revision, rest) of ``repo.../keyword/rev/rest...``."""
    at = next((i for i, s in enumerate(segments) if s in keywords and i > 0), None)
    if at is None:
        return "/".join(segments), "", "", []
    rev = segments[at + 1] if at + 1 < len(segments) else ""
    return "/".join(segments[:at]), segments[at], rev, segments[at + 2 :]


def _not_found(e: HubNotFound, head: bool = False) -> Response:
    # Header values are latin-1 on the wire: names from the path are escaped into ASCII.
    message = str(e).encode("ascii", "backslashreplace").decode()[:200]
    headers = {"X-Error-Code": e.code, "X-Error-Message": message}
    if e.commit is not None:
        headers["X-Repo-Commit"] = e.commit
    if head:
        return Response(status_code=404, headers=headers)
    return JSONResponse({"error": str(e)}, 404, headers=headers)


K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """The ``limit`` values last asked for, each made once by ``make`` (outside the lock)."""

    def __init__(self, make: Callable[[K], V], limit: int) -> None:
        self._make = make
        self._known: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def __call__(self, key: K) -> V:
        with self._lock:
            if key in self._known:
                self._known.move_to_end(key)
                return self._known[key]
        value = self._make(key)
        with self._lock:
            self._known[key] = value
            while len(self._known) > self._limit:
                self._known.popitem(last=False)
        return value


def _single_file_sha256(store: WeightStore, snapshot_id: str) -> str:
    """SHA-256 of a bare-tensor snapshot's one file (the same bytes on every server: one
    layout), computed by reading it once."""
    snap = store.snapshot(snapshot_id)
    layout = file_layout(snap)
    read = store.tensor_reader(snap.weights, verify=True)
    h = hashlib.sha256()
    for piece in iter_bytes(read, layout, 0, layout.size - 1, lambda _: None):
        h.update(piece)
    return h.hexdigest()


@dataclass(frozen=True)
class _Caches:
    """The Hub routes' memory, for the server's life. Snapshots by full id: a snapshot never
    changes (its id is its content), so a HEAD costs one query, the ref's resolution (tags are
    read fresh by ``model_info``); and the SHA-256 of bare-tensor snapshots' one file."""

    snapshots: _Lru[str, Snapshot]
    digests: _Lru[str, str]

    def single_sha256(self, snap: Snapshot) -> str:
        return self.digests(snap.id)


def _state(request: Request, store: WeightStore) -> _Caches:
    """The app's caches of the Hub routes, made on first use."""
    state = request.app.state
    if getattr(state, "hub_caches", None) is None:
        state.hub_caches = _Caches(
            _Lru(store.snapshot, 256), _Lru(partial(_single_file_sha256, store), 4096)
        )
    caches: _Caches = state.hub_caches
    return caches


def _last_commit(snap: Snapshot) -> dict[str, Any]:
    return {
        "id": commit_of(snap),
        "title": snap.message or f"{snap.task} step {snap.step}",
        "date": snap.created_at.isoformat().replace("+00:00", "Z"),
    }


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


@router.get("/api/models/{rest:path}", include_in_schema=False, dependencies=[CanRead])
def api_models(request: Request, store: Store, rest: str) -> Response:
    """``model_info`` and ``list_repo_tree``."""
    repo, keyword, rev, more = _split(_segments(request, "/api/models/"), _KEYWORDS)
    if keyword == "paths-info":
        return JSONResponse({"error": "paths-info is a POST"}, 405)
    try:
        cached = _state(request, store).snapshots if keyword == "tree" else None  # info: fresh tags
        snap = resolve_revision(store, repo, rev if keyword else None, cached)
        files = hub_files(snap, _state(request, store).single_sha256)
        if keyword == "tree":
            expand = _flag(request.query_params.get("expand"))
            recursive = _flag(request.query_params.get("recursive"))
            try:
                entries = tree(
                    files, "/".join(more), recursive, _last_commit(snap) if expand else None
                )
            except HubNotFound as e:
                raise HubNotFound(e.code, str(e), commit_of(snap)) from e
            return JSONResponse(entries, headers={"X-Repo-Commit": commit_of(snap)})
    except HubNotFound as e:
        return _not_found(e)
    return JSONResponse(_model_info(request, snap, files))


def _model_info(request: Request, snap: Snapshot, files: list[HubFile]) -> dict[str, Any]:
    when = snap.created_at.isoformat().replace("+00:00", "Z")
    return {
        "_id": commit_of(snap),
        "id": snap.task,
        "modelId": snap.task,
        "author": None,
        "sha": commit_of(snap),
        "lastModified": when,
        "createdAt": when,
        "private": not request.app.state.settings.public_read,
        "disabled": False,
        "gated": False,
        "tags": list(snap.tags),
        "library_name": "transformers" if any(f.path == "config.json" for f in files) else None,
        "siblings": [f.sibling_json() for f in files],
    }


@router.post("/api/models/{rest:path}", include_in_schema=False, dependencies=[CanRead])
async def api_models_post(request: Request, store: Store, rest: str) -> Response:
    """``get_paths_info`` (what ``HfFileSystem`` asks): the body is a form or JSON."""
    repo, keyword, rev, _ = _split(_segments(request, "/api/models/"), _KEYWORDS)
    if keyword != "paths-info":
        return problem(404, f"no route {request.url.path[:200]!r}", "NotFound")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return JSONResponse({"error": "request body too large"}, 413)
    try:
        paths = _paths(bytes(body), request.headers.get("content-type", ""))
    except InvalidInput as e:
        return JSONResponse({"error": str(e)}, 400)

    def answer() -> Response:
        try:
            snap = resolve_revision(store, repo, rev, _state(request, store).snapshots)
        except HubNotFound as e:
            return _not_found(e)
        files = hub_files(snap, _state(request, store).single_sha256)
        expand = _last_commit(snap)
        return JSONResponse(
            paths_info(files, paths, expand), headers={"X-Repo-Commit": commit_of(snap)}
        )

    return await run_in_threadpool(answer)


def _paths(body: bytes, content_type: str) -> list[str]:
    if content_type.startswith("application/json"):
        try:
            value = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise InvalidInput("the body is not JSON") from e
        paths = value.get("paths") if isinstance(value, dict) else None
    else:
        try:
            paths = parse_qs(body.decode(), keep_blank_values=True).get("paths", [])
        except UnicodeDecodeError as e:
            raise InvalidInput("the form is not UTF-8") from e
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise InvalidInput("'paths' must be a list of strings")
    if len(paths) > _MAX_PATHS:
        raise InvalidInput(f"at most {_MAX_PATHS} paths")
    return paths


def _layout(store: WeightStore, snap: Snapshot, path: str) -> FileLayout:
    for f in folder_files(snap.metadata):
        if f.path == path:
            by_name = {t.name: t for t in snap.tensors}
            return folder_file_layout(snap, f, store.tensor_reader([by_name[f.entry]], verify=True))
    return file_layout(snap)


@router.api_route("/{rest:path}", methods=["GET", "HEAD"], include_in_schema=False)
def resolve(request: Request, store: Store, rest: str) -> Response:
    """``hf_hub_download``'s HEAD and GET of one file at a revision."""
    repo, keyword, rev, more = _split(_segments(request, "/"), ("resolve",))
    head = request.method == "HEAD"
    if keyword != "resolve" or not repo:
        return problem(404, f"no route {request.url.path[:200]!r}", "NotFound")
    _can_read(request)  # here, not as a dependency: other paths are a 404 to anyone
    path = "/".join(more)
    try:
        caches = _state(request, store)
        snap = resolve_revision(store, repo, rev, caches.snapshots)
        commit = commit_of(snap)
        file = next((f for f in hub_files(snap, caches.single_sha256) if f.path == path), None)
        if file is None:
            raise HubNotFound("EntryNotFound", f"{snap.task} at {rev} has no file {path!r}", commit)
    except HubNotFound as e:
        return _not_found(e, head)
    etag = f'"{file.sha256}"'
    headers = {
        "X-Repo-Commit": commit,
        "ETag": etag,
        "X-Linked-Etag": etag,
        "X-Linked-Size": str(file.size),
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-cache",
    }
    if_range = request.headers.get("if-range")
    wanted = request.headers.get("range") if if_range in (None, etag) else None
    try:
        span = parse_range(wanted, file.size)
    except RangeNotSatisfiable as e:
        headers["Content-Range"] = f"bytes */{file.size}"
        return JSONResponse({"error": str(e)}, 416, headers=headers)
    start, end = span if span else (0, file.size - 1)
    status = 206 if span else 200
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
    headers["Content-Length"] = str(end - start + 1)
    if head:
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    if not file.size:
        return Response(b"", status, headers, media_type="application/octet-stream")
    layout = _layout(store, snap, path)
    read = store.tensor_reader(layout.overlapping(start, end + 1), verify=True)
    body = iter_bytes(read, layout, start, end, bytes_sent(request))
    return StreamingResponse(body, status, headers, media_type="application/octet-stream")
