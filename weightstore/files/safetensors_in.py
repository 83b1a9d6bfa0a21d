"""A safetensors file read without torch and without a memory map.

The header is checked as the safetensors library checks it (a JSON object after an 8-byte
length, known dtypes, each tensor's byte range matching its shape, the ranges contiguous from
the start and covering the rest of the file exactly); each tensor is then read with ``pread``
into a fresh buffer. A memory map would turn a file that shrinks while it is read (an rsync, a
checkpoint rewritten in place) into SIGBUS, which kills the process; a read that comes up short
is an :class:`InputChanged` error instead.
"""

from __future__ import annotations

import math
import os
import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weightstore.dtypes import DtypeInfo, safetensors_dtype
from weightstore.errors import CorruptFile, InputChanged, UnsupportedDtype
from weightstore.inputs import load_json_object
from weightstore.sources import RawTensor

MAX_HEADER = 100_000_000  # the safetensors library's own limit


@dataclass(frozen=True)
class Stored:
    """One tensor of a file: its dtype, torch shape and absolute byte range."""

    info: DtypeInfo
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A checked safetensors header: tensors in file order, and ``__metadata__``."""

    tensors: dict[str, Stored]
    metadata: dict[str, str]
    length: int  # bytes before the first tensor's data: 8 + the JSON header


def read_header(path: Path) -> Header:
    """The header of the safetensors file ``path``; :class:`CorruptFile` if it is not one."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise CorruptFile(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise CorruptFile(f"{path}: not a safetensors file (header length {n})")
            text = f.read(n)
    except OSError as e:
        raise CorruptFile(f"{path}: cannot be read ({e.strerror or e})") from e
    if len(text) < n or not text.startswith(b"{"):
        raise CorruptFile(f"{path}: not a safetensors file (the header is not a JSON object)")
    raw = load_json_object(text, f"{path}: header", CorruptFile)
    return _check(path, raw, 8 + n, size - 8 - n)


def _check(path: Path, raw: dict[str, object], length: int, data_size: int) -> Header:
    metadata: dict[str, str] = {}
    spans: list[tuple[int, int, str, DtypeInfo, list[int]]] = []
    for name, value in raw.items():
        if name == "__metadata__":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise CorruptFile(f"{path}: __metadata__ must map strings to strings")
            metadata = dict(value)
            continue
        if not isinstance(value, dict):
            raise CorruptFile(f"{path}: tensor {name!r} is not described by an object")
        code, dims, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
        if not isinstance(code, str):
            raise CorruptFile(f"{path}: tensor {name!r} has no dtype")
        try:
            info = safetensors_dtype(code)
        except UnsupportedDtype as e:
            raise UnsupportedDtype(f"{path}: tensor {name!r}: {e}") from None
        if not (isinstance(dims, list) and all(_count(d) for d in dims)):
            raise CorruptFile(f"{path}: tensor {name!r} has no valid shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_count, offsets))):
            raise CorruptFile(f"{path}: tensor {name!r} has no valid data_offsets")
        spans.append((offsets[0], offsets[1], name, info, dims))
    spans.sort(key=lambda s: (s[0], s[1]))
    tensors: dict[str, Stored] = {}
    at = 0
    for begin, end, name, info, dims in spans:
        if begin != at or end < begin:
            raise CorruptFile(
                f"{path}: tensor {name!r} at bytes {begin}-{end} does not follow the previous "
                f"one (ends at {at}): the data regions must be contiguous"
            )
        shape = info.torch_shape(dims)
        bits = math.prod(dims) * (4 if info.packed == 2 else 8 * info.itemsize)
        if shape is None or bits != 8 * (end - begin):
            raise CorruptFile(
                f"{path}: tensor {name!r} is {info.safetensors}{dims} but holds {end - begin} bytes"
            )
        tensors[name] = Stored(info, shape, length + begin, length + end)
        at = end
    if at != data_size:
        raise CorruptFile(
            f"{path}: the header describes {at} bytes of tensor data but the file holds "
            f"{data_size}: it is truncated or has bytes no tensor owns"
        )
    return Header(tensors, metadata, length)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_range(fd: int, path: Path, begin: int, end: int) -> np.ndarray:
    """Bytes ``begin:end`` of the open file ``fd`` in a fresh buffer; :class:`InputChanged` if
    the file ends sooner (it shrank since its header was read)."""
    out = np.empty(end - begin, dtype=np.uint8)
    view = memoryview(out)  # type: ignore[arg-type]
    done = 0
    while done < len(view):
        try:
            got = os.preadv(fd, [view[done:]], begin + done)
        except OSError as e:
            raise CorruptFile(f"{path}: cannot be read ({e.strerror or e})") from e
        if got == 0:
            raise InputChanged(
                f"{path} shrank while it was read (bytes {begin}-{end} are no longer there): "
                "nothing was committed"
            )
        done += got
    return out


class SafetensorsWeights(Mapping[str, RawTensor]):
    """A lazy, read-only mapping over one or more safetensors files, given their checked
    headers (:func:`read_header`, read once): each tensor is read from its file when it is
    looked up, so a save holds one at a time, not the whole model. ``names``: the tensors to
    offer (default: every tensor of every file, in file order)."""

    def __init__(self, headers: Mapping[Path, Header], names: Mapping[str, Path] | None = None):
        self._headers = dict(headers)
        self._where = (
            dict(names)
            if names is not None
            else {name: path for path, header in self._headers.items() for name in header.tensors}
        )
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()

    @property
    def headers(self) -> Mapping[Path, Header]:
        return self._headers

    @property
    def metadata(self) -> dict[str, str]:
        """``__metadata__`` of a single file (empty for several: shards carry their own)."""
        return next(iter(self._headers.values())).metadata if len(self._headers) == 1 else {}

    def _open(self, path: Path) -> int:
        with self._lock:
            fd = self._fds.get(path)
            if fd is None:
                try:
                    fd = self._fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise CorruptFile(f"{path}: cannot be read ({e.strerror or e})") from e
            return fd

    def __getitem__(self, name: str) -> RawTensor:
        path = self._where[name]
        stored = self._headers[path].tensors[name]
        data = read_range(self._open(path), path, stored.begin, stored.end)
        return RawTensor(stored.info.name, stored.shape, data, owned=True)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def close(self) -> None:
        """Close the files (also done when the mapping is collected)."""
        with self._lock:
            fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __del__(self) -> None:
        self.close()
