"""Encoded objects between stores: which ones a store lacks, and taking one in, verified.

What push, pull and the service's ``PUT /objects/{digest}`` share. An object arriving from
elsewhere is trusted for nothing: its header is checked, its delta base must be here already,
and it is decoded through its chain and must hash to its name before it is kept. Kept objects
follow the store's write order: the index row first (it pins the object against gc), then the
blob, durably.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime, timezone

from weightstore.codec import Header, read_header
from weightstore.codec.digest import digest as blob_digest
from weightstore.codec.format import DELTAS
from weightstore.dtypes import dtype_info
from weightstore.errors import (
    Conflict,
    CorruptFile,
    CorruptObject,
    InvalidInput,
    ObjectNotFound,
    ObjectsMissing,
    RefNotFound,
)
from weightstore.index import Index
from weightstore.manifests import check_manifest, check_snapshot_id
from weightstore.objects import ObjectBackend
from weightstore.objects.base import validate_key
from weightstore.read import ObjectReader, walk_chains
from weightstore.refs import check_name
from weightstore.types import ObjectRecord, Snapshot

DIGEST_CHARS = frozenset("0123456789abcdef")


def check_digest(text: str) -> str:
    """``text`` if it is a full object name (64 lowercase hex digits), else InvalidInput."""
    if len(text) != 64 or not set(text) <= DIGEST_CHARS:
        raise InvalidInput(f"invalid object digest {text[:80]!r}: expected 64 lowercase hex")
    return validate_key(text)


def missing_objects(index: Index, objects: ObjectBackend, digests: Iterable[str]) -> list[str]:
    """Those of ``digests`` the store cannot serve (no index row or no blob), in given order:
    one index query per chunk and one batched existence check (a listing, not a request per
    object, on S3)."""
    wanted = list(dict.fromkeys(check_digest(d) for d in digests))
    rows = index.get_objects(wanted)
    present = objects.exists_many([d for d in wanted if d in rows])
    return [d for d in wanted if d not in present]


def receive_object(
    index: Index,
    objects: ObjectBackend,
    reader: ObjectReader,
    digest: str,
    blob: bytes,
    *,
    max_raw_bytes: int,
) -> ObjectRecord:
    """Verify an encoded object named ``digest`` and keep it; return its record.

    Raises :class:`CorruptFile` (bytes that do not decode to ``digest``, a damaged header),
    :class:`InvalidInput` (a delta whose base is not here, a raw size over ``max_raw_bytes``)
    or :class:`Conflict`; in every case nothing is written.
    """
    check_digest(digest)
    try:
        header: Header | None = read_header(blob, digest)
    except CorruptObject as e:
        header, bad_header = None, e
    base = header.base if header is not None and header.encoding in DELTAS else None
    # The object's row and its base's whole chain in one query.
    rows = index.get_closure([digest] if base is None else [digest, base])
    if digest in rows and objects.exists(digest):
        return rows[digest]  # content-addressed: what is here is these bytes already
    if header is None:
        raise CorruptFile(f"received object: {bad_header}") from bad_header
    if header.raw_len > max_raw_bytes:
        raise InvalidInput(
            f"object {digest[:12]} decodes to {header.raw_len} bytes, over the "
            f"{max_raw_bytes}-byte limit"
        )
    chain: list[ObjectRecord] = []
    if base is not None:
        if base not in rows or not objects.exists(base):
            raise InvalidInput(
                f"object {digest[:12]} is a delta against {base}, which is not stored "
                "here: send the base first"
            )
        chain = walk_chains(lambda ds: {d: rows[d] for d in ds if d in rows}, [base])[base]
    try:
        device_checksum = reader.decode_incoming(digest, blob, chain)
    except CorruptObject as e:
        # A bad upload is the sender's fault (400); a bad base here would be ours, but the
        # base was verified when it was kept, and verify() checks it again.
        raise CorruptFile(f"received object does not decode to its name: {e}") from e
    depth = chain[0].chain_depth + 1 if chain else 0
    record = ObjectRecord(
        digest,
        header.raw_len,
        len(blob),
        header.encoding,
        header.base,
        depth,
        blob_digest(blob),
        device_checksum,
    )
    if digest in rows and (rows[digest].encoding, rows[digest].base) != (
        record.encoding,
        record.base,
    ):
        # A row without its blob (a crashed save) decides the encoding; these bytes differ.
        raise Conflict(
            f"object {digest[:12]} is recorded here as {rows[digest].encoding} and its blob is "
            "missing: run `weightstore gc`, then send it again"
        )
    index.add_objects([record], datetime.now(timezone.utc))
    objects.put(digest, blob)
    return record


def commit_manifest(index: Index, objects: ObjectBackend, snap: Snapshot) -> Snapshot:
    """Commit a snapshot whose objects are all stored already (push, pull, the service),
    keeping its id, so a snapshot has one id in every store. Committing one that is here
    already only moves its tags. The manifest is checked as a save's input would be and its id
    derived again from it (:mod:`weightstore.manifests`) before anything is written."""
    if not re.fullmatch(r"[0-9a-f]{64}", snap.id):
        raise InvalidInput(f"snapshot id {snap.id!r} must be 64 lowercase hex digits")
    check_manifest(snap)
    check_snapshot_id(snap)
    try:
        here: Snapshot | None = index.get_snapshot(snap.id)
    except RefNotFound:
        here = None
    if here is not None:
        if (here.task, here.tensors) != (snap.task, snap.tensors):
            raise Conflict(f"snapshot {snap.short_id} exists here with other content")
        for tag in snap.tags:
            index.set_tag(snap.id, check_name(tag, "tag"))
        return index.get_snapshot(snap.id)
    records = index.get_objects({t.digest for t in snap.tensors})
    present = objects.exists_many(records)
    for t in snap.tensors:
        size = math.prod(t.shape) * dtype_info(t.dtype).itemsize
        rec = records.get(t.digest)
        if rec is None or t.digest not in present:
            raise ObjectsMissing(
                f"snapshot {snap.short_id}: object {t.digest} of {t.name!r} is not stored "
                "here: send the objects first, then the manifest"
            )
        if not t.nbytes == size == rec.raw_size:
            raise InvalidInput(
                f"{t.name!r}: {t.dtype}{list(t.shape)} is {size} bytes, the manifest says "
                f"{t.nbytes} and object {t.digest[:12]} holds {rec.raw_size}"
            )
    index.commit_snapshot(
        snapshot_id=snap.id,
        task=snap.task,
        step=snap.step,
        parent_id=snap.parent,
        created_at=snap.created_at,
        message=snap.message,
        metadata=snap.metadata,
        logical_bytes=sum(t.nbytes for t in snap.tensors),
        tensors=snap.tensors,
        tags=snap.tags,
        origin_parent=snap.origin_parent or "",
    )
    return index.get_snapshot(snap.id)


def object_blob(index: Index, objects: ObjectBackend, digest: str) -> bytes:
    """The encoded object as stored (its header checked), for another store to take in."""
    check_digest(digest)
    if digest not in index.get_objects([digest]):
        raise ObjectNotFound(f"object {digest} is not in this store")
    blob = objects.get(digest)
    read_header(blob, digest)
    return blob


__all__ = [
    "check_digest",
    "commit_manifest",
    "missing_objects",
    "object_blob",
    "receive_object",
]
