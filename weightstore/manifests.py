"""What a snapshot is, checked the same way whichever way it enters a store.

A snapshot's id is the digest of its canonical manifest: task, step, parent, creation time,
message, metadata (compact JSON) and each tensor's name, dtype, shape and object digest. Saving
derives it; everything that receives a manifest (pull, clone, push, ``POST /v1/snapshots``, the
remote client) and ``verify`` derive it again and refuse a manifest whose id does not match, so
a manifest altered in transit or at rest cannot pass as the snapshot it names.

:func:`check_manifest` is the one validation of a manifest's content (names, dtypes, shapes,
sizes, metadata, message), the rules ``save`` applies to tensors it is given.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from weightstore.codec.digest import digest
from weightstore.dtypes import dtype_info
from weightstore.errors import InvalidInput, ManifestMismatch
from weightstore.folders import check_folder
from weightstore.inputs import (
    check_message,
    check_metadata,
    check_new_task,
    check_step,
    check_tags,
    check_tensor_name,
)
from weightstore.types import Snapshot, TensorEntry

# Snapshots saved before metadata went into ids as compact JSON used json.dumps' default
# separators; their ids are derived that way too.
_LEGACY_SEPARATORS = (", ", ": ")
_MAX_DIMS = 64


def snapshot_id(
    *,
    task: str,
    step: int | None,
    parent: str | None,
    created_at: datetime,
    message: str,
    metadata_json: str,
    tensors: Sequence[TensorEntry],
) -> str:
    """The id of the snapshot with this content (see the module docstring)."""
    return digest(
        json.dumps(
            [
                task,
                step,
                parent,
                created_at.isoformat(),
                message,
                metadata_json,
                [(t.name, t.dtype, list(t.shape), t.digest) for t in tensors],
            ],
        ).encode()
    )


def derived_ids(snap: Snapshot) -> tuple[str, str]:
    """The ids ``snap``'s content hashes to: with the metadata as compact JSON (how saves
    derive it) and as json.dumps' default form (how saves before that did)."""

    def with_separators(separators: tuple[str, str] | None) -> str:
        text = json.dumps(snap.metadata, allow_nan=False, separators=separators)
        return snapshot_id(
            task=snap.task,
            step=snap.step,
            parent=snap.origin_parent or snap.parent,
            created_at=snap.created_at,
            message=snap.message,
            metadata_json=text,
            tensors=snap.tensors,
        )

    return with_separators((",", ":")), with_separators(_LEGACY_SEPARATORS)


def check_snapshot_id(snap: Snapshot) -> None:
    """:class:`ManifestMismatch` unless ``snap``'s id is the digest of its content."""
    try:
        ids = derived_ids(snap)
    except (TypeError, ValueError) as e:
        raise ManifestMismatch(f"snapshot {snap.short_id}: its manifest is malformed: {e}") from e
    if snap.id not in ids:
        raise ManifestMismatch(
            f"snapshot {snap.short_id}: its manifest does not hash to its id (it hashes to "
            f"{ids[0][:12]}): it was altered in transit or at rest; nothing was kept"
        )


def check_manifest(snap: Snapshot) -> None:
    """:class:`InvalidInput` unless every part of the manifest is something ``save`` could
    have written: names, step, tags, message and metadata within their limits; a folder
    record that agrees with its file entries; each tensor a
    known dtype with non-negative integer dimensions whose size is its ``nbytes``."""
    check_new_task(snap.task)
    check_step(snap.step)
    check_tags(snap.tags)
    check_message(snap.message)
    check_metadata(snap.metadata)
    check_folder(snap.metadata, snap.tensors)
    seen: set[str] = set()
    for t in snap.tensors:
        check_tensor_name(t.name)
        if t.name in seen:
            raise InvalidInput(f"tensor name {t.name!r} appears twice in one snapshot")
        seen.add(t.name)
        info = dtype_info(t.dtype)
        dims: Sequence[Any] = t.shape
        if len(dims) > _MAX_DIMS or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims
        ):
            raise InvalidInput(
                f"{t.name!r}: shape {list(dims)[:8]} must be at most {_MAX_DIMS} "
                "non-negative integers"
            )
        size = math.prod(dims) * info.itemsize
        if size != t.nbytes:
            raise InvalidInput(f"{t.name!r}: {t.dtype}{list(dims)} is {size} bytes, not {t.nbytes}")
