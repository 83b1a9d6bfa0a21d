"""A model folder in: every file checked and hashed, safetensors files split into their header and
tensors, the rest kept as bytes (see :mod:`weightstore.folders` for how a snapshot holds them).

Everything is checked before anything is stored: paths (relative, no '..', no link leading out
of the folder, no special files), counts, sizes and a shard index against its shards. A
safetensors file is rebuilt from its tensors only when that gives its exact bytes back (data
regions contiguous and in the header's order, covering the file); any other file, ``.bin``
checkpoints included, is kept byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weightstore.errors import CorruptFile, InputChanged, InvalidInput, NotFound
from weightstore.files.reading import (
    SHARD_INDEX,
    read_weights,
    regular_file_size,
)
from weightstore.files.safetensors_in import Header, SafetensorsWeights, read_header
from weightstore.folders import MAX_FILES, FolderFile, check_file_path
from weightstore.sources import RawTensor, Source
from weightstore.types import FILE_PREFIX, RESERVED_PREFIX

SKIPPED_FOLDERS = frozenset({".git", ".cache"})
"""Top-level folders that are tooling, not model: git's, and ``hf download --local-dir``'s."""
MAX_FILE_BYTES = 1 << 36
_MAX_HEADER = 100 << 20  # safetensors' own limit on a header


@dataclass(frozen=True)
class FolderInput:
    """A folder read in: its files as the record lists them, and every entry to store (weight
    tensors read lazily, file bytes and headers as ``uint8`` tensors)."""

    files: tuple[FolderFile, ...]
    state: Mapping[str, Source]
    stats: Mapping[Path, tuple[int, int, int]]  # (inode, size, mtime_ns) of each file read

    def check_unchanged(self) -> None:
        """:class:`InputChanged` if a file changed since it was read."""
        for path, seen in self.stats.items():
            if _identity(path) != seen:
                raise InputChanged(f"{path} changed while it was saved: nothing was committed")


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative path, real path) of every file under ``root``, in path order."""
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_FOLDERS]
        for d in list(dirnames):
            if (here / d).is_symlink():
                raise InvalidInput(
                    f"{here / d}: a link to a folder; copy it in (cp -rL) so the folder holds it"
                )
        dirnames.sort()
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(root).as_posix()
            real = path.resolve()
            if real != real_root and real_root not in real.parents:
                raise InvalidInput(
                    f"{path}: a link out of the folder (to {real}); copy the file in "
                    "(cp -L, or hf download --local-dir) so the snapshot holds it"
                )
            yield check_file_path(rel), real


def _size(path: Path, shown: Path) -> int:
    size = regular_file_size(path, allow_empty=True)
    if size > MAX_FILE_BYTES:
        raise InvalidInput(f"{shown}: {size} bytes; a file may hold {MAX_FILE_BYTES}")
    return size


def _contiguous_header(path: Path, size: int) -> bytes | None:
    """The header bytes (length + JSON) of a safetensors file that its tensors rebuild
    exactly, or None when they would not (gaps, overlaps, out-of-order regions, trailing
    bytes) and the file is kept as bytes."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                return None
            text = f.read(n)
    except OSError as e:
        raise CorruptFile(f"{path}: cannot be read ({e.strerror or e})") from e
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict):
        return None
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return None
        spans.append((offsets[0], offsets[1], name))
    at = 0
    for begin, end, _ in sorted(spans, key=lambda s: (s[0], s[1])):
        if begin != at or not isinstance(end, int) or end < begin:
            return None
        at = end
    return head + text if 8 + n + at == size else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class _FolderState(Mapping[str, Source]):
    """Weights read lazily from their files; file bytes and headers held in memory."""

    def __init__(self, weights: SafetensorsWeights, blobs: Mapping[str, bytes]) -> None:
        self._weights = weights
        self._blobs = blobs
        self._names = list(weights) + list(blobs)

    def __getitem__(self, name: str) -> Source:
        blob = self._blobs.get(name)
        if blob is None:
            return self._weights[name]
        data = np.frombuffer(blob, dtype=np.uint8)
        return RawTensor("uint8", (data.size,), data)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def read_folder(folder: str | os.PathLike[str]) -> FolderInput:
    """Read the model folder ``folder`` (see the module docstring)."""
    root = Path(folder)
    if not root.is_dir():
        raise NotFound(f"{root}: no such folder")
    headers: dict[Path, Header] = {}
    if (root / SHARD_INDEX).is_file():
        # A shard index that does not match its shards is refused, as ever.
        checked = read_weights(root)
        assert isinstance(checked, SafetensorsWeights)
        headers.update({p.resolve(): h for p, h in checked.headers.items()})
    files: list[FolderFile] = []
    blobs: dict[str, bytes] = {}
    where: dict[str, Path] = {}
    stats: dict[Path, tuple[int, int, int]] = {}
    for rel, real in _walk(root):
        if len(files) >= MAX_FILES:
            raise InvalidInput(f"{root}: more than {MAX_FILES} files")
        size = _size(real, root / rel)
        stats[real] = _identity(real)
        head = _contiguous_header(real, size) if rel.endswith(".safetensors") else None
        if head is not None and real not in headers:
            headers[real] = read_header(real)
        names = list(headers[real].tensors) if head is not None else []
        clash = next((n for n in names if n in where or n.startswith(RESERVED_PREFIX)), None)
        if clash is not None:
            raise InvalidInput(f"{root / rel}: tensor {clash!r} is also in {where.get(clash)}")
        if head is not None:
            where.update(dict.fromkeys(names, real))
            blobs[FILE_PREFIX + rel] = head
            files.append(FolderFile(rel, size, _sha256(real), rebuilt=True))
            continue
        data = real.read_bytes()
        if len(data) != size:
            raise InputChanged(f"{root / rel} changed while it was read")
        blobs[FILE_PREFIX + rel] = data
        files.append(FolderFile(rel, size, hashlib.sha256(data).hexdigest(), rebuilt=False))
    if not files:
        raise InvalidInput(f"{root}: the folder holds no files")
    used = {p: headers[p] for p in set(where.values())}
    return FolderInput(tuple(files), _FolderState(SafetensorsWeights(used, where), blobs), stats)
