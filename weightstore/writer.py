"""Tensors -> stored objects: hashing, the encoding policy, batched durable writes, repair.

The mirror of :mod:`weightstore.reader`. Invariant 8 of docs/design.md lives here: a snapshot is
exactly the bytes that were read. Each new tensor is copied once into private memory, the copy is
hashed again and must match the digest the snapshot records, and only that copy is encoded; a
source that changed in between (a checkpoint rewritten in place, a model still training) is an
:class:`InputChanged` error, never an object whose bytes do not match its name.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from weightstore import manifests
from weightstore.codec import Codec, Encoded, digest
from weightstore.codec.devhash import devhash
from weightstore.codec.format import DELTAS, header_length, read_header
from weightstore.codec.layout import U8
from weightstore.dtypes import dtype_info
from weightstore.errors import (
    CorruptObject,
    InputChanged,
    InterruptedAfterCommit,
    NotFound,
    RefNotFound,
    StorageError,
)
from weightstore.index import Index
from weightstore.objects import ObjectBackend
from weightstore.ports import Progress, RunAll
from weightstore.read import ObjectReader
from weightstore.settings import StoreSettings
from weightstore.sources import RawTensor, source_parts
from weightstore.types import ObjectRecord, Snapshot, TensorEntry

# New objects are recorded and written in batches of this many bytes (raw + encoded) or objects.
_BATCH_BYTES = 32 << 20
_BATCH_OBJECTS = 64
# Bytes read to check a stored object's header and frame table: one read for most objects.
_HEAD_PROBE = 16 << 10


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _same_chain(a: ObjectRecord, b: ObjectRecord) -> bool:
    """Whether two records of one object need the same blob: same kind, same delta base."""
    return (a.encoding, a.base) == (b.encoding, b.base) or (
        a.encoding not in DELTAS and b.encoding not in DELTAS
    )


@dataclass
class _Item:
    entry: TensorEntry
    raw: U8  # the private, verified copy that was hashed and is encoded
    record: ObjectRecord
    encoded: Encoded
    rewrite: bool = False  # a damaged object: its row is replaced by ``record``


class _Batch:
    """Encoded objects waiting to be written, handed out once they fill a batch: one index
    transaction and one durability barrier per batch, memory bounded by the batch."""

    def __init__(self) -> None:
        self._items: list[_Item] = []
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, item: _Item) -> list[_Item]:
        """Add one object; return a full batch to write (else an empty list)."""
        with self._lock:
            self._items.append(item)
            self._bytes += item.encoded.stored_size + item.raw.size
            if self._bytes < _BATCH_BYTES and len(self._items) < _BATCH_OBJECTS:
                return []
            return self._take()

    def drain(self) -> list[_Item]:
        with self._lock:
            return self._take()

    def _take(self) -> list[_Item]:
        items, self._items, self._bytes = self._items, [], 0
        return items


@contextmanager
def _interrupt_after_commit(index: Index, snapshot_id: str) -> Iterator[None]:
    """A Ctrl-C during a save's commit becomes :class:`InterruptedAfterCommit` when the
    snapshot did commit, so that callers can tell the user it is saved."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        try:
            index.get_snapshot(snapshot_id)
        except RefNotFound:
            raise interrupt from None
        raise InterruptedAfterCommit(snapshot_id) from None


def stable_copy(entry: TensorEntry, t: object) -> U8:
    """A private copy of ``t``'s bytes that still hashes to ``entry.digest``."""
    data = source_parts(entry.name, t)[2]
    raw = data if isinstance(t, RawTensor) and t.owned else np.array(data, copy=True)
    if raw.size != entry.nbytes or digest(memoryview(raw)) != entry.digest:  # type: ignore[arg-type]
        raise InputChanged(
            f"tensor {entry.name!r} changed while it was being saved (its bytes no longer "
            "match what was hashed): nothing was committed; save from a stable copy "
            "(stop training or clone the weights first) and try again"
        )
    return raw


