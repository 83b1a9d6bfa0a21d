"""Weights files out: standard safetensors streamed one tensor at a time to a destination that
is replaced atomically, never one of the store's own files; model folders the same way."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from weightstore.errors import (
    CorruptObject,
    InvalidInput,
    NotFound,
    StorageError,
    WeightstoreError,
)
from weightstore.files.layout import safetensors_head


def write_safetensors(
    path: str | os.PathLike[str],
    entries: list[tuple[str, str, tuple[int, ...], int]],
    fill: Callable[[int], bytes | memoryview],
    metadata: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    protected: Sequence[Path] = (),
    overwrite: bool = True,
) -> None:
    """Write a standard safetensors file, streaming tensor data.

    ``entries``: (name, dtype name, shape, nbytes) in file order; ``fill(i)`` returns the raw
    bytes of entry ``i``. Where it may go is :func:`open_destination`'s rule; ``protected``
    names the store's own files and folders, which it refuses.
    """
    head = safetensors_head(entries, metadata)
    with open_destination(path, protected, overwrite=overwrite) as f:
        f.write(head)
        for i, (name, _, _, nbytes) in enumerate(entries):
            data = fill(i)
            if len(data) != nbytes:
                raise InvalidInput(f"{name}: got {len(data)} bytes, expected {nbytes}")
            f.write(data)
            if progress:
                progress(nbytes)


def store_paths(objects_root: Path | None, sqlite_database: str | None) -> list[Path]:
    """The files and folders a store owns, as an export must never overwrite them: the store
    folder (the parent of a local objects folder: objects, SQLite index, config) and a SQLite
    index kept elsewhere, with its journal files."""
    paths = []
    if objects_root is not None:
        paths.append(objects_root.parent)
    if sqlite_database and sqlite_database != ":memory:":
        db = Path(sqlite_database)
        paths += [db.with_name(db.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    return [Path(os.path.realpath(p)) for p in paths]


@contextmanager
def open_destination(
    path: str | os.PathLike[str], protected: Sequence[Path] = (), *, overwrite: bool = True
) -> Iterator[BinaryIO]:
    """A binary file to write an export into, by these rules (docs/design.md, "Bad input and
    destinations"): symlinks are followed, never replaced; a new path or an existing regular
    file is written to a temporary file beside it and renamed over it once complete, so a
    failure leaves the old file or nothing; an existing FIFO or character device (a pipe,
    /dev/null, a terminal) is written in place as a stream; a folder, a missing folder, a
    socket or block device, and anything inside ``protected`` are refused with nothing written;
    so is an existing regular file unless ``overwrite``.
    """
    text = os.fspath(path)
    target = Path(text)
    if text.endswith(("/", os.sep)) or target.is_dir():
        raise InvalidInput(
            f"{text} is a folder: give the file to write, e.g. {target / 'model.safetensors'}"
        )
    try:
        mode: int | None = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise InvalidInput(f"{text}: cannot be written ({e.strerror or e})") from e
    if mode is not None and not stat.S_ISREG(mode):
        if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
            kind = "socket" if stat.S_ISSOCK(mode) else "block device or other special file"
            raise InvalidInput(
                f"{text} is a {kind}: export to a file, a pipe or a character device"
            )
        _refuse_protected(target, Path(os.path.realpath(target)), protected)
        with _storage_errors(target), open(target, "wb", buffering=0) as stream:
            yield stream
        return
    real = Path(os.path.realpath(target))
    if mode is not None and not overwrite:
        raise InvalidInput(f"{text} exists: pass --force (overwrite=True) to replace it")
    folder = real.parent
    if not folder.is_dir():
        raise NotFound(f"folder {target.parent} does not exist: create it first")
    _refuse_protected(target, real, protected)
    tmp = folder / f".{real.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with _storage_errors(target), tmp.open("xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, real)
    finally:
        tmp.unlink(missing_ok=True)


def _refuse_protected(target: Path, real: Path, protected: Sequence[Path]) -> None:
    for own in protected:
        if real == own or own in real.parents:
            raise InvalidInput(
                f"{target} is inside the store's own files ({own}): export somewhere else"
            )


@contextmanager
def _storage_errors(target: Path) -> Iterator[None]:
    """Writing failures (disk full, permissions) as :class:`StorageError`; weightstore's own
    errors (some of which are OSErrors too) pass through unchanged."""
    try:
        yield
    except WeightstoreError:
        raise
    except OSError as e:
        raise StorageError(f"cannot write {target}: {e.strerror or e}; nothing was exported") from e


def write_folder(
    path: str | os.PathLike[str],
    files: Sequence[tuple[str, int, str, Callable[[], Iterator[bytes | memoryview]]]],
    protected: Sequence[Path] = (),
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write a model folder: each of ``files`` is (relative path, size, sha256, its bytes in
    pieces). The folder is built beside ``path`` under a temporary name and renamed into place
    once every file is complete and matches its size and SHA-256, so a failure leaves nothing;
    ``path`` must not exist or be an empty folder."""
    text = os.fspath(path)
    target = Path(text)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise InvalidInput(f"{text} exists and is not an empty folder: export to a new folder")
    real = Path(os.path.realpath(target))
    if not real.parent.is_dir():
        raise NotFound(f"folder {target.parent} does not exist: create it first")
    _refuse_protected(target, real, protected)
    tmp = real.parent / f".{real.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with _storage_errors(target):
            tmp.mkdir()
            for rel, size, sha, pieces in files:
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                h, n = hashlib.sha256(), 0
                with out.open("xb") as f:
                    for piece in pieces():
                        f.write(piece)
                        h.update(piece)
                        n += len(piece)
                        if progress:
                            progress(len(piece))
                    f.flush()
                    os.fsync(f.fileno())
                if (n, h.hexdigest()) != (size, sha):
                    raise CorruptObject(
                        f"{rel}: rebuilt as {n} bytes with another SHA-256 than the "
                        f"{size} bytes saved; run `weightstore verify`"
                    )
            if target.is_dir():
                target.rmdir()
            os.replace(tmp, real)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
