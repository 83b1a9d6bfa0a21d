"""The facade's saving verbs: ``save``, ``save_async``, ``wait`` and the one save path they and
the folder imports share (``WeightStore`` inherits them; see ``weightstore.store``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from weightstore.errors import Conflict, InvalidInput, RefNotFound
from weightstore.exchange import commit_manifest
from weightstore.folders import FOLDER_KEY, check_folder
from weightstore.inputs import check_message, check_metadata, check_new_task, check_step, check_tags
from weightstore.ports import Progress
from weightstore.refs import Ref
from weightstore.settings import StoreSettings
from weightstore.sources import Savable, state_of
from weightstore.types import RESERVED_PREFIX, TRAINING_KEY, Snapshot

if TYPE_CHECKING:
    from weightstore.index import Index
    from weightstore.objects import ObjectBackend
    from weightstore.saving import BackgroundSaver, SaveFuture
    from weightstore.training import Stateful
    from weightstore.writer import SnapshotWriter


def _with_training(
    weights: Savable,
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
    state = state_of(weights)
    reserved = next(
        (n for n in state if isinstance(n, str) and n.startswith(RESERVED_PREFIX)), None
    )
    if reserved is not None:
        raise InvalidInput(
            f"tensor name {reserved!r}: names starting {RESERVED_PREFIX!r} are reserved for "
            "weightstore's own entries (folder files, training state)"
        )
    if optimizer is None and scheduler is None and not rng and extra is None:
        return state, meta
    from weightstore.training import capture_training  # torch's objects: torch is loaded

    found, record = capture_training(optimizer, scheduler, rng, extra)
    meta[TRAINING_KEY] = record
    return {**state, **found}, meta


def _now() -> datetime:
    return datetime.now(timezone.utc)


class SavingVerbs:
    """``save``, ``save_async``, ``wait`` (mixed into :class:`weightstore.store.WeightStore`,
    which provides what is declared here)."""

    index: Index
    writer: SnapshotWriter
    settings: StoreSettings
    _saver: BackgroundSaver | None
    _saver_lock: threading.Lock

    if TYPE_CHECKING:

        @property
        def objects(self) -> ObjectBackend: ...

        def show(self, ref: str) -> Snapshot: ...

    def save(
        self,
        task: str,
        weights: Savable,
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
        weights: Savable,
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
                from weightstore.saving import BackgroundSaver  # torch: the caller's tensors

                self._saver = BackgroundSaver(
                    self.settings.max_pending_saves, self.settings.max_pending_bytes
                )
            return self._saver

    def _save(
        self,
        task: str,
        weights: Savable,
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
        state = state_of(weights)
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
