"""An object backend that keeps blobs in a dict in this process, for tests and throwaway stores."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from weightstore.errors import ObjectNotFound
from weightstore.objects.base import (
    ObjectBackend,
    ObjectInfo,
    byte_view,
    validate_key,
    validate_range,
)

__all__ = ["MemoryBackend"]


class MemoryBackend(ObjectBackend):
    """Objects held in memory; nothing survives the process. Safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._store_id: str | None = None

    def __repr__(self) -> str:
        return f"MemoryBackend(<{len(self._objects)} objects>)"

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        key = validate_key(key)
        # Copy before taking the lock: a multi-MiB copy must not stall other threads' reads.
        with byte_view(data) as view:
            blob = view.tobytes()
        with self._lock:
            self._objects[key] = (blob, time.time())

    def _entry(self, key: str) -> tuple[bytes, float]:
        key = validate_key(key)
        with self._lock:
            entry = self._objects.get(key)
        if entry is None:
            raise ObjectNotFound(f"object {key!r} not found in {self.describe()}")
        return entry

    def get(self, key: str) -> bytes:
        return self._entry(key)[0]

    def get_range(self, key: str, start: int, length: int) -> bytes:
        key = validate_key(key)
        start, length = validate_range(start, length)
        return self._entry(key)[0][start : start + length]

    def exists(self, key: str) -> bool:
        key = validate_key(key)
        with self._lock:
            return key in self._objects

    def stat(self, key: str) -> ObjectInfo:
        blob, modified = self._entry(key)
        return ObjectInfo(key=key, size=len(blob), modified=modified)

    def delete(self, key: str) -> bool:
        key = validate_key(key)
        with self._lock:
            return self._objects.pop(key, None) is not None

    def iterate(self) -> Iterator[ObjectInfo]:
        # Snapshot under the lock so callers may put or delete while they iterate.
        with self._lock:
            items = list(self._objects.items())
        for key, (blob, modified) in items:
            yield ObjectInfo(key=key, size=len(blob), modified=modified)

    def read_store_id(self) -> str | None:
        return self._store_id

    def write_store_id(self, store_id: str) -> None:
        self._store_id = store_id

    def describe(self) -> str:
        return "memory"
