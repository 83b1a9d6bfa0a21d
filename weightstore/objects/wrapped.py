"""Backends by wrapping, not subclassing: :class:`WrappedBackend` passes every call to another
backend, and :class:`RetryingBackend` retries the transient failures of the one it wraps.

A wrapper changes only the calls it overrides, so it composes with any backend (local, S3,
memory) and with other wrappers; :meth:`WrappedBackend.unwrap` reaches the backend underneath.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from weightstore.objects.base import ObjectBackend, ObjectInfo
from weightstore.objects.retry import RetryPolicy, call_with_retries

T = TypeVar("T")
Data = bytes | bytearray | memoryview


class WrappedBackend(ObjectBackend):
    """An :class:`ObjectBackend` that passes every call to ``inner``; subclasses override what
    they change. It keeps the contract as long as ``inner`` does."""

    def __init__(self, inner: ObjectBackend) -> None:
        self.inner = inner

    def unwrap(self) -> ObjectBackend:
        """The backend under every wrapper."""
        inner = self.inner
        while isinstance(inner, WrappedBackend):
            inner = inner.inner
        return inner

    def put(self, key: str, data: Data) -> None:
        self.inner.put(key, data)

    def put_many(self, items: Sequence[tuple[str, Data]]) -> None:
        self.inner.put_many(items)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def get_view(self, key: str) -> bytes | memoryview:
        return self.inner.get_view(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self.inner.get_range(key, start, length)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        return self.inner.exists_many(keys)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def stat(self, key: str) -> ObjectInfo:
        return self.inner.stat(key)

    def delete(self, key: str) -> bool:
        return self.inner.delete(key)

    def iterate(self) -> Iterator[ObjectInfo]:
        return self.inner.iterate()

    def describe(self) -> str:
        return self.inner.describe()

    def read_store_id(self) -> str | None:
        return self.inner.read_store_id()

    def write_store_id(self, store_id: str) -> None:
        self.inner.write_store_id(store_id)

    def is_empty(self) -> bool:
        return self.inner.is_empty()

    def cleanup_temp(self, older_than_seconds: float = 3600) -> int:
        return self.inner.cleanup_temp(older_than_seconds)

    def close(self) -> None:
        self.inner.close()


class RetryingBackend(WrappedBackend):
    """Retries each call of ``inner`` that fails with a
    :class:`~weightstore.errors.TransientStorageError`, by ``policy`` (every call here is
    idempotent: puts re-put identical bytes). Other errors are raised at once."""

    def __init__(
        self,
        inner: ObjectBackend,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(inner)
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()

    def _retry(self, call: Callable[[], T], what: str) -> T:
        return call_with_retries(call, self.policy, what=what, sleep=self._sleep, rng=self._rng)

    def put(self, key: str, data: Data) -> None:
        self._retry(lambda: self.inner.put(key, data), f"put {key}")

    def put_many(self, items: Sequence[tuple[str, Data]]) -> None:
        self._retry(lambda: self.inner.put_many(items), f"put of {len(items)} objects")

    def get(self, key: str) -> bytes:
        return self._retry(lambda: self.inner.get(key), f"get {key}")

    def get_view(self, key: str) -> bytes | memoryview:
        return self._retry(lambda: self.inner.get_view(key), f"get {key}")

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._retry(lambda: self.inner.get_range(key, start, length), f"get {key}")

    def exists(self, key: str) -> bool:
        return self._retry(lambda: self.inner.exists(key), f"head {key}")

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        listed = list(keys)
        return self._retry(lambda: self.inner.exists_many(listed), "exists")

    def stat(self, key: str) -> ObjectInfo:
        return self._retry(lambda: self.inner.stat(key), f"head {key}")

    def delete(self, key: str) -> bool:
        return self._retry(lambda: self.inner.delete(key), f"delete {key}")
