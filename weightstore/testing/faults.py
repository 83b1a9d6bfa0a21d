"""A fault-injecting object backend: hooks that run before and after each call of the backend
it wraps, to fail, block, count, race or kill a process at an exact point of a save, gc or
restore. It replaces subclassing a concrete backend in tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from weightstore.objects.base import ObjectBackend, ObjectInfo
from weightstore.objects.wrapped import Data, WrappedBackend
from weightstore.store import WeightStore

# ``hook(op, key)``: op is the backend method's name ("put", "get_range", "iterate", ...), key
# the object's key or None for calls without one. A hook may raise to make the call fail.
Hook = Callable[[str, str | None], None]


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
        self.before("put", key)
        self.inner.put(key, data)
        self.after("put", key)

    def put_many(self, items: Sequence[tuple[str, Data]]) -> None:
        for key, _ in items:
            self.before("put", key)
        self.inner.put_many(items)
        for key, _ in items:
            self.after("put", key)

    def get(self, key: str) -> bytes:
        self.before("get", key)
        found = self.inner.get(key)
        self.after("get", key)
        return found

    def get_view(self, key: str) -> bytes | memoryview:
        self.before("get_view", key)
        found = self.inner.get_view(key)
        self.after("get_view", key)
        return found

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self.before("get_range", key)
        found = self.inner.get_range(key, start, length)
        self.after("get_range", key)
        return found

    def exists(self, key: str) -> bool:
        self.before("exists", key)
        found = self.inner.exists(key)
        self.after("exists", key)
        return found

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        self.before("exists_many", None)
        found = self.inner.exists_many(keys)
        self.after("exists_many", None)
        return found

    def stat(self, key: str) -> ObjectInfo:
        self.before("stat", key)
        found = self.inner.stat(key)
        self.after("stat", key)
        return found

    def delete(self, key: str) -> bool:
        self.before("delete", key)
        found = self.inner.delete(key)
        self.after("delete", key)
        return found

    def iterate(self) -> Iterator[ObjectInfo]:
        self.before("iterate", None)
        found = self.inner.iterate()
        self.after("iterate", None)
        return found


def faults_of(store: WeightStore) -> FaultBackend:
    """The :class:`FaultBackend` of a store opened with ``wrap_objects=FaultBackend``."""
    backend = store.objects
    if not isinstance(backend, FaultBackend):
        raise TypeError(f"the store's backend is {type(backend).__name__}, not a FaultBackend")
    return backend
