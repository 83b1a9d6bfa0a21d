"""The facade's file verbs: weights files and model folders in (``import_file``,
``import_folder``) and out (``export``) (``WeightStore`` inherits them; see
``weightstore.store``)."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightstore.errors import InvalidInput
from weightstore.files import SafetensorsWeights, read_weights, store_paths
from weightstore.files.folder import read_folder
from weightstore.folders import FOLDER_KEY, record_of
from weightstore.forms import SOURCE_METADATA
from weightstore.inputs import check_metadata, check_new_task
from weightstore.objects import LocalBackend
from weightstore.ports import Progress
from weightstore.read.layout import export_snapshot
from weightstore.store_saving import SavingVerbs
from weightstore.types import Snapshot

if TYPE_CHECKING:
    from weightstore.read.layout import TensorBytes
    from weightstore.types import TensorEntry


class FileVerbs(SavingVerbs):
    """``import_file``, ``import_folder``, ``export`` (mixed into
    :class:`weightstore.store.WeightStore`, which provides what is declared here)."""

    if TYPE_CHECKING:

        def tensor_reader(
            self, entries: Collection[TensorEntry], verify: bool | None = None
        ) -> TensorBytes: ...

        def naming_damage(self, snap: Snapshot) -> AbstractContextManager[None]: ...

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

    def export(
        self,
        ref: str,
        path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        overwrite: bool = False,
    ) -> Snapshot:
        """Write the snapshot as a standard safetensors file (tensor by tensor; an existing
        file is replaced, atomically, only if ``overwrite``), or, for a snapshot saved from a
        folder, the folder as it was saved (``path`` then names a new or empty folder)."""
        snap = self.show(ref)
        own = self._own_paths()
        with self.naming_damage(snap):
            export_snapshot(snap, path, self.tensor_reader, progress, own, overwrite)
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
        source = weights.metadata if isinstance(weights, SafetensorsWeights) else {}
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
