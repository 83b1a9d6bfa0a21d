"""``/snapshots``: manifests, diffs, committing pushed manifests, tags and deletion."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from weightstore.forms import diff_json, snapshot_from_json, snapshot_json
from weightstore.server.deps import CanRead, CanWrite, Store
from weightstore.server.schemas import DiffOut, ManifestIn, ManifestOut
from weightstore.server.uploads import GuardedBodyRoute

router = APIRouter(prefix="/snapshots", tags=["snapshots"], route_class=GuardedBodyRoute)


@router.post(
    "",
    operation_id="commitManifest",
    response_model=ManifestOut,
    status_code=201,
    dependencies=[CanWrite],
)
def commit_manifest(store: Store, manifest: ManifestIn) -> dict[str, Any]:
    """Commit a snapshot whose objects were sent first (``PUT /objects/{digest}``)."""
    snap = store.commit_manifest(snapshot_from_json(manifest.model_dump(mode="json")))
    return snapshot_json(snap, tensors=True)


@router.get(
    "/{a:path}/diff/{b:path}",
    operation_id="diffSnapshots",
    response_model=DiffOut,
    dependencies=[CanRead],
)
def diff(store: Store, a: str, b: str) -> dict[str, Any]:
    """The diff, with both snapshots' tensor lists (the client needs nothing more)."""
    return diff_json(store.diff(a, b), tensors=True)


@router.put(
    "/{ref:path}/tags/{tag:path}",
    operation_id="setTag",
    response_model=ManifestOut,
    dependencies=[CanWrite],
)
def set_tag(store: Store, ref: str, tag: str) -> dict[str, Any]:
    """Point the tag of the snapshot's task at it (moving it if it exists)."""
    return snapshot_json(store.tag(ref, tag), tensors=True)


@router.get(
    "/{ref:path}",
    operation_id="getSnapshot",
    response_model=ManifestOut,
    dependencies=[CanRead],
)
def show(store: Store, ref: str) -> dict[str, Any]:
    return snapshot_json(store.show(ref), tensors=True)


@router.delete(
    "/{ref:path}", operation_id="deleteSnapshot", status_code=204, dependencies=[CanWrite]
)
def delete(store: Store, ref: str) -> Response:
    """Delete one snapshot; its objects stay until an admin runs gc."""
    store.delete(ref)
    return Response(status_code=204)
