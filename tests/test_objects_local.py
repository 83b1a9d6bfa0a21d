"""Tests of what only the local file backend promises: layout, file modes, temp files, failures."""

from __future__ import annotations

import errno
import os
import stat
import time
import tracemalloc
from pathlib import Path

import pytest

from weightstore.errors import InvalidInput, ObjectNotFound, StorageError
from weightstore.objects import LocalBackend

KEY = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"
OTHER = "ab" + "f" * 62


@pytest.fixture
def store(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "store")


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_objects_are_read_only_files(store: LocalBackend) -> None:
    store.put(KEY, b"x")
    assert stat.S_IMODE(os.stat(store.root / "ab" / KEY).st_mode) == 0o444

    store.put(KEY, b"x")
    assert stat.S_IMODE(os.stat(store.root / "ab" / KEY).st_mode) == 0o444


def test_fanout_layout_uses_the_first_two_characters(store: LocalBackend) -> None:
    store.put(KEY, b"digest-named")
    store.put("a", b"one character")

    assert _tree(store.root) == sorted(["ab", f"ab/{KEY}", "a", "a/a"])
    assert (store.root / "ab" / KEY).read_bytes() == b"digest-named"


def test_reads_do_not_create_the_root(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "missing" / "store")

    assert store.exists(KEY) is False
    with pytest.raises(ObjectNotFound):
        store.get(KEY)
    with pytest.raises(ObjectNotFound):
        store.get_range(KEY, 0, 1)
    assert list(store.iterate()) == []
    assert store.delete(KEY) is False
    assert store.cleanup_temp() == 0
    assert _tree(tmp_path) == []

    store.put(KEY, b"x")
    assert store.get(KEY) == b"x"


def test_relative_root_is_pinned_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    store = LocalBackend("store")
    monkeypatch.chdir(tmp_path / "elsewhere")

    store.put(KEY, b"x")

    assert store.root == tmp_path / "store"
    assert (tmp_path / "store" / "ab" / KEY).exists()
    assert _tree(tmp_path / "elsewhere") == []


def test_leftover_temp_file_is_invisible_and_cleaned_up(store: LocalBackend) -> None:
    store.put(OTHER, b"complete")
    # What a writer that crashed before its rename leaves behind.
    leftover = store.root / "ab" / f".tmp-99999-deadbeef{KEY}"
    leftover.write_bytes(b"half an obj")

    assert not store.exists(KEY)
    assert [info.key for info in store.iterate()] == [OTHER]
    assert store.cleanup_temp() == 0  # too fresh: it might be a put still in flight
    assert leftover.exists()

    two_hours_ago = time.time() - 7200
    os.utime(leftover, (two_hours_ago, two_hours_ago))
    assert store.cleanup_temp() == 1

    assert not leftover.exists()
    # Even with no age limit, finished objects are never temp files.
    assert store.cleanup_temp(older_than_seconds=0) == 0
    assert store.get(OTHER) == b"complete"


@pytest.mark.parametrize("bad", [-1, float("nan"), "3600"])
def test_cleanup_temp_rejects_bad_thresholds(store: LocalBackend, bad: object) -> None:
    with pytest.raises(InvalidInput):
        store.cleanup_temp(bad)  # type: ignore[arg-type]


def test_failed_put_leaves_neither_object_nor_temp_file(
    store: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put(OTHER, b"already here")
    renamed: list[str] = []

    # Simulates a full disk: a real ENOSPC needs a tiny dedicated file system, which a test
    # cannot mount; failing the rename also proves cleanup after the temp file is complete.
    def full_disk(src: str, dst: str) -> None:
        renamed.append(os.path.basename(src))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)

    with pytest.raises(StorageError, match="No space left on device") as info:
        store.put(KEY, b"new object")
    assert isinstance(info.value, OSError)
    with pytest.raises(StorageError):
        store.put(OTHER, b"replacement")

    monkeypatch.undo()
    assert renamed[0].startswith(f".tmp-{os.getpid()}-")
    assert not store.exists(KEY)
    assert store.get(OTHER) == b"already here"
    assert _tree(store.root) == sorted(["ab", f"ab/{OTHER}"])


def test_root_that_is_a_file_gives_storage_error(tmp_path: Path) -> None:
    (tmp_path / "store").write_bytes(b"not a folder")
    store = LocalBackend(tmp_path / "store")

    with pytest.raises(StorageError, match="local:"):
        store.put(KEY, b"x")
    with pytest.raises(StorageError):
        store.get(KEY)
    with pytest.raises(StorageError):
        list(store.iterate())
    assert (tmp_path / "store").read_bytes() == b"not a folder"


def test_object_path_that_is_a_folder_gives_storage_error(store: LocalBackend) -> None:
    (store.root / "ab" / KEY).mkdir(parents=True)

    with pytest.raises(StorageError, match="not a regular file"):
        store.stat(KEY)
    with pytest.raises(StorageError):
        store.get(KEY)
    assert list(store.iterate()) == []


@pytest.mark.parametrize("key", ["../x", "../../x", "../../../x", "ab/../../x", "/x"])
def test_path_trick_keys_cannot_write_outside_the_root(tmp_path: Path, key: str) -> None:
    store = LocalBackend(tmp_path / "a" / "b" / "store")

    with pytest.raises(InvalidInput):
        store.put(key, b"escaped")

    assert _tree(tmp_path) == []


def test_iterate_skips_files_that_are_not_objects(store: LocalBackend) -> None:
    store.put(KEY, b"real")
    (store.root / "README").write_text("stray file at the root")
    (store.root / "XY").mkdir()
    (store.root / "XY" / "xy00").write_bytes(b"folder name is not a fan-out name")
    (store.root / "ab" / ("AB" + KEY[2:])).write_bytes(b"name is not a key")
    (store.root / "ab" / ("ab" + "X" * 62)).write_bytes(b"right folder, not a key")
    (store.root / "ab" / ("ab" * 100)).write_bytes(b"right folder, key too long")
    (store.root / "cd").mkdir()
    (store.root / "cd" / "ab00").write_bytes(b"in the wrong fan-out folder")
    (store.root / "ab" / "ab-subfolder").mkdir()

    assert [(info.key, info.size) for info in store.iterate()] == [(KEY, 4)]


def test_vanished_file_reads_as_not_found(store: LocalBackend) -> None:
    store.put(KEY, b"x")
    assert store.exists(KEY)
    # Another process (a gc, a user) deletes the file behind this backend's back.
    os.unlink(store.root / "ab" / KEY)

    with pytest.raises(ObjectNotFound):
        store.get(KEY)
    with pytest.raises(ObjectNotFound):
        store.get_range(KEY, 0, 1)
    assert store.delete(KEY) is False


def test_get_range_reads_only_the_range(store: LocalBackend) -> None:
    size = 16 * 1024 * 1024
    store.put(KEY, bytes(size // 2) + b"needle" + bytes(size // 2))

    tracemalloc.start()
    try:
        got = store.get_range(KEY, size // 2, 6)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert got == b"needle"
    assert peak < 1024 * 1024  # reading the whole file would allocate 16 MiB


def test_without_fsync_objects_still_round_trip(tmp_path: Path) -> None:
    store = LocalBackend(tmp_path / "store", fsync=False)

    store.put(KEY, b"fast")

    assert store.get(KEY) == b"fast"
    assert stat.S_IMODE(os.stat(store.root / "ab" / KEY).st_mode) == 0o444
    assert store.delete(KEY) is True
