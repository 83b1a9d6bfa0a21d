"""The JSON forms of the results, one contract for the CLI's ``--json`` and the REST API.

Keys are stable, datetimes are ISO 8601 with their UTC offset, byte counts are plain integers and
ids are full length. The ``*_from_json`` functions are the inverses the HTTP client uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from weightstore.types import (
    Diff,
    GcResult,
    Snapshot,
    SnapshotSummary,
    StoreStats,
    TaskSummary,
    TensorChange,
    TensorEntry,
    UsageRow,
    VerifyResult,
)


def tensor_json(t: TensorEntry) -> dict[str, Any]:
    return {
        "name": t.name,
        "dtype": t.dtype,
        "shape": list(t.shape),
        "nbytes": t.nbytes,
        "digest": t.digest,
    }


def snapshot_json(s: Snapshot | SnapshotSummary, *, tensors: bool = False) -> dict[str, Any]:
    """A snapshot, or a listing's summary of one (``tensors`` then has nothing to add)."""
    count = s.tensor_count if isinstance(s, SnapshotSummary) else len(s.weights)
    out: dict[str, Any] = {
        "id": s.id,
        "short_id": s.short_id,
        "task": s.task,
        "step": s.step,
        "parent": s.parent,
        "origin_parent": s.origin_parent,
        "created_at": s.created_at.isoformat(),
        "message": s.message,
        "metadata": s.metadata,
        "tags": list(s.tags),
        "tensor_count": count,
        "logical_bytes": s.logical_bytes,
        "added_bytes": s.added_bytes,
    }
    if tensors and isinstance(s, Snapshot):
        out["tensors"] = [tensor_json(t) for t in s.tensors]
    return out


def tasks_json(tasks: Iterable[TaskSummary]) -> list[dict[str, Any]]:
    """Per task: snapshot count and its latest snapshot (None for a task without any)."""
    return [
        {
            "task": t.task,
            "snapshots": t.snapshots,
            "latest": None if t.latest is None else snapshot_json(t.latest),
        }
        for t in tasks
    ]


def unchanged_bytes(d: Diff) -> int:
    keep = set(d.unchanged)
    return sum(t.nbytes for t in d.b.tensors if t.name in keep)


def diff_json(d: Diff, *, tensors: bool = False) -> dict[str, Any]:
    """``tensors``: the two snapshots with their tensor lists (the service sends them, so
    that a client rebuilds the whole :class:`Diff` from one response)."""
    return {
        "a": snapshot_json(d.a, tensors=tensors),
        "b": snapshot_json(d.b, tensors=tensors),
        "added": [tensor_json(t) for t in d.added],
        "removed": [tensor_json(t) for t in d.removed],
        "changed": [
            {
                "name": c.name,
                "old": tensor_json(c.old),
                "new": tensor_json(c.new),
                "dtype_changed": c.old.dtype != c.new.dtype,
                "shape_changed": c.old.shape != c.new.shape,
            }
            for c in d.changed
        ],
        "unchanged": list(d.unchanged),
        "unchanged_count": len(d.unchanged),
        "unchanged_bytes": unchanged_bytes(d),
    }


def gc_json(r: GcResult) -> dict[str, Any]:
    return {
        "dry_run": r.dry_run,
        "objects_removed": r.objects_removed,
        "bytes_freed": r.bytes_freed,
        "objects_spared": r.objects_spared,
        "objects_kept": r.objects_kept,
    }


def verify_json(r: VerifyResult) -> dict[str, Any]:
    return {
        "ok": r.ok,
        "objects_checked": r.objects_checked,
        "bytes_checked": r.bytes_checked,
        "stored_bytes_checked": r.stored_bytes_checked,
        "device_checksums_recorded": r.device_checksums_recorded,
        "problems": [
            {"object": p.digest, "problem": p.problem, "snapshots": list(p.snapshots)}
            for p in r.problems
        ],
    }


def ratio(row: UsageRow) -> float:
    return round(row.ratio, 4)


def usage_json(row: UsageRow) -> dict[str, Any]:
    return {
        "task": row.task,
        "snapshots": row.snapshots,
        "logical_bytes": row.logical_bytes,
        "stored_bytes": row.stored_bytes,
        "ratio": ratio(row),
        "saved_by_dedup": row.saved_by_dedup,
        "saved_by_delta": row.saved_by_delta,
        "saved_by_compression": row.saved_by_compression,
    }


def stats_json(s: StoreStats) -> dict[str, Any]:
    return {
        "tasks": [usage_json(r) for r in s.tasks],
        "total": usage_json(s.total),
        "snapshots": [
            {
                "id": u.id,
                "task": u.task,
                "step": u.step,
                "created_at": u.created_at.isoformat(),
                "logical_bytes": u.logical_bytes,
                "stored_bytes": u.stored_bytes,
            }
            for u in s.snapshots
        ],
        "objects": s.objects,
        "objects_by_encoding": dict(sorted(s.objects_by_encoding.items())),
        "kept_bases": {"objects": s.kept_base_objects, "stored_bytes": s.kept_base_bytes},
    }


def tensor_from_json(d: dict[str, Any]) -> TensorEntry:
    return TensorEntry(
        str(d["name"]),
        str(d["dtype"]),
        tuple(int(x) for x in d["shape"]),
        str(d["digest"]),
        int(d["nbytes"]),
    )


def snapshot_from_json(d: dict[str, Any]) -> Snapshot:
    """The snapshot of :func:`snapshot_json` (with ``tensors``; without, it has none)."""
    return Snapshot(
        id=str(d["id"]),
        task=str(d["task"]),
        step=None if d["step"] is None else int(d["step"]),
        parent=d["parent"],
        # Absent from the manifests of servers before it existed: their parent is the origin.
        origin_parent=d.get("origin_parent") or d["parent"],
        created_at=datetime.fromisoformat(d["created_at"]),
        message=str(d["message"]),
        metadata=dict(d["metadata"]),
        tags=tuple(d["tags"]),
        logical_bytes=int(d["logical_bytes"]),
        tensors=tuple(tensor_from_json(t) for t in d.get("tensors", ())),
        added_bytes=int(d.get("added_bytes", 0)),
    )


def diff_from_json(d: dict[str, Any]) -> Diff:
    """The diff of :func:`diff_json` made with ``tensors`` (its snapshots in full)."""
    return Diff(
        snapshot_from_json(d["a"]),
        snapshot_from_json(d["b"]),
        added=tuple(tensor_from_json(t) for t in d["added"]),
        removed=tuple(tensor_from_json(t) for t in d["removed"]),
        changed=tuple(
            TensorChange(c["name"], tensor_from_json(c["old"]), tensor_from_json(c["new"]))
            for c in d["changed"]
        ),
        unchanged=tuple(d["unchanged"]),
    )


#: Snapshot metadata key holding the ``__metadata__`` of the safetensors file it was saved from.
SOURCE_METADATA = "safetensors.metadata"


def export_metadata(snap: Snapshot) -> dict[str, str]:
    """The ``__metadata__`` of a snapshot exported as safetensors (export, the service, the
    client: one form, so their files are equal byte for byte): the source file's, if the
    snapshot was saved from one, then weightstore's own keys."""
    source = snap.metadata.get(SOURCE_METADATA)
    meta = {str(k): str(v) for k, v in source.items()} if isinstance(source, dict) else {}
    meta.update({"weightstore.snapshot": snap.id, "weightstore.task": snap.task})
    if snap.step is not None:
        meta["weightstore.step"] = str(snap.step)
    return meta
