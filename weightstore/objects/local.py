"""An object backend that keeps each blob as one read-only file under a local directory.

Layout: ``root/<first two characters of the key>/<full key>``, e.g.
``root/ab/abcdef0123...``. The file carries the whole key rather than the rest after the fan-out
prefix because the rest can be empty, ``"."`` or ``".."`` for short keys (``"ab"``, ``"a.."``),
and because a file name alone then says which object it is. A one-character key lives in a
one-character folder (``root/a/a``).

Writes are atomic and durable: the bytes go to a temp file named ``.tmp-<pid>-<random>`` in the
same fan-out folder, are flushed and fsynced, made read-only (0o444), renamed onto the final name
with ``os.replace``, and then the folder is fsynced (and the root, when the fan-out folder is
new, so the folder's own entry survives a crash too). Temp names start with a dot, which no key
may, so a crashed writer's leftovers are never mistaken for objects; :meth:`cleanup_temp` removes
old ones.

The root is created (with its parents) by the first ``put``, never by a read: reading a store that
does not exist finds no objects instead of leaving empty folders behind a typo.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat as stat_mod
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from weightstore.errors import InvalidInput, ObjectNotFound, StorageError
from weightstore.objects.base import (
    KEY_PATTERN,
    ObjectBackend,
    ObjectInfo,
    byte_view,
    validate_key,
    validate_range,
)

__all__ = ["LocalBackend"]

_TEMP_PREFIX = ".tmp-"
_FANOUT = 2
# Longer than a fan-out folder's name, so it is never listed as one.
_STORE_ID_FILE = "store-id"


def _load_syncfs() -> Callable[[Path], None] | None:
    """``syncfs(2)`` through libc (Linux): flushes one filesystem in a single call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]

    def syncfs(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if call(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(path))
        finally:
            os.close(fd)

    return syncfs


_syncfs = _load_syncfs()


def _is_fanout_name(name: str) -> bool:
    return len(name) <= _FANOUT and KEY_PATTERN.fullmatch(name) is not None


def _fsync_dir(path: Path) -> None:
    # Directories cannot be opened for fsync on every platform (Windows has no O_DIRECTORY);
    # there a rename is as durable as the OS makes it and there is nothing more to do.
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend(ObjectBackend):
    """Objects as read-only files under ``root`` (see the module docstring for the layout).

    ``fsync=False`` skips every fsync: faster, but a crash or power loss may lose or empty
    recently written objects. Use it only for stores that can be rebuilt.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        # Absolute now, so a later chdir by the caller cannot move the store.
        self._root = Path(os.path.abspath(os.fspath(root)))
        self._fsync = fsync

    @property
    def root(self) -> Path:
        """The absolute directory holding the fan-out folders."""
        return self._root

    def __repr__(self) -> str:
        return f"LocalBackend({str(self._root)!r}, fsync={self._fsync})"

    def describe(self) -> str:
        return f"local:{self._root}"

    def _path(self, key: str) -> Path:
        return self._root / key[:_FANOUT] / key

    def _not_found(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"object {key!r} not found in {self.describe()}")

    def _storage_error(self, action: str, key: str, exc: OSError) -> StorageError:
        return StorageError(
            f"cannot {action} object {key!r} in {self.describe()}: {exc}; "
            "check that the directory exists, is writable and has free space"
        )

    # -- writing ------------------------------------------------------------------------------

    def _ensure_fanout_dir(self, fanout: Path) -> list[Path]:
        """Create ``fanout`` (and the root) if needed; return the folders whose entries changed."""
        try:
            os.mkdir(fanout)
        except FileExistsError:
            return []
        except FileNotFoundError:
            root_is_new = not self._root.exists()
            self._root.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(fanout)
            except FileExistsError:
                return []
            return [self._root, self._root.parent] if root_is_new else [self._root]
        return [self._root]

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        key = validate_key(key)
        fanout = self._root / key[:_FANOUT]
        final = fanout / key
        with byte_view(data) as view:
            tmp: str | None = None
            try:
                changed_dirs = self._ensure_fanout_dir(fanout)
                # A unique name per writer lets concurrent puts of one key proceed without locks:
                # each renames its own complete file, and the last rename wins.
                fd, tmp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-", dir=fanout)
                with os.fdopen(fd, "wb") as f:
                    f.write(view)
                    f.flush()
                    if self._fsync:
                        os.fsync(f.fileno())
                # Objects are immutable; read-only files guard them against stray writers.
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)
                tmp = None
                if self._fsync:
                    _fsync_dir(fanout)
                    for folder in changed_dirs:
                        _fsync_dir(folder)
            except OSError as exc:
                if tmp is not None:
                    # A failed unlink is dropped: the original error is the one worth reporting.
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                raise self._storage_error("write", key, exc) from exc

    def put_many(self, items: Sequence[tuple[str, bytes | bytearray | memoryview]]) -> None:
        """Put several objects with one durability barrier per step instead of two fsyncs each.

        Every temp file is written, then made durable (one ``syncfs`` of the filesystem on
        Linux, else an fsync per file), then renamed, then the renames are made durable (one
        more ``syncfs``, else an fsync per folder). The order of the guarantees is that of
        :meth:`put`; on a failure the objects renamed so far stay (each is complete) and the
        rest are absent.
        """
        items = [(validate_key(key), data) for key, data in items]  # before writing anything
        if len(items) < 2 or not self._fsync or _syncfs is None:
            for key, data in items:
                self.put(key, data)
            return
        staged: list[tuple[str, Path, str]] = []
        try:
            for key, data in items:
                fanout = self._root / key[:_FANOUT]
                self._ensure_fanout_dir(fanout)  # new folders are made durable by syncfs
                with byte_view(data) as view:
                    fd, tmp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-", dir=fanout)
                    staged.append((key, fanout / key, tmp))
                    with os.fdopen(fd, "wb") as f:
                        f.write(view)
                os.chmod(tmp, 0o444)
            _syncfs(self._root)
            while staged:
                key, final, tmp = staged[0]
                os.replace(tmp, final)
                staged.pop(0)
            _syncfs(self._root)
        except OSError as exc:
            for _, _, tmp in staged:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise self._storage_error("write", staged[0][0] if staged else "", exc) from exc

    # -- reading ------------------------------------------------------------------------------

    def _stat_result(self, key: str) -> os.stat_result:
        try:
            result = os.stat(self._path(key))
        except FileNotFoundError:
            raise self._not_found(key) from None
        except OSError as exc:
            raise self._storage_error("stat", key, exc) from exc
        if not stat_mod.S_ISREG(result.st_mode):
            raise StorageError(
                f"object {key!r} in {self.describe()} is not a regular file "
                f"({self._path(key)}); move it out of the store"
            )
        return result

    def _open_regular(self, key: str) -> BinaryIO:
        """The object's file opened for reading, if it is a regular file. O_NONBLOCK so that a
        FIFO put in an object's place cannot block the open (it has no effect on regular
        files); anything but a regular file is a :class:`StorageError`."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            # Also covers a file deleted between a caller's exists() and this open.
            raise self._not_found(key) from None
        except OSError as exc:
            raise self._storage_error("read", key, exc) from exc
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StorageError(
                f"object {key!r} in {self.describe()} is not a regular file ({path}); "
                "move it out of the store"
            )
        return os.fdopen(fd, "rb")

    def get(self, key: str) -> bytes:
        key = validate_key(key)
        with self._open_regular(key) as f:
            try:
                return f.read()
            except OSError as exc:
                raise self._storage_error("read", key, exc) from exc

    def get_view(self, key: str) -> bytes | memoryview:
        key = validate_key(key)
        with self._open_regular(key) as f:
            try:
                # Read into a buffer, never a memory map: a mapped file that shrinks (a bad
                # sector, an rsync, a repair under a live server) raises SIGBUS on the next
                # access and kills the process. A file cut while read gives a short buffer,
                # which the header and digest checks refuse as a corrupt object.
                # numpy's buffers of 4 MiB and more get transparent huge pages, so filling one
                # faults in far fewer pages than a bytearray. Imported here: the torch-free
                # listings open this backend and never read an object.
                import numpy as np

                view = np.empty(os.fstat(f.fileno()).st_size, dtype=np.uint8).data
                got = 0
                while got < len(view) and (n := os.readv(f.fileno(), [view[got:]])):
                    got += n
                return view[:got]
            except OSError as exc:
                raise self._storage_error("read", key, exc) from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        key = validate_key(key)
        start, length = validate_range(start, length)
        with self._open_regular(key) as f:
            try:
                # Clip before reading: f.read(n) allocates n bytes up front, and callers may ask
                # for "everything from start" with a huge length.
                end = min(start + length, os.fstat(f.fileno()).st_size)
                if start >= end:
                    return b""
                f.seek(start)
                return f.read(end - start)
            except OSError as exc:
                raise self._storage_error("read", key, exc) from exc

    def exists(self, key: str) -> bool:
        key = validate_key(key)
        try:
            self._stat_result(key)
        except ObjectNotFound:
            return False
        return True

    def stat(self, key: str) -> ObjectInfo:
        key = validate_key(key)
        result = self._stat_result(key)
        return ObjectInfo(key=key, size=result.st_size, modified=result.st_mtime)

    def delete(self, key: str) -> bool:
        key = validate_key(key)
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._storage_error("delete", key, exc) from exc
        # Empty fan-out folders stay: removing one would race with a put that just created it.
        if self._fsync:
            try:
                _fsync_dir(path.parent)
            except OSError as exc:
                raise self._storage_error("delete", key, exc) from exc
        return True

    def read_store_id(self) -> str | None:
        path = self._root / _STORE_ID_FILE
        try:
            # O_NONBLOCK, as in _open_regular: a FIFO there must not block the open.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise StorageError(f"{path} is not a regular file: move it out of the store")
            with os.fdopen(fd, "rb") as f:
                text = f.read(200).decode("ascii", "replace").strip()
        except FileNotFoundError:
            return None
        except StorageError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot read the store id at {path}: {exc}") from exc
        return text or None

    def write_store_id(self, store_id: str) -> None:
        path = self._root / _STORE_ID_FILE
        tmp: str | None = None
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=self._root)
            with os.fdopen(fd, "w") as f:
                f.write(store_id + "\n")
                f.flush()
                if self._fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            if self._fsync:
                _fsync_dir(self._root)
        except OSError as exc:
            raise StorageError(f"cannot write the store id at {path}: {exc}") from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _fanout_dirs(self) -> Iterator[os.DirEntry[str]]:
        try:
            entries = os.scandir(self._root)
        except FileNotFoundError:
            return
        with entries:
            for entry in entries:
                if _is_fanout_name(entry.name) and entry.is_dir():
                    yield entry

    def iterate(self) -> Iterator[ObjectInfo]:
        try:
            for folder in self._fanout_dirs():
                try:
                    entries = os.scandir(folder.path)
                except FileNotFoundError:
                    continue
                with entries:
                    for entry in entries:
                        name = entry.name
                        # Temp files start with ".", which no key may, so the key check skips
                        # them too; the prefix check keeps files in the wrong folder out.
                        if KEY_PATTERN.fullmatch(name) is None or name[:_FANOUT] != folder.name:
                            continue
                        try:
                            result = entry.stat()
                        except FileNotFoundError:
                            continue  # deleted while we were listing
                        if stat_mod.S_ISREG(result.st_mode):
                            yield ObjectInfo(
                                key=name, size=result.st_size, modified=result.st_mtime
                            )
        except OSError as exc:
            raise StorageError(
                f"cannot list objects in {self.describe()}: {exc}; "
                "check that the directory is readable"
            ) from exc

    # -- maintenance --------------------------------------------------------------------------

    def cleanup_temp(self, older_than_seconds: float = 3600) -> int:
        """Remove temp files of crashed writers last modified over ``older_than_seconds`` ago.

        Returns how many were removed. A put still writing after that long would fail with
        ``StorageError`` at its rename, so keep the threshold well above the slowest put.
        """
        if not isinstance(older_than_seconds, int | float) or not older_than_seconds >= 0:
            raise InvalidInput(
                f"older_than_seconds must be a number >= 0, got {older_than_seconds!r}"
            )
        cutoff = time.time() - older_than_seconds
        removed = 0
        try:
            for folder in self._fanout_dirs():
                try:
                    entries = os.scandir(folder.path)
                except FileNotFoundError:
                    continue
                with entries:
                    for entry in entries:
                        if not entry.name.startswith(_TEMP_PREFIX):
                            continue
                        try:
                            if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                                continue
                            os.unlink(entry.path)
                        except FileNotFoundError:
                            continue  # its writer finished or another cleanup got there first
                        removed += 1
        except OSError as exc:
            raise StorageError(
                f"cannot clean temp files in {self.describe()}: {exc}; "
                "check that the directory is writable"
            ) from exc
        return removed
