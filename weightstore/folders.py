"""A model folder inside a snapshot: the record of its files and the entries holding their bytes.

A snapshot saved from a folder (``config.json``, tokenizer files, ``1_Pooling/config.json``,
shards and their index) keeps, beside its weight tensors:

- for each file, a one-dimensional ``uint8`` entry named ``FILE_PREFIX + path`` holding the
  file's bytes, or, for a safetensors file whose tensors are stored as tensors, the file's
  header (its 8-byte length and JSON header, byte for byte): the file is rebuilt as that header
  followed by its tensors' bytes in the header's data order, so it comes back byte-identical;
- the record, in the snapshot's metadata under ``FOLDER_KEY``: each file's path, size and
  SHA-256, and whether it is rebuilt from tensors.

Entries are ordinary tensor entries, so gc, verify, push, pull and clone carry them and the
snapshot id covers them, with no schema change; the record is part of the metadata, so a HEAD
of any file is answered from the index alone. :func:`check_folder` is the one validation of a
record against its snapshot (for saves and for manifests from elsewhere).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from weightstore.errors import InvalidInput
from weightstore.types import FILE_PREFIX, TensorEntry

FOLDER_KEY = "weightstore.folder"
"""The metadata key of a snapshot's folder record."""
MAX_FILES = 10_000
MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DRIVE_RE = re.compile(r"[A-Za-z]:")


@dataclass(frozen=True)
class FolderFile:
    """One file of a snapshot's folder, as the record lists it."""

    path: str  # relative, '/'-separated
    size: int  # bytes of the file
    sha256: str  # hex SHA-256 of the file's bytes
    rebuilt: bool  # a safetensors file: its entry holds the header, its tensors the rest

    @property
    def entry(self) -> str:
        """The name of the ``uint8`` entry holding the file's bytes (or its header)."""
        return FILE_PREFIX + self.path

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.rebuilt:
            out["safetensors"] = True
        return out


def check_file_path(path: object) -> str:
    """``path`` if it may name a file of a folder: relative, '/'-separated, no empty, '.' or
    '..' segment, no backslash or control character, within length limits."""
    if not isinstance(path, str) or not path:
        raise InvalidInput(f"a file path must be a non-empty string, not {path!r:.80}")
    shown = repr(path[:120])
    if path.startswith("/") or "\\" in path or _DRIVE_RE.match(path):
        raise InvalidInput(f"file path {shown} must be relative, with '/' between folders")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in path):
        raise InvalidInput(f"file path {shown} holds a control character")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidInput(f"file path {shown} is longer than {MAX_PATH_BYTES} bytes")
    try:
        path.encode()
    except UnicodeEncodeError as e:
        raise InvalidInput(f"file path {shown} is not valid Unicode") from e
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidInput(f"file path {shown} has an empty, '.' or '..' segment")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise InvalidInput(f"file path {shown}: a name is longer than {MAX_SEGMENT_BYTES}")
    return path


def record_of(files: Sequence[FolderFile]) -> dict[str, Any]:
    """The metadata value that records ``files``."""
    return {"files": [f.to_json() for f in files]}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parse(record: object) -> tuple[FolderFile, ...]:
    if not isinstance(record, Mapping) or not isinstance(record.get("files"), list):
        raise InvalidInput(f"metadata {FOLDER_KEY!r} must be an object with a 'files' list")
    items: list[Any] = record["files"]
    if len(items) > MAX_FILES:
        raise InvalidInput(f"a folder may hold at most {MAX_FILES} files, not {len(items)}")
    out: list[FolderFile] = []
    for item in items:
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{FOLDER_KEY}: each file must be an object")
        size, sha = _int(item.get("size")), item.get("sha256")
        rebuilt = item.get("safetensors", False)
        if size is None or size < 0 or not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha):
            raise InvalidInput(
                f"{FOLDER_KEY}: file {item.get('path')!r:.80} needs a size and sha256"
            )
        if not isinstance(rebuilt, bool):
            raise InvalidInput(f"{FOLDER_KEY}: 'safetensors' must be true or false")
        out.append(FolderFile(check_file_path(item.get("path")), size, sha, rebuilt))
    return tuple(out)


def folder_files(metadata: Mapping[str, Any]) -> tuple[FolderFile, ...]:
    """The files a snapshot's metadata records (none for a snapshot of bare tensors)."""
    record = metadata.get(FOLDER_KEY)
    return () if record is None else _parse(record)


def check_folder(metadata: Mapping[str, Any], tensors: Sequence[TensorEntry]) -> None:
    """:class:`InvalidInput` unless the folder record and the file entries agree: every file
    has its ``uint8`` entry (of the file's size, unless rebuilt), no file entry is unrecorded,
    paths are distinct and no path is also a folder of another."""
    files = folder_files(metadata)
    entries = {t.name: t for t in tensors if t.name.startswith(FILE_PREFIX)}
    if not files and not entries:
        return
    if not files:
        raise InvalidInput(
            f"tensor names starting {FILE_PREFIX!r} are reserved for the files of a folder "
            f"(weightstore save TASK FOLDER); rename {next(iter(entries))!r}"
        )
    paths = {f.path for f in files}
    if len(paths) != len(files):
        raise InvalidInput(f"{FOLDER_KEY}: a path appears twice")
    for f in files:
        parts = f.path.split("/")
        if any("/".join(parts[:i]) in paths for i in range(1, len(parts))):
            raise InvalidInput(f"{FOLDER_KEY}: {f.path!r} lies inside another file's path")
        entry = entries.pop(f.entry, None)
        if entry is None or entry.dtype != "uint8" or len(entry.shape) != 1:
            raise InvalidInput(f"{FOLDER_KEY}: file {f.path!r} has no uint8 entry {f.entry!r}")
        if not f.rebuilt and entry.nbytes != f.size:
            raise InvalidInput(
                f"{FOLDER_KEY}: file {f.path!r} is {f.size} bytes, its entry {entry.nbytes}"
            )
        if f.rebuilt and entry.nbytes > f.size:
            raise InvalidInput(f"{FOLDER_KEY}: the header of {f.path!r} is larger than the file")
    if entries:
        raise InvalidInput(f"{FOLDER_KEY}: entry {next(iter(entries))!r} is no recorded file")