class SnapshotWriter:
    """Stores a state dict's tensors as objects (deduplicated, delta-encoded, durable)."""

    def __init__(
        self,
        index: Index,
        objects: ObjectBackend,
        reader: ObjectReader,
        codec: Codec,
        settings: StoreSettings,
        run_all: RunAll,
    ) -> None:
        self.index = index
        self.objects = objects
        self.reader = reader
        self.codec = codec
        self.settings = settings
        self._run_all = run_all

    # ------------------------------------------------------------------------------- saving

    def hash_all(self, state: Mapping[str, object]) -> list[TensorEntry]:
        """One entry per tensor, in order: name, dtype, shape, digest of its bytes, size."""
        names = list(state.keys())
        entries: list[TensorEntry] = [None] * len(names)  # type: ignore[list-item]

        def hash_one(i: int) -> None:
            name = names[i]
            dtype, shape, raw = source_parts(name, state[name])
            d = digest(memoryview(raw))  # type: ignore[arg-type]
            entries[i] = TensorEntry(name, dtype, shape, d, raw.size)

        self._run_all(hash_one, range(len(names)))
        return entries

    def store(
        self,
        state: Mapping[str, object],
        entries: list[TensorEntry],
        base_of: Mapping[str, TensorEntry],
        progress: Progress | None,
    ) -> None:
        """Make every object ``entries`` name durable and recorded in the index.

        Objects already stored and healthy are reused (pinned so gc spares them); missing or
        damaged ones are (re)written from ``state``. A tensor that also exists under the same
        name, dtype and size in ``base_of`` is stored as a delta against it when smaller.
        """
        first_use = {e.digest: e for e in reversed(entries)}
        bases = {
            e.digest: b
            for e in first_use.values()
            if (b := base_of.get(e.name)) is not None
            and b.digest != e.digest
            and (b.dtype, b.nbytes) == (e.dtype, e.nbytes)
        }
        # Pins are dated when taken, not when the save began (as rows are, in _write): gc's
        # grace counts from the last moment this save vouched for an object.
        wanted = set(first_use) | {b.digest for b in bases.values()}
        pinned = self.index.pin_objects(wanted, _now())
        flagged = set(self.index.damaged(wanted))  # by verify
        unhealthy = self._unhealthy(pinned & set(first_use), flagged)
        unhealthy |= self._unsound(pinned & set(first_use) - unhealthy)
        # Never delta against a damaged base: the new object would inherit the damage.
        usable = pinned - unhealthy - flagged
        todo = [e for d, e in first_use.items() if d not in pinned or d in unhealthy]
        # Every base's chain at once, not one lookup per tensor.
        base_chains = self.reader.chains(
            {b.digest for e in todo if (b := bases.get(e.digest)) and b.digest in usable}
        )
        if progress:
            progress(sum(e.nbytes for e in entries) - sum(e.nbytes for e in todo))
        batch = _Batch()

        def store_one(entry: TensorEntry) -> None:
            raw = stable_copy(entry, state[entry.name])
            base = bases.get(entry.digest)
            # A damaged object is rewritten standalone: its old base may be what is damaged,
            # and a new base could lie above it in a chain (a cycle).
            rewrite = entry.digest in unhealthy
            chain = base_chains.get(base.digest) if base and not rewrite else None
            rec, encoded = self.encode_object(entry, raw, chain)
            item = _Item(entry, raw, rec, encoded, rewrite)
            self._write(batch.add(item), progress, flagged)

        self._run_all(store_one, todo)
        self._write(batch.drain(), progress, flagged)

    def _unsound(self, digests: set[str]) -> set[str]:
        """Of ``digests`` (objects a save would reuse, their headers checked), those whose
        stored bytes do not prove sound. Every object of their chains must match the checksum
        recorded when it was written (a read at disk speed); where one has none (older objects)
        or it differs, the whole chain is decoded and verified instead, and the checksums of
        what proved sound are recorded for next time (docs/design.md, "Damaged objects")."""
        if not digests:
            return set()
        chains = self.reader.chains(digests)
        members = {r.digest: r for d in digests for r in chains[d]}
        matches: dict[str, bool] = {}

        def check_member(d: str) -> None:
            rec = members[d]
            try:
                matches[d] = (
                    rec.checksum is not None and digest(self.objects.get(d)) == rec.checksum
                )
            except (NotFound, StorageError):
                matches[d] = False

        self._run_all(check_member, sorted(members))
        bad: set[str] = set()
        proved: set[str] = set()

        def check_chain(d: str) -> None:
            if all(matches[r.digest] for r in chains[d]):
                return
            try:
                self.reader.decode(chains[d], verify=True)
            except (NotFound, StorageError, CorruptObject):
                bad.add(d)
                return
            proved.update(r.digest for r in chains[d] if not matches[r.digest])

        self._run_all(check_chain, sorted(digests))
        recorded: dict[str, str] = {}

        def record(d: str) -> None:
            recorded[d] = digest(self.objects.get(d))

        self._run_all(record, sorted(proved))
        self.index.set_checksums(recorded)
        return bad

    def _unhealthy(self, digests: set[str], flagged: set[str]) -> set[str]:
        """Objects whose blob is missing, of the wrong size, has a bad header, or was flagged
        by ``verify``: a save of their content rewrites them instead of trusting them."""
        bad = digests & flagged
        rows = self.index.get_objects(digests - bad)

        def check(d: str) -> None:
            rec = rows[d]
            try:
                if self.objects.size(d) != rec.stored_size:
                    bad.add(d)
                    return
                head = self.objects.get_range(d, 0, _HEAD_PROBE)
                size = header_length(head)
                if size > len(head):  # a table of over ~4000 frames: objects of 256 MiB+
                    head = self.objects.get_range(d, 0, size)
                header = read_header(head, d, whole=False)
            except (NotFound, StorageError, CorruptObject):
                bad.add(d)
                return
            if header.raw_len != rec.raw_size or header.encoding != rec.encoding:
                bad.add(d)

        self._run_all(check, sorted(rows))
        return bad

    def _write(self, items: list[_Item], progress: Progress | None, flagged: set[str]) -> None:
        """Record a batch of new objects in the index, then write their blobs durably.

        Index rows go first: they pin the objects against a concurrent gc. A row that a
        concurrent saver recorded first, with another base, wins: the blob follows it, since
        readers go by the row.
        """
        if not items:
            return
        self.index.add_objects([it.record for it in items], _now())
        # A damaged object's row takes the new, standalone encoding (its content is the same,
        # so chains through it stay valid).
        self.index.replace_objects([it.record for it in items if it.rewrite])
        rows = self.index.get_objects([it.record.digest for it in items])
        wrote: dict[str, tuple[_Item, ObjectRecord]] = {}
        blobs: list[tuple[str, bytes]] = []
        recheck: dict[str, str] = {}  # blobs whose checksum the row does not hold yet
        for it in items:
            row = rows.get(it.record.digest, it.record)
            encoded = it.encoded
            if not _same_chain(row, it.record):
                encoded = self.encode_like(row, it.raw, it.entry)
            blobs.append((it.record.digest, encoded.blob))
            wrote[it.record.digest] = (it, row)
            if row.checksum != it.record.checksum or encoded is not it.encoded:
                recheck[it.record.digest] = digest(encoded.blob)
        self.objects.put_many(blobs)
        self.index.set_checksums(recheck)
        if rewritten := flagged.intersection(wrote):
            self.index.clear_damaged(rewritten)
        if progress:
            progress(sum(it.entry.nbytes for it in items))
        # A gc with a grace shorter than this save may have dropped a row between our check
        # and our put, and a concurrent saver recorded the object anew with another base:
        # check again, so that the blob ends up following the row.
        for _ in range(3):
            rows = self.index.get_objects(list(wrote))
            wrote = {
                d: (it, current)
                for d, (it, old) in wrote.items()
                if (current := rows.get(d)) is not None and not _same_chain(current, old)
            }
            for d, (it, current) in wrote.items():
                blob = self.encode_like(current, it.raw, it.entry).blob
                self.objects.put(d, blob)
                self.index.set_checksums({d: digest(blob)})

    def commit(
        self,
        *,
        task: str,
        step: int | None,
        parent_id: str | None,
        created_at: datetime,
        message: str,
        metadata: tuple[dict[str, Any], str],
        entries: list[TensorEntry],
        tags: list[str],
    ) -> Snapshot:
        """Commit the snapshot of ``entries`` (every object stored already) in one index
        transaction with its tags; its id is the digest of what it is and when."""
        meta, meta_json = metadata
        snapshot_id = manifests.snapshot_id(
            task=task,
            step=step,
            parent=parent_id,
            created_at=created_at,
            message=message,
            metadata_json=meta_json,
            tensors=entries,
        )
        with _interrupt_after_commit(self.index, snapshot_id):
            self.index.commit_snapshot(
                snapshot_id=snapshot_id,
                task=task,
                step=step,
                parent_id=parent_id,
                created_at=created_at,
                message=message,
                metadata=meta,
                logical_bytes=sum(e.nbytes for e in entries),
                tensors=entries,
                tags=tags,
            )
            return self.index.get_snapshot(snapshot_id)

    # ------------------------------------------------------------------------------- encoding

    def encode_object(
        self, entry: TensorEntry, raw: U8, base: list[ObjectRecord] | None
    ) -> tuple[ObjectRecord, Encoded]:
        """Encode ``raw``, as a delta against the object ``base`` (its chain) when smaller."""
        against = self._encode_against(entry, raw, base) if base else None
        if against is None:
            encoded, depth = self.codec.encode(raw, dtype_info(entry.dtype).layout), 0
        else:
            encoded, depth = against
        record = ObjectRecord(
            entry.digest,
            encoded.raw_size,
            encoded.stored_size,
            encoded.encoding,
            encoded.base,
            depth,
            digest(encoded.blob),
            devhash(raw),
        )
        return record, encoded

    def encode_like(self, rec: ObjectRecord, raw: U8, entry: TensorEntry) -> Encoded:
        """Encode ``raw`` with the encoding and base the index row ``rec`` names."""
        layout = dtype_info(entry.dtype).layout
        if rec.encoding in DELTAS and rec.base:
            base_raw = self._base_bytes(rec.base)
            if rec.encoding == "sub":
                return self.codec.encode_sub(raw, base_raw, rec.base, layout)
            return self.codec.encode_delta(raw, base_raw, rec.base, layout)
        if rec.encoding == "plain":
            return self.codec.encode_plain(raw, layout)
        return self.codec.encode_raw(raw)

    def _base_bytes(self, base: str) -> U8:
        # Always verified: a delta against wrong base bytes would carry the damage forward.
        return self.reader.decode(self.reader.chains([base])[base], verify=True)

    def _encode_against(
        self, entry: TensorEntry, raw: U8, chain: list[ObjectRecord]
    ) -> tuple[Encoded, int] | None:
        """Encode ``raw`` as a delta against ``chain[0]`` (or the root of its chain when the
        chain is already ``max_chain_depth`` long); None if there is no usable base."""
        max_depth = self.settings.codec.max_chain_depth
        if max_depth <= 0:
            return None
        if chain[0].chain_depth + 1 > max_depth:
            chain = chain[-1:]
        try:
            base_raw = self.reader.decode(chain, verify=True)
        except (CorruptObject, NotFound):
            return None  # a damaged base: store this tensor on its own
        encoded = self.codec.encode(
            raw, dtype_info(entry.dtype).layout, (chain[0].digest, base_raw)
        )
        depth = chain[0].chain_depth + 1 if encoded.encoding in DELTAS else 0
        return encoded, depth

    # ------------------------------------------------------------------------------- repair

    def repair(self, state: Mapping[str, object], damaged: set[str]) -> dict[str, str]:
        """Rewrite the ``damaged`` objects whose content ``state`` holds, each as its index row
        says (so the chains through it stay valid), and check each rewrite by decoding it.

        Returns, per damaged digest found in ``state``, "repaired" or why it could not be.
        Bases are repaired before the deltas on them.
        """
        entries = {e.digest: e for e in self.hash_all(state) if e.digest in damaged}
        rows = self.index.get_objects(entries)
        outcome: dict[str, str] = {}
        for d in sorted(rows, key=lambda d: rows[d].chain_depth):
            entry, rec = entries[d], rows[d]
            try:
                raw = stable_copy(entry, state[entry.name])
                blob = self.encode_like(rec, raw, entry).blob
            except (CorruptObject, NotFound) as e:
                outcome[d] = f"not repaired: its delta base {rec.base} is damaged too ({e})"
                continue
            self.objects.put(d, blob)
            try:
                self.reader.decode(self.reader.chains([d])[d], verify=True)
            except (CorruptObject, NotFound) as e:
                outcome[d] = f"not repaired: the rewritten object does not verify ({e})"
                continue
            self.index.clear_damaged([d])
            outcome[d] = "repaired"
        return outcome
