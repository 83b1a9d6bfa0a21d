"""The one read pipeline: chains resolved once, decoded, verified, dispatched by device, and
written into new tensors, existing targets or files by one rule."""

from weightstore.read.chains import LocalChains, walk_chains
from weightstore.read.reader import ObjectReader
from weightstore.read.targets import Pair, Slot, check_slots, check_targets, memory_key

__all__ = [
    "LocalChains",
    "ObjectReader",
    "Pair",
    "Slot",
    "check_slots",
    "check_targets",
    "memory_key",
    "walk_chains",
]
