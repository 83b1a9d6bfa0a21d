"""The narrow roles callers depend on, and the one fan-out rule.

The one reader (:mod:`weightstore.read`) takes tensor bytes from a :class:`ChainSource`; push and
pull move objects through an :class:`ObjectExchange`. A local
:class:`~weightstore.store.WeightStore` and a :class:`~weightstore.remote.RemoteStore` both play
these roles (the loader's role, :class:`weightstore.read.source.ReadSource`, too), so whatever is
written against them works over either and never reaches into a store's index or backend.

:func:`fan_out` is the rule every worker pool follows: at most ``limit`` items in flight (memory
stays a small multiple of the largest item), and an error is raised only once every submitted
item has finished, so no worker is still writing into buffers the caller is about to free or
reuse.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Union

from weightstore.types import ObjectRecord, Snapshot

if TYPE_CHECKING:
    import torch

Progress = Callable[[int], None]  # called with a byte count as work completes
RunAll = Callable[[Callable[[Any], None], Iterable[Any]], None]
# An nn.Module or a state dict: what save takes and what restore(into=) and the loader fill.
Weights = Union["torch.nn.Module", Mapping[str, "torch.Tensor"]]
T = TypeVar("T")


def fan_out(pool: Executor, fn: Callable[[T], None], items: Iterable[T], limit: int) -> None:
    """Run ``fn`` over ``items`` on ``pool``, at most ``limit`` at a time; after the first
    error no new item starts, and the error is raised once every started item is done."""
    pending: set[Future[None]] = set()
    failed: BaseException | None = None
    for item in items:
        if len(pending) >= max(1, limit):
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            failed = _first_error(done)
            if failed is not None:
                break
        pending.add(pool.submit(fn, item))
    done, _ = wait(pending)
    failed = failed or _first_error(done)
    if failed is not None:
        raise failed


def _first_error(done: Iterable[Future[None]]) -> BaseException | None:
    return next((e for f in done if (e := f.exception()) is not None), None)


class SnapshotSource(Protocol):
    """Where snapshots are looked up by ref (the Hub routes' only input besides the reader)."""

    def resolve(self, ref: str) -> str: ...
    def show(self, ref: str) -> Snapshot: ...
    def snapshot(self, snapshot_id: str) -> Snapshot: ...
    def count_snapshots(self, task: str) -> int: ...


class ChainSource(Protocol):
    """Where encoded objects and their delta chains come from (the reader's only input)."""

    def chains(self, digests: Collection[str]) -> dict[str, list[ObjectRecord]]:
        """Each digest's delta chain, itself first and its root last, for all of them at
        once (ObjectNotFound for one the source lacks)."""
        ...

    def blob(self, digest: str) -> bytes | memoryview:
        """The encoded object ``digest`` as stored (checked by decoding, not here)."""
        ...

    def present(self, digests: Collection[str]) -> set[str]:
        """Those of ``digests`` whose blob can be read now."""
        ...

    def forget(self, digests: Collection[str]) -> bool:
        """Drop local copies of these objects (a cache) so the next read fetches them anew;
        False when there is nothing to drop (a store's own objects)."""
        ...

    def describe(self) -> str: ...


class ObjectExchange(Protocol):
    """What push and pull move between two stores: encoded objects and manifests."""

    def tasks(self) -> list[str]: ...
    def log(self, task: str | None = None) -> list[Snapshot]: ...
    def show(self, ref: str) -> Snapshot: ...
    def missing(self, digests: Iterable[str]) -> list[str]: ...
    def get_object(self, digest: str) -> bytes: ...
    def put_object(self, digest: str, blob: bytes) -> object: ...
    def commit_manifest(self, snap: Snapshot) -> Snapshot: ...


__all__ = [
    "ChainSource",
    "ObjectExchange",
    "Progress",
    "RunAll",
    "Weights",
    "fan_out",
]
