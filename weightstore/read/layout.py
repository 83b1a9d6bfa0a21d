"""A snapshot as a standard safetensors file: one layout for export, the ``/safetensors``
download and the Hub routes, so that each equals the others bit for bit.

The header (names, dtypes, shapes, offsets, the snapshot's ``__metadata__``) is known before any
tensor is decoded, so a server can send ``Content-Length`` and serve byte ranges that decode only
the tensors they overlap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from weightstore.codec.layout import U8
from weightstore.files import safetensors_head, write_safetensors
from weightstore.forms import export_metadata
from weightstore.ports import Progress
from weightstore.types import Snapshot, TensorEntry

TensorBytes = Callable[[TensorEntry], U8]  # one tensor's raw bytes, read by the one rule


@dataclass(frozen=True)
class FileLayout:
    """The safetensors file of one snapshot: its header bytes and where each tensor starts."""

    head: bytes  # the 8-byte length and the JSON header
    tensors: tuple[tuple[int, TensorEntry], ...]  # (absolute offset, entry), in file order
    size: int

    def overlapping(self, start: int, stop: int) -> list[TensorEntry]:
        """The tensors with a byte in ``[start, stop)``."""
        return [e for at, e in self.tensors if at < stop and start < at + e.nbytes]


def _entries(snap: Snapshot) -> list[tuple[str, str, tuple[int, ...], int]]:
    return [(t.name, t.dtype, t.shape, t.nbytes) for t in snap.tensors]


def file_layout(snap: Snapshot) -> FileLayout:
    head = safetensors_head(_entries(snap), export_metadata(snap))
    starts, at = [], len(head)
    for t in snap.tensors:
        starts.append((at, t))
        at += t.nbytes
    return FileLayout(head, tuple(starts), at)


def write_snapshot_file(
    snap: Snapshot,
    path: str | os.PathLike[str],
    read: TensorBytes,
    progress: Progress | None = None,
    protected: Sequence[Path] = (),
) -> None:
    """Write ``snap`` as a safetensors file, each tensor's bytes from ``read``. ``protected``:
    paths the file must not replace (the store's own)."""

    def fill(i: int) -> memoryview:
        return memoryview(read(snap.tensors[i]))  # type: ignore[arg-type]

    write_safetensors(path, _entries(snap), fill, export_metadata(snap), progress, protected)
