"""A read-only view of a store's index for listings: ``log``, ``tasks``, ``show``, ``diff``.

It opens what :meth:`WeightStore.open` opens with ``read_only=True`` (the folder, its index,
the identity check against its objects) but no codec, thread pool or torch, so the CLI's
listing commands start in a fraction of a second and write nothing.
"""

from __future__ import annotations

import os

from weightstore import location
from weightstore.index import Index
from weightstore.objects import ObjectBackend
from weightstore.opening import open_parts
from weightstore.refs import check_name, parse_ref
from weightstore.types import Diff, Snapshot, SnapshotSummary, TaskSummary, diff_snapshots


class Catalog:
    """Snapshots and tasks of one store, read without decoding any object."""

    def __init__(self, index: Index) -> None:
        self.index = index

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, index_url: str | None = None) -> Catalog:
        """The store at ``path`` (its index elsewhere with ``index_url``), or objects at an
        ``s3://`` URL with the index at ``index_url``, as :meth:`WeightStore.open` finds them; a
        missing store is an error, and nothing is created or recorded."""

        def build(index: Index, objects: ObjectBackend) -> Catalog:
            try:
                location.bind(index, objects, write=False)
            finally:
                objects.close()
            return cls(index)

        return open_parts(path, build, index_url=index_url, read_only=True, fsync=False)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def show(self, ref: str) -> Snapshot:
        """The full manifest of the snapshot ``ref`` names (as :meth:`WeightStore.show`)."""
        return self.index.get_snapshot(self.index.resolve(parse_ref(ref)))

    def diff(self, ref_a: str, ref_b: str) -> Diff:
        return diff_snapshots(self.show(ref_a), self.show(ref_b))

    def log(self, task: str | None = None, *, limit: int | None = None) -> list[SnapshotSummary]:
        """Snapshots newest first, of one task or of all, at most ``limit``."""
        return self.index.list_summaries(None if task is None else check_name(task), limit=limit)

    def tasks(self) -> list[TaskSummary]:
        """Every task with its snapshot count and newest snapshot."""
        return self.index.task_summaries()
