"""The facade: save, restore, log, diff, tag, delete, prune, gc, verify, stats, export, import.

It orders the work of the layers below and keeps the write order of docs/design.md:
objects are durable before the snapshot's index rows commit in one transaction (with its tags).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch

from weightstore import location
from weightstore.codec import Codec
from weightstore.codec.layout import U8
from weightstore.errors import (
    Conflict,
    InvalidInput,
    RefNotFound,
    StorageError,
)
from weightstore.exchange import commit_manifest, missing_objects, object_blob, receive_object
from weightstore.files import read_weights, safetensors_metadata, store_paths
from weightstore.files.folder import read_folder
from weightstore.folders import FOLDER_KEY, check_folder, record_of
from weightstore.forms import SOURCE_METADATA
from weightstore.index import Index, schema
from weightstore.index.tokens import Tokens
from weightstore.inputs import (
    check_grace,
    check_message,
    check_metadata,
    check_new_task,
    check_step,
    check_tags,
)
from weightstore.maintenance import altered_manifests, collect_garbage, verify_objects
from weightstore.objects import LocalBackend, ObjectBackend
from weightstore.objects.s3config import S3Settings
from weightstore.opening import open_parts, schema_engine
from weightstore.ports import Progress, Weights, fan_out
from weightstore.read import LocalChains, ObjectReader, check_targets
from weightstore.read.fill import fill_new, fill_targets
from weightstore.read.layout import TensorBytes, export_snapshot
from weightstore.refs import Ref, check_name, parse_ref
from weightstore.saving import BackgroundSaver, SaveFuture
from weightstore.settings import StoreSettings
from weightstore.tensors import state_dict_of
from weightstore.training import (
    Stateful,
    capture_training,
    load_training,
    require_training,
    training_entries,
    training_record,
    unflatten_checkpoint,
)
from weightstore.types import (
    RESERVED_PREFIX,
    TRAINING_KEY,
    DeletionEffect,
    Diff,
    GcResult,
    ObjectRecord,
    Snapshot,
    SnapshotSummary,
    StoreStats,
    TaskSummary,
    TensorEntry,
    VerifyResult,
    diff_snapshots,
)
from weightstore.usage import compute_stats
from weightstore.writer import SnapshotWriter


def _with_training(
    weights: Weights,
    metadata: Mapping[str, Any] | None,
    optimizer: Stateful | None,
    scheduler: Stateful | None,
    rng: bool,
    extra: object = None,
) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """The entries and metadata of a save: the weights, refused if they use a reserved name,
    and the training state asked for."""
    meta, _ = check_metadata(metadata)
    for key in (FOLDER_KEY, TRAINING_KEY):
        if key in meta:
            raise InvalidInput(f"metadata key {key!r} is reserved for weightstore's own record")
    state = state_dict_of(weights)
    reserved = next(
        (n for n in state if isinstance(n, str) and n.startswith(RESERVED_PREFIX)), None
    )
    if reserved is not None:
        raise InvalidInput(
            f"tensor name {reserved!r}: names starting {RESERVED_PREFIX!r} are reserved for "
            "weightstore's own entries (folder files, training state)"
        )
    found, record = capture_training(optimizer, scheduler, rng, extra)
    if not record:
        return state, meta
    meta[TRAINING_KEY] = record
    return {**state, **found}, meta


def _skeleton_tensors(skeleton: Any) -> set[str]:
    """The entry names a flattened checkpoint's skeleton refers to."""
    text = json.dumps(skeleton)
    return set(re.findall(r'"__tensor__": "([^"]+)"', text))


def _now() -> datetime:
    return datetime.now(timezone.utc)


