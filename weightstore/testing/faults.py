"""A fault-injecting object backend: hooks that run before and after each call of the backend
it wraps, to fail, block, count, race or kill a process at an exact point of a save, gc or
restore. It replaces subclassing a concrete backend in tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from weightstore.objects.base import ObjectBackend, ObjectInfo
from weightstore.objects.wrapped import Data, WrappedBackend
from weightstore.store import WeightStore

# ``hook(op, key)``: op is the backend method's name ("put", "get_range", "iterate", ...), key
# the object's key or None for calls without one. A hook may raise to make the call fail.
Hook = Callable[[str, str | None], None]
T = TypeVar("T")


def _nothing(op: str, key: str | None) -> None:
    pass


class FaultBackend(WrappedBackend):
    """Calls ``before(op, key)`` ahead of and ``after(op, key)`` behind each call to ``inner``.

    The hooks may be replaced at any time (``backend.before = ...``), so a store opened with
    this wrapper can be armed at the moment a test needs. ``put_many`` calls the hooks once per
    object, all ``before`` hooks ahead of the batch and all ``after`` hooks behind it.
    """

    def __init__(
        self, inner: ObjectBackend, *, before: Hook = _nothing, after: Hook = _nothing
    ) -> None:
        super().__init__(inner)
        self.before = before
        self.after = after

    def disarm(self) -> None:
        """Remove both hooks."""
        self.before = self.after = _nothing

    def put(self, key: str, data: Data) -> None:
        self._call("put", key, lambda: self.inner.put(key, data))

    def put_many(self, items: Sequence[tuple[str, Data]]) -> None:
        for key, _ in items:
            self.before("put", key)
        self.inner.put_many(items)
        for key, _ in items:
            self.after("put", key)

    def _call(self, op: str, key: str | None, call: Callable[[], T]) -> T:
        self.before(op, key)
        found = call()
        self.after(op, key)
        return found

    def get(self, key: str) -> bytes:
        return self._call("get", key, lambda: self.inner.get(key))

    def get_view(self, key: str) -> bytes | memoryview:
        return self._call("get_view", key, lambda: self.inner.get_view(key))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._call("get_range", key, lambda: self.inner.get_range(key, start, length))

    def exists(self, key: str) -> bool:
        return self._call("exists", key, lambda: self.inner.exists(key))

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        return self._call("exists_many", None, lambda: self.inner.exists_many(keys))

    def stat(self, key: str) -> ObjectInfo:
        return self._call("stat", key, lambda: self.inner.stat(key))

    def delete(self, key: str) -> bool:
        return self._call("delete", key, lambda: self.inner.delete(key))

    def iterate(self) -> Iterator[ObjectInfo]:
        return self._call("iterate", None, self.inner.iterate)


def faults_of(store: WeightStore) -> FaultBackend:
    """The :class:`FaultBackend` of a store opened with ``wrap_objects=FaultBackend``."""
    backend = store.objects
    if not isinstance(backend, FaultBackend):
        raise TypeError(f"the store's backend is {type(backend).__name__}, not a FaultBackend")
    return backend
