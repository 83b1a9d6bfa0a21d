"""One cache tier: tensors keyed by digest, least recently used first out, pins never out.

A tensor shared by many tasks is held once, since the key is the digest of its bytes. The
budget is never exceeded: an insert that does not fit after evicting every unpinned entry is
refused (the caller reads from the tier below instead). ``peak`` records the most bytes ever
held, so tests and ``stats()`` can show the budget held.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TierStats:
    """What one tier holds and how it has been used."""

    budget: int
    bytes: int
    peak: int
    items: int
    pinned: int  # entries held that are pinned
    hits: int
    misses: int
    evictions: int
    refused: int  # inserts that did not fit


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class TierCache:
    """A thread-safe LRU of tensors by digest under a byte budget, with pins."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._pins: Counter[str] = Counter()
        self._bytes = self._peak = 0
        self._hits = self._misses = self._evictions = self._refused = 0
        self._lock = threading.Lock()

    def get(self, digest: str) -> torch.Tensor | None:
        """The cached tensor (now most recently used), or None; counts a hit or a miss."""
        with self._lock:
            t = self._items.get(digest)
            if t is None:
                self._misses += 1
                return None
            self._items.move_to_end(digest)
            self._hits += 1
            return t

    def peek(self, digest: str) -> torch.Tensor | None:
        """The cached tensor without touching its recency or the counters."""
        with self._lock:
            return self._items.get(digest)

    def __contains__(self, digest: object) -> bool:
        with self._lock:
            return digest in self._items

    def fits(self, size: int) -> bool:
        """Whether ``size`` bytes could be inserted (evicting unpinned entries as needed)."""
        with self._lock:
            return self._room() >= size

    def _room(self) -> int:
        pinned = sum(nbytes(t) for d, t in self._items.items() if self._pins[d] > 0)
        return self.budget - pinned

    def put(self, digest: str, t: torch.Tensor) -> bool:
        """Insert ``t`` under ``digest``, evicting least recently used unpinned entries to make
        room; False (nothing changed) when it cannot fit or is already there."""
        size = nbytes(t)
        with self._lock:
            if digest in self._items:
                self._items.move_to_end(digest)
                return False
            if self._room() < size:
                self._refused += 1
                return False
            for d in list(self._items):
                if self._bytes + size <= self.budget:
                    break
                if self._pins[d] <= 0:
                    self._bytes -= nbytes(self._items.pop(d))
                    self._evictions += 1
            self._items[digest] = t
            self._bytes += size
            self._peak = max(self._peak, self._bytes)
            return True

    def evict(self) -> int:
        """Drop every unpinned entry; return the bytes freed."""
        with self._lock:
            freed = 0
            for d in list(self._items):
                if self._pins[d] <= 0:
                    freed += nbytes(self._items.pop(d))
                    self._evictions += 1
            self._bytes -= freed
            return freed

    def pin(self, digests: Iterable[str]) -> None:
        """Keep these digests from eviction (counted: pin twice, unpin twice)."""
        with self._lock:
            self._pins.update(digests)

    def unpin(self, digests: Iterable[str]) -> None:
        with self._lock:
            self._pins.subtract(digests)
            self._pins = +self._pins  # drop counts at zero

    def stats(self) -> TierStats:
        with self._lock:
            return TierStats(
                budget=self.budget,
                bytes=self._bytes,
                peak=self._peak,
                items=len(self._items),
                pinned=sum(1 for d in self._items if self._pins[d] > 0),
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                refused=self._refused,
            )

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
