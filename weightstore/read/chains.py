"""Delta chains, resolved once for many digests: the reader's input, local or remote.

A chain is an object and its bases down to a root (itself first). Both chain sources walk it
the same way, one level at a time for every digest at once (one index query, or one batch of
downloads, per level, never one per object), and refuse a chain that loops.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from weightstore.codec import read_header
from weightstore.errors import CorruptObject, ObjectNotFound
from weightstore.index import Index
from weightstore.objects import ObjectBackend
from weightstore.types import ObjectRecord

MAX_CHAIN = 10_000  # only stops a corrupt, looping chain
RecordsOf = Callable[[Collection[str]], dict[str, ObjectRecord]]


def walk_chains(records_of: RecordsOf, digests: Collection[str]) -> dict[str, list[ObjectRecord]]:
    """Every digest's chain, fetching the records of one level at a time with ``records_of``
    (which returns those it found)."""
    wanted = list(dict.fromkeys(digests))
    records: dict[str, ObjectRecord] = {}
    todo = set(wanted)
    while todo:
        found = records_of(todo)
        missing = todo - found.keys()
        if missing:
            raise ObjectNotFound(f"object {sorted(missing)[0]} is not in the index")
        records.update(found)
        todo = {r.base for r in found.values() if r.base and r.base not in records}
    chains = {}
    for d in wanted:
        chain = [records[d]]
        while chain[-1].base:
            chain.append(records[chain[-1].base])
            if len(chain) > MAX_CHAIN:
                raise CorruptObject(f"object {d}: delta chain loops")
        chains[d] = chain
    return chains


class LocalChains:
    """A local store's chain source: records from its index, blobs from its backend."""

    def __init__(self, index: Index, objects: ObjectBackend) -> None:
        self.index = index
        self.objects = objects

    def chains(self, digests: Collection[str]) -> dict[str, list[ObjectRecord]]:
        # The closure query returns every level at once: the walk asks once.
        return walk_chains(self.index.get_closure, digests)

    def blob(self, digest: str) -> bytes | memoryview:
        return self.objects.get_view(digest)

    def present(self, digests: Collection[str]) -> set[str]:
        return self.objects.exists_many(digests)

    def forget(self, digests: Collection[str]) -> bool:
        return False  # nothing is cached here: what is stored is what there is

    def describe(self) -> str:
        return self.objects.describe()


def blob_base(blob: bytes, digest: str) -> str | None:
    """The digest of the delta base an object's blob names in its header (None for a root);
    :class:`CorruptObject` when the header cannot be read."""
    return read_header(blob, digest).base
