"""A snapshot as a standard safetensors file built on the fly, with byte ranges.

The file is laid out exactly as ``WeightStore.export`` writes it (one layout,
:mod:`weightstore.read.layout`), so a download equals an export bit for bit and its size is
known before any tensor is decoded (``Content-Length``). Bytes are produced tensor by tensor:
memory stays bounded by the largest tensor, and a range decodes only the tensors it overlaps.
Each tensor is decoded and verified (its digest re-derived) before its first byte is sent, so a
corrupt object ends the response early (the client sees a short body), never as wrong bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from weightstore.errors import InvalidInput
from weightstore.read.layout import FileLayout, TensorBytes

CHUNK = 1 << 20
_RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


class RangeNotSatisfiable(InvalidInput):
    """A Range header that selects no byte of the file."""

    http_status = 416


def _number(digits: str) -> int:
    # Any number of over 19 digits is past every file's end; int() of thousands of digits
    # would raise (Python's digit limit) or cost time.
    return int(digits) if len(digits) <= 19 else 1 << 64


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a ``Range`` header asks for, or None for the whole file (no
    header, a unit other than bytes, several ranges: the server may answer with all of it)."""
    if value is None:
        return None
    m = _RANGE_RE.fullmatch(value.strip())
    if m is None:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        n = _number(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(f"range {value[:80]!r} selects nothing of {size} bytes")
        return max(0, size - n), size - 1
    start = _number(first)
    end = min(_number(last), size - 1) if last else size - 1
    if start >= size or (last and _number(last) < start):
        raise RangeNotSatisfiable(f"range {value[:80]!r} is outside the file's {size} bytes")
    return start, end


def iter_bytes(
    read: TensorBytes,
    file: FileLayout,
    start: int,
    end: int,
    sent: Callable[[int], None],
) -> Iterator[bytes]:
    """Bytes ``start..end`` (inclusive) of the file; ``sent`` is told each chunk's size."""
    stop = end + 1
    if start < len(file.head):
        piece = file.head[start:stop]
        sent(len(piece))
        yield piece
    for offset, entry in file.tensors:
        lo, hi = max(start, offset), min(stop, offset + entry.nbytes)
        if lo >= hi:
            continue
        raw = memoryview(read(entry))  # type: ignore[arg-type]
        for at in range(lo, hi, CHUNK):
            piece = bytes(raw[at - offset : min(hi, at + CHUNK) - offset])
            sent(len(piece))
            yield piece
