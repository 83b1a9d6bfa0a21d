"""The role a reading front end (the loader, the Hub routes) depends on: a store that names
snapshots and reads them through the one reader. A local :class:`WeightStore` and a
:class:`RemoteStore` both play it."""

from __future__ import annotations

from typing import Protocol

from weightstore.read.reader import ObjectReader
from weightstore.settings import StoreSettings
from weightstore.types import Snapshot


class ReadSource(Protocol):
    @property
    def reader(self) -> ObjectReader:
        """The one reader over this store's chain source."""
        ...

    @property
    def settings(self) -> StoreSettings: ...

    def resolve(self, ref: str) -> str:
        """The full id of the snapshot ``ref`` names (RefNotFound when none)."""
        ...

    def snapshot(self, snapshot_id: str) -> Snapshot:
        """The snapshot with this full id, with its tensors."""
        ...
