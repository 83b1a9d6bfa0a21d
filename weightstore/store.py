"""The facade: save, restore, log, diff, tag, delete, prune, gc, verify, stats, export, import.

It orders the work of the layers below and keeps the write order of docs/design.md:
objects are durable before the snapshot's index rows commit in one transaction (with its tags).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from weightstore import location
from weightstore.codec import Codec
from weightstore.codec.layout import U8
from weightstore.errors import (
    CorruptObject,
    InvalidInput,
    StorageError,
    WeightstoreError,
)
from weightstore.exchange import missing_objects, object_blob, receive_object
from weightstore.files import read_weights
from weightstore.index import Index, schema
from weightstore.index.locks import new_holder
from weightstore.index.tokens import Tokens
from weightstore.inputs import (
    check_grace,
)
from weightstore.maintenance import altered_manifests, collect_garbage, verify_objects
from weightstore.objects import ObjectBackend
from weightstore.objects.s3config import S3Settings
from weightstore.opening import open_parts, schema_engine
from weightstore.ports import Progress, Weights, fan_out
from weightstore.read import LocalChains, ObjectReader, check_targets
from weightstore.read.fill import fill_new, fill_targets
from weightstore.read.layout import TensorBytes
from weightstore.refs import Ref, check_name, parse_ref
from weightstore.settings import StoreSettings
from weightstore.sources import Savable, state_of
from weightstore.store_files import FileVerbs
from weightstore.types import (
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

if TYPE_CHECKING:  # torch is imported by the verbs that make tensors, not by opening a store
    import torch

    from weightstore.saving import BackgroundSaver
    from weightstore.training import Stateful


def _where(snap: Snapshot) -> str:
    return f"{snap.task}@{snap.step}" if snap.step is not None else snap.task


class WeightStore(FileVerbs):
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
        self._holder = new_holder()
        self._chains = LocalChains(index, objects)
        self.reader = ObjectReader(
            self._chains,
            self.codec,
            verify=self.settings.verify_reads,
            device_decode=self.settings.device_decode,
            device_decode_min_bytes=self.settings.device_decode_min_bytes,
        )
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

    @contextmanager
    def naming_damage(self, snap: Snapshot) -> Iterator[None]:
        """Corruption met while ``snap`` is read says which snapshot, tensor and other
        snapshots it touches, and what to do about it (not just a digest)."""
        try:
            yield
        except CorruptObject as e:
            if e.digest is None:
                raise
            try:
                users = self.index.snapshots_for_digests([e.digest]).get(e.digest, [])
            except WeightstoreError:
                users = []
            others = [self._label(u) for u in users if u != snap.id]
            shared = (
                f"; the same bytes are in {len(others)} other snapshot(s): {', '.join(others[:5])}"
                f"{', ...' if len(others) > 5 else ''}"
                if others
                else ""
            )
            found = CorruptObject(
                f"snapshot {snap.short_id} ({_where(snap)}) is damaged: {e}{shared}. Run "
                "`weightstore verify` to list every damaged object, then `weightstore verify "
                "--repair FILE` "
                "with a weights file that holds this tensor (or pull the snapshot again from a "
                "remote that has it)"
            )
            found.tensor, found.digest = e.tensor, e.digest
            raise found from e

    def _label(self, snapshot_id: str) -> str:
        try:
            return f"{_where(self.index.get_snapshot(snapshot_id))} ({snapshot_id[:12]})"
        except WeightstoreError:
            return snapshot_id[:12]

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
        import torch

        from weightstore.training import load_training, require_training

        snap = self.show(ref)
        check = self.settings.verify_reads if verify is None else verify
        training = optimizer is not None or scheduler is not None or rng
        if training:
            require_training(snap, optimizer, scheduler, rng)
        chains = self.reader.chains({t.digest for t in snap.weights})
        if into is None:
            dev = torch.device("cpu" if device is None else device)
            with self.naming_damage(snap):
                out = fill_new(self.reader, snap, chains, dev, check, self._run_all, progress)
            if training:
                load_training(snap, partial(self._decode, check=check), optimizer, scheduler, rng)
            return out
        asked = None if device is None else torch.device(device)
        pairs = check_targets(snap, state_of(into), strict, asked)
        with self.naming_damage(snap):
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
        from weightstore.training import (
            skeleton_names,
            training_entries,
            training_record,
            unflatten_checkpoint,
        )

        snap = self.show(ref)
        record = training_record(snap)
        if "extra" not in record:
            raise InvalidInput(f"snapshot {snap.short_id} holds no extra state")
        names = skeleton_names(record["extra"])
        entries = [t for t in training_entries(snap) if t.name in names]
        with self.naming_damage(snap):
            tensors = self._decode(entries, self.settings.verify_reads, device)
        return unflatten_checkpoint(record["extra"], tensors)

    def _decode(
        self,
        entries: Sequence[TensorEntry],
        check: bool,
        device: str | torch.device | None = None,
    ) -> dict[str, torch.Tensor]:
        """New tensors of ``entries`` (of one snapshot) on ``device`` (the CPU), by name."""
        import torch

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

    def verify(
        self,
        ref: str | None = None,
        *,
        progress: Progress | None = None,
        total: Callable[[int], None] | None = None,
    ) -> VerifyResult:
        """Re-read objects (those of ``ref``'s snapshot, or all that snapshots reach), check
        headers, decode and re-derive each digest; name the snapshots a missing or corrupt
        object breaks; and re-derive each snapshot's id from its manifest. ``progress``
        counts decoded bytes, whose sum ``total`` is told first."""
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
            total=total,
        )
        return dataclasses.replace(result, problems=altered + result.problems)

    def repair(self, sources: Iterable[Savable | str | os.PathLike[str]]) -> dict[str, str]:
        """Rewrite damaged objects (found by :meth:`verify`) from weights the caller still has:
        modules, state dicts, or weights files. Returns, per damaged object found in the
        sources, "repaired" or why not; damaged objects absent from every source are left."""
        damaged = set(self.index.damaged())
        outcome: dict[str, str] = {}
        for source in sources:
            if not damaged:
                break
            state: Mapping[str, object]
            if isinstance(source, str | os.PathLike):
                state = read_weights(source)
            else:
                state = state_of(source)
            done = self.writer.repair(state, damaged)
            outcome.update(done)
            damaged -= {d for d, result in done.items() if result == "repaired"}
        return outcome

    def stats(self) -> StoreStats:
        """The storage report: logical vs stored bytes per task, in total and over time."""
        return compute_stats(self.index.usage_rows(), self.index.all_objects())


__all__ = ["WeightStore"]