class WeightStore:
    """Versioned, content-addressed, delta-compressed weight snapshots per task."""

    def __init__(
        self,
        index: Index,
        objects: ObjectBackend,
        settings: StoreSettings | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        """Use ``index`` with ``objects``; they must belong to one store (their ids are
        checked, and recorded where missing unless ``read_only``)."""
        self.index = index
        self._objects = objects
        self.settings = settings or StoreSettings()
        self.read_only = read_only
        self.store_id = location.bind(index, objects, write=not read_only)
        self.codec = Codec(self.settings.codec, threads=self.settings.worker_count())
        self._pool = ThreadPoolExecutor(self.settings.worker_count(), "weightstore")
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._chains = LocalChains(index, objects)
        self.reader = ObjectReader(self._chains, self.codec, verify=self.settings.verify_reads)
        self.writer = SnapshotWriter(
            index, objects, self.reader, self.codec, self.settings, self._run_all
        )
        self._saver: BackgroundSaver | None = None
        self._saver_lock = threading.Lock()

    @property
    def objects(self) -> ObjectBackend:
        """The object backend (to wrap it, open the store with ``wrap_objects``)."""
        return self._objects

    # ----------------------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        index_url: str | None = None,
        settings: StoreSettings | None = None,
        create: bool = True,
        read_only: bool = False,
        s3: S3Settings | None = None,
        wrap_objects: Callable[[ObjectBackend], ObjectBackend] | None = None,
    ) -> WeightStore:
        """Open the store in folder ``path``: SQLite inside it unless ``index_url`` names another
        database (remembered in ``weightstore.json`` once it opened), objects in
        ``path/objects``. ``read_only`` writes nothing (for stores on read-only media); with
        ``create`` a missing store is made, else it is an error.

        ``path`` may instead be ``s3://bucket/prefix``: objects there (reached with ``s3``, or
        the AWS environment variables), the index at ``index_url``, which is then required.

        ``wrap_objects`` wraps the object backend before the store uses it, e.g. in a
        :class:`~weightstore.objects.wrapped.RetryingBackend` or a test's fault injector."""
        settings = settings or StoreSettings()

        def build(index: Index, objects: ObjectBackend) -> WeightStore:
            if wrap_objects is not None:
                objects = wrap_objects(objects)
            return cls(index, objects, settings, read_only=read_only)

        return open_parts(
            path,
            build,
            index_url=index_url,
            create=create,
            read_only=read_only,
            fsync=settings.fsync,
            s3=s3,
        )

    @classmethod
    def upgrade_schema(
        cls, path: str | os.PathLike[str], *, index_url: str | None = None
    ) -> tuple[str | None, str]:
        """Migrate the store's index to the newest schema; return (old, new) revisions."""
        with schema_engine(path, index_url) as engine:
            old = schema.current_revision(engine)
            schema.upgrade(engine)
            return old, schema.HEAD

    @classmethod
    def schema_revision(
        cls, path: str | os.PathLike[str], *, index_url: str | None = None
    ) -> tuple[str | None, str]:
        """The index's schema revision and the one this weightstore needs."""
        with schema_engine(path, index_url) as engine:
            return schema.current_revision(engine), schema.HEAD

    def check_ready(self) -> None:
        """Raise StorageError unless the index and the object backend both answer."""
        self.index.tasks()
        try:
            next(iter(self.objects.iterate()), None)
        except OSError as e:
            where = self.objects.describe()
            raise StorageError(f"object backend {where} is unreachable: {e}") from e

    def break_lock(self, name: str) -> str | None:
        """Remove the named lock whoever holds it (for a holder that died); return the holder."""
        return self.index.break_lock(name)

    def close(self) -> None:
        """Wait for pending background saves, then release everything; raises
        :class:`PendingSaveFailed` (after closing) if one of them failed."""
        try:
            if self._saver is not None:
                self._saver.close()
        finally:
            self._pool.shutdown(wait=True)
            self.codec.close()
            self.index.close()
            self.objects.close()

    def __enter__(self) -> WeightStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- reading

    def resolve(self, ref: str | Ref) -> str:
        """The full id of the snapshot ``ref`` names."""
        return self.index.resolve(parse_ref(ref) if isinstance(ref, str) else ref)

    def show(self, ref: str) -> Snapshot:
        return self.index.get_snapshot(self.resolve(ref))

    def snapshot(self, snapshot_id: str) -> Snapshot:
        """The snapshot with this full id (no ref to parse: what a resolved ref names)."""
        return self.index.get_snapshot(snapshot_id)

    def tasks(self) -> list[str]:
        return self.index.tasks()

    def log(self, task: str | None = None) -> list[Snapshot]:
        """Snapshots newest first, of one task or of all."""
        return self.index.list_snapshots(None if task is None else check_name(task))

    def summaries(
        self,
        task: str | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        before: tuple[datetime, str] | None = None,
    ) -> list[SnapshotSummary]:
        """Snapshots newest first without their tensor lists (cheap: for listings), of one
        task or of all; ``before`` = (created_at, id) of the last one of the previous page."""
        name = None if task is None else check_name(task)
        return self.index.list_summaries(name, limit=limit, offset=offset, before=before)

    def count_snapshots(self, task: str) -> int:
        return self.index.count_snapshots(check_name(task))

    def task_summaries(self) -> list[TaskSummary]:
        """Every task with its snapshot count and newest snapshot."""
        return self.index.task_summaries()

    def deletion_effect(self, ref: str) -> DeletionEffect:
        """What gc could free once the snapshot is deleted (nothing is changed)."""
        return self.index.deletion_effect(self.resolve(ref))

    def check_token(self, token: str) -> str | None:
        """The scope of an API token of this store, or None (unknown, revoked, malformed)."""
        return Tokens(self.index.engine).check(token)

    @property
    def tokens(self) -> Tokens:
        """The store's API tokens (create, list, revoke)."""
        return Tokens(self.index.engine)

    def diff(self, ref_a: str, ref_b: str) -> Diff:
        return diff_snapshots(self.show(ref_a), self.show(ref_b))

    # ----------------------------------------------------------------------------- saving

    def save(
        self,
        task: str,
        weights: Weights,
        *,
        step: int | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        parent: str | None = None,
        message: str = "",
        progress: Progress | None = None,
        optimizer: Stateful | None = None,
        scheduler: Stateful | None = None,
        rng: bool = False,
        extra: object = None,
    ) -> Snapshot:
        """Store ``weights`` as a new snapshot of ``task`` and return it.

        Each tensor is stored once per distinct content; a tensor that also exists under the
        same name, dtype and size in the parent snapshot (the task's latest, or ``parent``) is
        stored as a delta against it (XOR, or for floats the difference in ULPs) when that is
        smaller. ``optimizer`` / ``scheduler`` (anything with ``state_dict``) and ``rng`` (torch,
        CUDA, numpy and ``random`` states) are kept too, so ``restore`` can resume training
        (``weightstore.training``); ``extra``, any nested dicts and lists of tensors and plain
        values (a framework's checkpoint), comes back from :meth:`restore_extra`.
        """
        state, meta = _with_training(weights, metadata, optimizer, scheduler, rng, extra)
        return self._save(task, state, step, tags, meta, parent, message, progress)

    def save_async(
        self,
        task: str,
        weights: Weights,
        *,
        step: int | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        parent: str | None = None,
        message: str = "",
        optimizer: Stateful | None = None,
        scheduler: Stateful | None = None,
        rng: bool = False,
        extra: object = None,
    ) -> SaveFuture:
        """:meth:`save` in the background: returns once every tensor (and the optimizer's) is
        copied, so the caller may change them at once; the Future gives the snapshot. Saves
        commit in call order (a task's previous pending save is the next one's parent); errors
        come on the Future and again from :meth:`wait` and :meth:`close`
        (``weightstore.saving``)."""
        check_new_task(task)
        tag_list = check_tags(tags)
        check_step(step)
        check_message(message)
        state, meta = _with_training(weights, metadata, optimizer, scheduler, rng, extra)

        def commit(copies: Mapping[str, Any]) -> Snapshot:
            return self._save(task, copies, step, tag_list, meta, parent, message, None)

        return self._background().submit(state, commit)

    def wait(self) -> None:
        """Wait for every pending :meth:`save_async`; :class:`PendingSaveFailed` if one failed."""
        if self._saver is not None:
            self._saver.wait()

    def _background(self) -> BackgroundSaver:
        with self._saver_lock:
            if self._saver is None:
                self._saver = BackgroundSaver(
                    self.settings.max_pending_saves, self.settings.max_pending_bytes
                )
            return self._saver

    def import_folder(
        self,
        task: str,
        folder: str | os.PathLike[str],
        *,
        step: int | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        parent: str | None = None,
        message: str = "",
        progress: Progress | None = None,
    ) -> Snapshot:
        """Save a whole model folder (weights, config, tokenizer, subfolders) as a new snapshot
        of ``task``: safetensors tensors as tensors (deduplicated and delta-compressed), every
        other file byte for byte; ``export`` and the Hub routes give the folder back
        byte-identical (see ``weightstore.folders``)."""
        check_new_task(task)
        meta, _ = check_metadata(metadata)
        if FOLDER_KEY in meta:
            raise InvalidInput(f"metadata key {FOLDER_KEY!r} is reserved for the folder record")
        found = read_folder(folder)
        meta[FOLDER_KEY] = record_of(found.files)
        return self._save(
            task, found.state, step, tags, meta, parent, message, progress, found.check_unchanged
        )

    def _save(
        self,
        task: str,
        weights: Weights,
        step: int | None,
        tags: Iterable[str],
        metadata: Mapping[str, Any] | None,
        parent: str | None,
        message: str,
        progress: Progress | None,
        before_commit: Callable[[], None] = lambda: None,
    ) -> Snapshot:
        check_new_task(task)
        tag_list = check_tags(tags)
        step = check_step(step)
        meta, meta_json = check_metadata(metadata)
        check_message(message)
        state = state_dict_of(weights)
        if not state:
            raise InvalidInput("nothing to save: the state dict is empty")
        existing = None
        if step is not None:
            existing = self._find(Ref(f"{task}@{step}", "step", task, step=step))
        if existing is not None:
            raise Conflict(
                f"task {task!r} already has a snapshot at step {step} ({existing[:12]}): "
                "use another step or delete it first"
            )
        parent_snap = self._parent(task, parent)
        base_of = {t.name: t for t in parent_snap.tensors} if parent_snap else {}

        created = _now()
        entries = self.writer.hash_all(state)
        check_folder(meta, entries)
        self.writer.store(state, entries, base_of, progress)
        before_commit()
        return self.writer.commit(
            task=task,
            step=step,
            parent_id=parent_snap.id if parent_snap else None,
            created_at=created,
            message=message,
            metadata=(meta, meta_json),
            entries=entries,
            tags=tag_list,
        )

    def commit_manifest(self, snap: Snapshot) -> Snapshot:
        """Commit a snapshot whose objects are all stored already (push, pull, the service),
        keeping its id, so a snapshot has one id in every store. Committing one that is here
        already only moves its tags."""
        return commit_manifest(self.index, self.objects, snap)

    # ----------------------------------------------------------------------------- exchange

    def missing(self, digests: Iterable[str]) -> list[str]:
        """Those of ``digests`` this store cannot serve (no index row or no blob)."""
        return missing_objects(self.index, self.objects, digests)

    def get_object(self, digest: str) -> bytes:
        """The encoded object as stored (header checked), for another store to take in."""
        return object_blob(self.index, self.objects, digest)

    def put_object(self, digest: str, blob: bytes, *, max_raw_bytes: int = 1 << 40) -> ObjectRecord:
        """Take in an encoded object from elsewhere once it decodes to ``digest`` (over a base
        that must be here already); nothing is written otherwise."""
        return receive_object(
            self.index, self.objects, self.reader, digest, blob, max_raw_bytes=max_raw_bytes
        )

    def _find(self, ref: Ref) -> str | None:
        """The id ``ref`` names, or None."""
        try:
            return self.index.resolve(ref)
        except RefNotFound:
            return None

    def _parent(self, task: str, parent: str | None) -> Snapshot | None:
        if parent is not None:
            return self.show(parent)
        latest = self.index.latest_snapshot_id(task)
        return self.index.get_snapshot(latest) if latest else None

    # ----------------------------------------------------------------------------- restoring

    def restore(
        self,
        ref: str,
        *,
        device: str | torch.device | None = None,
        into: Weights | None = None,
        strict: bool = True,
        verify: bool | None = None,
        progress: Progress | None = None,
        optimizer: Stateful | None = None,
        scheduler: Stateful | None = None,
        rng: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Return the snapshot's tensors on ``device``; or, with ``into``, copy them into the
        module's (or state dict's) own tensors in place and return those. ``optimizer``,
        ``scheduler`` and ``rng`` get the training state saved with it (``load_state_dict``),
        checked present before anything is written.

        ``strict`` (with ``into``): the names must match exactly, as in ``load_state_dict``.
        Every target is checked before anything is written (weightstore/targets.py); with
        ``device`` too, the targets must be on it. ``verify`` re-derives each tensor's digest
        (default: the store setting ``verify_reads``).
        """
        snap = self.show(ref)
        check = self.settings.verify_reads if verify is None else verify
        training = optimizer is not None or scheduler is not None or rng
        if training:
            require_training(snap, optimizer, scheduler, rng)
        chains = self.reader.chains({t.digest for t in snap.weights})
        if into is None:
            dev = torch.device("cpu" if device is None else device)
            out = fill_new(self.reader, snap, chains, dev, check, self._run_all, progress)
            if training:
                load_training(snap, partial(self._decode, check=check), optimizer, scheduler, rng)
            return out
        asked = None if device is None else torch.device(device)
        pairs = check_targets(snap, state_dict_of(into), strict, asked)
        fill_targets(
            self.reader,
            snap,
            pairs,
            chains,
            check,
            self._run_all,
            self.settings.restore_staging_bytes,
            progress,
        )
        if training:
            load_training(snap, partial(self._decode, check=check), optimizer, scheduler, rng)
        return {entry.name: t for entry, t in pairs}

    def restore_extra(self, ref: str, *, device: str | torch.device | None = None) -> Any:
        """What was saved as ``extra=`` (a framework's checkpoint parts), tensors on
        ``device``; :class:`InvalidInput` if the snapshot holds none."""
        snap = self.show(ref)
        record = training_record(snap)
        if "extra" not in record:
            raise InvalidInput(f"snapshot {snap.short_id} holds no extra state")
        names = _skeleton_tensors(record["extra"])
        entries = [t for t in training_entries(snap) if t.name in names]
        tensors = self._decode(entries, self.settings.verify_reads, device)
        return unflatten_checkpoint(record["extra"], tensors)

    def _decode(
        self,
        entries: Sequence[TensorEntry],
        check: bool,
        device: str | torch.device | None = None,
    ) -> dict[str, torch.Tensor]:
        """New tensors of ``entries`` (of one snapshot) on ``device`` (the CPU), by name."""
        chains = self.reader.chains({e.digest for e in entries})
        dev = torch.device("cpu" if device is None else device)
        return {e.name: self.reader.tensor(e, chains[e.digest], dev, check) for e in entries}

    def tensor_reader(
        self, entries: Collection[TensorEntry], verify: bool | None = None
    ) -> TensorBytes:
        """A function giving the raw bytes of each of ``entries`` (tensors of one or more
        snapshots), checked by the store's one read rule (``verify_reads``) unless ``verify``
        says otherwise; their chains are resolved once, here."""
        chains = self.reader.chains({e.digest for e in entries})

        def read(entry: TensorEntry) -> U8:
            return self.reader.read(entry, chains[entry.digest], verify)

        return read

    def read_tensor_bytes(self, entry: TensorEntry, verify: bool | None = None) -> U8:
        """The raw bytes of one stored tensor (see :meth:`tensor_reader`)."""
        return self.tensor_reader([entry], verify)(entry)

    def _run_all(self, fn: Callable[[Any], None], items: Iterable[Any]) -> None:
        """Run ``fn`` over ``items`` on the worker pool, at most a few in flight at a time so
        memory stays a small multiple of the largest tensor; the first error is raised once every
        started item is done (ports.fan_out)."""
        fan_out(self._pool, fn, items, 2 * self.settings.worker_count())

    # ----------------------------------------------------------------------------- tags, deletion

    def tag(self, ref: str, name: str) -> Snapshot:
        """Point the tag ``name`` of the snapshot's task at it (moving it if it exists)."""
        check_name(name, "tag")
        sid = self.resolve(ref)
        self.index.set_tag(sid, name)
        return self.index.get_snapshot(sid)

    def untag(self, task: str, name: str) -> None:
        self.index.delete_tag(check_name(task), check_name(name, "tag"))

    def delete(self, ref: str) -> Snapshot:
        """Delete one snapshot (its objects stay until gc finds them unreferenced)."""
        snap = self.show(ref)
        self.index.delete_snapshot(snap.id)
        return snap

    def prune(
        self, task: str, *, keep_last: int, keep_tagged: bool = True, dry_run: bool = False
    ) -> list[Snapshot]:
        """Delete all but the newest ``keep_last`` snapshots of ``task`` (tagged ones are kept
        unless ``keep_tagged`` is False); return the deleted snapshots (with ``dry_run``, those
        it would delete, deleting nothing)."""
        if keep_last < 0:
            raise InvalidInput("keep_last must be >= 0")
        doomed = [s for s in self.log(task)[keep_last:] if not (keep_tagged and s.tags)]
        if dry_run:
            return doomed
        for s in doomed:
            self.index.delete_snapshot(s.id)
        return doomed

    # ----------------------------------------------------------------------------- gc, verify

    def gc(
        self,
        *,
        grace_seconds: float | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> GcResult:
        """Remove objects no snapshot reaches (directly or as a delta base) that have not been
        used for ``grace_seconds``. Holds the gc lock; safe to run while saves run."""
        grace = check_grace(
            self.settings.gc_grace_seconds if grace_seconds is None else grace_seconds
        )
        # Deleting is only safe when this index describes these objects (invariant 7).
        location.require_bound(self.index, self.objects)
        return collect_garbage(self.index, self.objects, self._holder, grace, dry_run, progress)

    def verify(self, ref: str | None = None, *, progress: Progress | None = None) -> VerifyResult:
        """Re-read objects (those of ``ref``'s snapshot, or all that snapshots reach), check
        headers, decode and re-derive each digest; name the snapshots a missing or corrupt
        object breaks; and re-derive each snapshot's id from its manifest."""
        if ref is not None:
            snaps = [self.show(ref)]
            digests = {t.digest for t in snaps[0].tensors}
        else:
            snaps = self.index.list_snapshots()
            # Objects no snapshot reaches are garbage (a save interrupted between recording
            # and writing one leaves such a row): gc's business, not damage.
            digests = self.index.reachable_digests()
        altered = altered_manifests(self.index, snaps)
        result = verify_objects(
            self.index,
            self.objects,
            self.reader,
            digests,
            self._run_all,
            progress,
            remember=not self.read_only,
        )
        return dataclasses.replace(result, problems=altered + result.problems)

    def repair(self, sources: Iterable[Weights | str | os.PathLike[str]]) -> dict[str, str]:
        """Rewrite damaged objects (found by :meth:`verify`) from weights the caller still has:
        modules, state dicts, or weights files. Returns, per damaged object found in the
        sources, "repaired" or why not; damaged objects absent from every source are left."""
        damaged = set(self.index.damaged())
        outcome: dict[str, str] = {}
        for source in sources:
            if not damaged:
                break
            if isinstance(source, str | os.PathLike):
                state = read_weights(source)
            else:
                state = state_dict_of(source)
            done = self.writer.repair(state, damaged)
            outcome.update(done)
            damaged -= {d for d, result in done.items() if result == "repaired"}
        return outcome

    def stats(self) -> StoreStats:
        """The storage report: logical vs stored bytes per task, in total and over time."""
        return compute_stats(self.index.usage_rows(), self.index.all_objects())

    # ----------------------------------------------------------------------------- files

    def export(
        self, ref: str, path: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> Snapshot:
        """Write the snapshot as a standard safetensors file (tensor by tensor), or, for a
        snapshot saved from a folder, the folder as it was saved (``path`` then names a new or
        empty folder)."""
        snap = self.show(ref)
        export_snapshot(snap, path, self.tensor_reader, progress, self._own_paths())
        return snap

    def _own_paths(self) -> list[Path]:
        """What an export must not overwrite: the store's folder and its SQLite index."""
        local = self.objects.root if isinstance(self.objects, LocalBackend) else None
        url = self.index.engine.url
        return store_paths(local, url.database if url.get_backend_name() == "sqlite" else None)

    def import_file(
        self,
        task: str,
        path: str | os.PathLike[str],
        *,
        step: int | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        parent: str | None = None,
        message: str = "",
        progress: Progress | None = None,
        key: str | None = None,
    ) -> Snapshot:
        """Save the weights in a safetensors file, a sharded safetensors folder or a torch
        state-dict file as a new snapshot of ``task``; ``key`` picks the entry of a torch
        checkpoint that holds the weights (found by itself for the usual nestings). A folder
        is saved whole, as :meth:`import_folder` does."""
        if Path(path).is_dir():
            if key is not None:
                raise InvalidInput(f"{path}: --key applies to torch checkpoints, not folders")
            return self.import_folder(
                task,
                path,
                step=step,
                tags=tags,
                metadata=metadata,
                parent=parent,
                message=message,
                progress=progress,
            )
        weights = read_weights(path, key=key)
        source = safetensors_metadata(path)
        if source:
            # Handed back by export, so tools that read it (format, config) keep working.
            metadata = {SOURCE_METADATA: source, **(metadata or {})}
        return self.save(
            task,
            weights,
            step=step,
            tags=tags,
            metadata=metadata,
            parent=parent,
            message=message,
            progress=progress,
        )


__all__ = ["WeightStore"]
