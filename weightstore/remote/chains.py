"""A service's objects as a chain source: encoded blobs fetched over HTTP into a local,
content-addressed cache, their delta links read from their own headers.

The service needs no extra route for chains: each blob's header names its base, so a chain is
walked one level at a time for every digest at once, the blobs of a level fetched in parallel.
Nothing fetched is trusted: the reader decodes and re-derives each digest, and a cached copy that
fails is dropped (``forget``) and fetched once more.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from concurrent.futures import Executor

from weightstore.codec import read_header
from weightstore.codec.format import header_length
from weightstore.errors import CorruptObject
from weightstore.objcache import ObjectCache
from weightstore.read import walk_chains
from weightstore.types import ObjectRecord

Fetch = Callable[[str], bytes]  # one encoded object from the service
_HEAD_PROBE = 16 << 10  # bytes read for a cached object's header and frame table


class RemoteChains:
    """Chains and blobs of the service behind ``fetch``, through ``cache``."""

    def __init__(self, fetch: Fetch, cache: ObjectCache, pool: Executor, url: str) -> None:
        """``pool``: the client's fetching threads (never a caller of ``chains``)."""
        self._fetch = fetch
        self.cache = cache
        self._pool = pool
        self._url = url

    def blob(self, digest: str) -> bytes:
        hit = self.cache.get(digest)
        if hit is not None:
            return hit
        blob = self._fetch(digest)
        self.cache.put(digest, blob)
        return blob

    def _records(self, digests: Collection[str]) -> dict[str, ObjectRecord]:
        def record(d: str) -> ObjectRecord:
            # A cached object's header is read, not the whole object: decoding reads it once.
            cached = self.cache.head(d, _HEAD_PROBE)
            if cached is not None:
                head, size = cached
                try:
                    if header_length(head) <= len(head):
                        h = read_header(head, d, whole=False)
                        return ObjectRecord(d, h.raw_len, size, h.encoding, h.base, 0)
                except CorruptObject:
                    self.cache.discard(d)  # a damaged cached copy: fetch it again
            blob = self.blob(d)
            try:
                h = read_header(blob, d)
            except CorruptObject:
                # A cached copy cut short (cache writes are not fsynced): fetch it again, once.
                self.cache.discard(d)
                blob = self.blob(d)
                h = read_header(blob, d)
            return ObjectRecord(d, h.raw_len, len(blob), h.encoding, h.base, 0)

        wanted = sorted(digests)
        if len(wanted) == 1:
            return {wanted[0]: record(wanted[0])}
        return {r.digest: r for r in self._pool.map(record, wanted)}

    def chains(self, digests: Collection[str]) -> dict[str, list[ObjectRecord]]:
        return walk_chains(self._records, digests)

    def present(self, digests: Collection[str]) -> set[str]:
        # chains() fetched every blob of the chains it resolved: they are here (or fetched
        # again if the cache's budget dropped them).
        return set(digests)

    def forget(self, digests: Collection[str]) -> bool:
        for d in digests:
            self.cache.discard(d)
        return True

    def describe(self) -> str:
        return self._url
