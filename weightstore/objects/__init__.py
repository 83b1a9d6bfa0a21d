"""Blob storage: opaque byte objects under validated string keys, on disk or in memory.

This package knows nothing of tensors, codecs or the index; it only keeps bytes. The contract
every backend keeps is written once, in :class:`ObjectBackend`'s docstrings.
"""

from weightstore.objects.base import ObjectBackend, ObjectInfo
from weightstore.objects.local import LocalBackend
from weightstore.objects.memory import MemoryBackend
from weightstore.objects.wrapped import RetryingBackend, WrappedBackend

__all__ = [
    "LocalBackend",
    "MemoryBackend",
    "ObjectBackend",
    "ObjectInfo",
    "RetryingBackend",
    "WrappedBackend",
]
