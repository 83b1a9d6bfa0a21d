"""Weights files in and out: reading (safetensors, sharded folders, torch checkpoints), the
safetensors header layout, and writing to safe destinations."""

from weightstore.files.layout import safetensors_head
from weightstore.files.reading import SHARD_INDEX, read_weights
from weightstore.files.safetensors_in import SafetensorsWeights
from weightstore.files.writing import (
    open_destination,
    store_paths,
    write_folder,
    write_safetensors,
)

__all__ = [
    "SHARD_INDEX",
    "SafetensorsWeights",
    "open_destination",
    "read_weights",
    "safetensors_head",
    "store_paths",
    "write_folder",
    "write_safetensors",
]
