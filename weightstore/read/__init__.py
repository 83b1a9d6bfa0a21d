"""The one read pipeline: chains resolved once, decoded, verified, dispatched by device, and
written into new tensors, existing targets or files by one rule."""

from weightstore.codec.layout import U8
from weightstore.read.chains import LocalChains, blob_base, walk_chains
from weightstore.read.reader import ObjectReader
from weightstore.read.targets import Pair, Slot, check_slots, check_targets, memory_key

__all__ = [
    "U8",
    "LocalChains",
    "ObjectReader",
    "Pair",
    "Slot",
    "blob_base",
    "check_slots",
    "check_targets",
    "memory_key",
    "walk_chains",
]
