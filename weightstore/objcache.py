"""A local, content-addressed cache of encoded objects with a size budget.

Objects are immutable and named by the digest of their decoded bytes, so a cached object never
goes stale; a damaged one fails its digest check when decoded and is dropped and fetched again.
Files are written to a temporary name and renamed (a crash leaves no half object); when the
cache passes its budget, the least recently used objects (by modification time, refreshed on
every hit) are removed first.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

from weightstore.objects.base import validate_key


class ObjectCache:
    """``folder/ab/abcdef...``; ``budget``: bytes kept at most (0 disables the cache)."""

    def __init__(self, folder: str | os.PathLike[str], budget: int) -> None:
        self.folder = Path(folder)
        self.budget = budget
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._size: int | None = None  # computed on first put

    def _path(self, digest: str) -> Path:
        validate_key(digest)
        return self.folder / digest[:2] / digest

    def get(self, digest: str) -> bytes | None:
        path = self._path(digest)
        try:
            data = path.read_bytes()
            os.utime(path)
        except FileNotFoundError:
            self.misses += 1
            return None
        self.hits += 1
        return data

    def head(self, digest: str, n: int) -> tuple[bytes, int] | None:
        """The first ``n`` bytes of a cached object and its whole size, or None (not a hit:
        reading a header is not a use)."""
        try:
            with self._path(digest).open("rb") as f:
                return f.read(n), os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            return None

    def discard(self, digest: str) -> None:
        path = self._path(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            if self._size is not None:
                self._size -= size

    def put(self, digest: str, blob: bytes) -> None:
        if len(blob) > self.budget:
            return
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
        with self._lock:
            self._size = self._measure() if self._size is None else self._size + len(blob)
            if self._size > self.budget:
                self._evict()

    def _files(self) -> list[tuple[float, int, Path]]:
        out = []
        for p in self.folder.glob("??/*"):
            if p.name.startswith("."):
                continue
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append((st.st_mtime, st.st_size, p))
        return out

    def _measure(self) -> int:
        return sum(size for _, size, _ in self._files())

    def _evict(self) -> None:
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= self.budget:
                break
            path.unlink(missing_ok=True)
            total -= size
        self._size = total
