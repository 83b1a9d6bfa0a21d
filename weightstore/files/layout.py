"""The byte form of a safetensors header, one for every writer."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from weightstore.dtypes import dtype_info


def safetensors_head(
    entries: Sequence[tuple[str, str, tuple[int, ...], int]],
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The start of a standard safetensors file: the 8-byte little-endian header length, then
    the JSON header padded with spaces to a multiple of 8. ``entries``: (name, dtype name,
    shape, nbytes) in file order, the tensor data following the header in that order. One
    form for every writer (export, the service's download), so their files are equal byte for
    byte."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dtype, shape, nbytes in entries:
        info = dtype_info(dtype)
        header[name] = {
            "dtype": info.safetensors,
            "shape": info.safetensors_shape(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob
