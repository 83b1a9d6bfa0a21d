"""A snapshot as a standard safetensors file: one layout for export, the ``/safetensors``
download and the Hub routes, so that each equals the others bit for bit.

The header (names, dtypes, shapes, offsets, the snapshot's ``__metadata__``) is known before any
tensor is decoded, so a server can send ``Content-Length`` and serve byte ranges that decode only
the tensors they overlap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from weightstore.codec.layout import U8
from weightstore.errors import CorruptObject
from weightstore.files import safetensors_head, write_folder, write_safetensors
from weightstore.folders import FolderFile, folder_files
from weightstore.forms import export_metadata
from weightstore.ports import Progress
from weightstore.types import RESERVED_PREFIX, Snapshot, TensorEntry

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
    return [(t.name, t.dtype, t.shape, t.nbytes) for t in snap.weights]


def file_layout(snap: Snapshot) -> FileLayout:
    head = safetensors_head(_entries(snap), export_metadata(snap))
    starts, at = [], len(head)
    for t in snap.weights:
        starts.append((at, t))
        at += t.nbytes
    return FileLayout(head, tuple(starts), at)


def write_snapshot_file(
    snap: Snapshot,
    path: str | os.PathLike[str],
    read: TensorBytes,
    progress: Progress | None = None,
    protected: Sequence[Path] = (),
    overwrite: bool = True,
) -> None:
    """Write ``snap`` as a safetensors file, each tensor's bytes from ``read``. ``protected``:
    paths the file must not replace (the store's own); an existing file is replaced only if
    ``overwrite``."""

    def fill(i: int) -> memoryview:
        return memoryview(read(snap.weights[i]))  # type: ignore[arg-type]

    meta = export_metadata(snap)
    write_safetensors(path, _entries(snap), fill, meta, progress, protected, overwrite)


def export_snapshot(
    snap: Snapshot,
    path: str | os.PathLike[str],
    reader: Callable[[Sequence[TensorEntry]], TensorBytes],
    progress: Progress | None = None,
    protected: Sequence[Path] = (),
    overwrite: bool = False,
) -> None:
    """Write ``snap`` as one safetensors file (an existing one is replaced only if
    ``overwrite``), or, saved from a folder, as that folder
    (``path`` then names a new or empty folder); ``reader`` gives the bytes of the entries it
    is handed (local or remote: one rule for both)."""
    files = folder_files(snap.metadata)
    if not files:
        write_snapshot_file(snap, path, reader(snap.weights), progress, protected, overwrite)
        return
    read = reader(snap.tensors)
    layouts = [(f, folder_file_layout(snap, f, read)) for f in files]
    write_folder(
        path,
        [(f.path, f.size, f.sha256, partial(file_pieces, lay, read)) for f, lay in layouts],
        protected,
        progress,
    )


def folder_file_layout(snap: Snapshot, file: FolderFile, read: TensorBytes) -> FileLayout:
    """The layout of one file of ``snap``'s folder: its bytes, or (a safetensors file rebuilt
    from tensors) its saved header followed by its tensors in the header's data order. A
    header that does not describe exactly the file recorded is :class:`CorruptObject`."""
    by_name = {t.name: t for t in snap.tensors}
    entry = by_name[file.entry]
    if not file.rebuilt:
        return FileLayout(b"", ((0, entry),), file.size)
    head = bytes(read(entry))
    try:
        header = json.loads(head[8:])
        spans = sorted(
            (info["data_offsets"][0], info["data_offsets"][1], name)
            for name, info in header.items()
            if name != "__metadata__"
        )
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise CorruptObject(f"{snap.short_id}: the header of {file.path!r} is malformed") from e
    at, tensors = 0, []
    for begin, end, name in spans:
        t = by_name.get(name)
        if (
            t is None
            or t.name.startswith(RESERVED_PREFIX)
            or begin != at
            or end - begin != t.nbytes
        ):
            raise CorruptObject(
                f"{snap.short_id}: the header of {file.path!r} does not match tensor {name!r}"
            )
        tensors.append((len(head) + begin, t))
        at = end
    if len(head) + at != file.size:
        raise CorruptObject(f"{snap.short_id}: {file.path!r} rebuilds to another size")
    return FileLayout(head, tuple(tensors), file.size)


def file_pieces(layout: FileLayout, read: TensorBytes) -> Iterator[bytes | memoryview]:
    """The bytes of a file in pieces of at most one tensor each."""
    if layout.head:
        yield layout.head
    for _, entry in layout.tensors:
        yield memoryview(read(entry))  # type: ignore[arg-type]
