"""Pure bytes-to-bytes codec: digests, byte grouping, framed zstd, XOR deltas, object format."""

from weightstore.codec.digest import digest
from weightstore.codec.format import Header, read_header
from weightstore.codec.layout import Layout, group, ungroup
from weightstore.codec.objects import Codec, Encoded

__all__ = [
    "Codec",
    "Encoded",
    "Header",
    "Layout",
    "digest",
    "group",
    "read_header",
    "ungroup",
]
