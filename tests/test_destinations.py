"""Where ``export`` may write (docs/design.md, "Bad input and destinations"): a new or regular
file is replaced atomically, a FIFO or character device is written as a stream and never
replaced, the store's own files and folders are refused, and a failed export leaves nothing
behind."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from weightstore import StoreSettings, WeightStore
from weightstore.cli.main import app
from weightstore.errors import InvalidInput, NotFound, ObjectNotFound

SD = {"w": torch.randn(64, 8), "b": torch.arange(5)}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WeightStore]:
    s = WeightStore.open(tmp_path / "store", settings=StoreSettings(fsync=False))
    s.save("t", SD)
    yield s
    s.close()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def check_written(path: Path) -> None:
    back = load_file(str(path))
    assert all(torch.equal(back[k], SD[k]) for k in SD)


def test_a_regular_file_is_replaced_and_a_new_one_created(
    store: WeightStore, tmp_path: Path
) -> None:
    old = tmp_path / "old.safetensors"
    old.write_bytes(b"old contents")
    with pytest.raises(InvalidInput, match="--force"):  # issue 16: never replaced silently
        store.export("t", old)
    assert old.read_bytes() == b"old contents"
    store.export("t", old, overwrite=True)
    check_written(old)
    store.export("t", tmp_path / "new.safetensors")
    check_written(tmp_path / "new.safetensors")


def test_a_symlink_is_written_through_not_replaced(store: WeightStore, tmp_path: Path) -> None:
    real = tmp_path / "real.safetensors"
    real.write_bytes(b"x")
    link = tmp_path / "link.safetensors"
    link.symlink_to(real)
    store.export("t", link, overwrite=True)
    assert link.is_symlink()
    check_written(real)


@pytest.mark.timeout(60)
def test_a_fifo_is_written_as_a_stream_and_stays_a_fifo(store: WeightStore, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    store.export("t", fifo)
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(got[0])
    check_written(copy)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_character_device_is_written_not_replaced(store: WeightStore, tmp_path: Path) -> None:
    # A private /dev/null (major 1, minor 3): code that replaces devices must not get to
    # replace the real one while this test fails.
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    store.export("t", null)
    assert stat.S_ISCHR(os.lstat(null).st_mode)


def test_a_socket_is_refused(store: WeightStore, tmp_path: Path) -> None:
    import socket

    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(InvalidInput, match="socket"):
            store.export("t", path)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)


@pytest.mark.parametrize(
    "inside",
    [
        "index.sqlite",
        "index.sqlite-wal",
        "weightstore.json",
        "objects",
        "objects/new.safetensors",
        "new.safetensors",
        ".",
    ],
)
def test_targets_inside_the_store_are_refused(
    store: WeightStore, tmp_path: Path, inside: str
) -> None:
    root = tmp_path / "store"
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(InvalidInput):
        store.export("t", root / inside)
    # Also through a symlinked folder that leads into the store.
    (tmp_path / "door").symlink_to(root)
    with pytest.raises(InvalidInput):
        store.export("t", tmp_path / "door" / inside)
    (tmp_path / "door").unlink()
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert store.verify().ok


def test_an_index_outside_the_store_is_protected_too(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "index.db"
    db.parent.mkdir()
    with WeightStore.open(
        tmp_path / "st", index_url=f"sqlite:///{db}", settings=StoreSettings(fsync=False)
    ) as store:
        store.save("t", SD)
        with pytest.raises(InvalidInput):
            store.export("t", db)
        store.export("t", db.parent / "fine.safetensors")
        assert store.log("t")


def test_missing_folder_and_folder_targets_are_typed_errors(
    store: WeightStore, tmp_path: Path
) -> None:
    with pytest.raises(NotFound):
        store.export("t", tmp_path / "missing_dir" / "out.safetensors")
    folder = tmp_path / "some_folder"
    folder.mkdir()
    for target in (folder, f"{folder}/", f"{tmp_path}/not_yet/"):
        with pytest.raises(InvalidInput, match="folder"):
            store.export("t", target)
    assert listing(tmp_path / "some_folder") == [] and not (tmp_path / "not_yet").exists()


def test_a_failed_export_leaves_no_file_and_keeps_the_old_one(
    store: WeightStore, tmp_path: Path
) -> None:
    snap = store.show("t")
    path = store.objects.root / snap.tensors[1].digest[:2] / snap.tensors[1].digest  # type: ignore[attr-defined]
    path.unlink()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ObjectNotFound):
        store.export("t", out / "new.safetensors")
    (out / "old.safetensors").write_bytes(b"keep me")
    with pytest.raises(ObjectNotFound):
        store.export("t", out / "old.safetensors", overwrite=True)
    assert listing(out) == ["old.safetensors"]
    assert (out / "old.safetensors").read_bytes() == b"keep me"


def test_cli_export_destination_errors(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with WeightStore.open(root, settings=StoreSettings(fsync=False)) as store:
        store.save("t", SD)
    runner = CliRunner()
    (tmp_path / "some_folder").mkdir()
    cases = [
        (f"{tmp_path}/missing_dir/out.safetensors", 3),
        (f"{tmp_path}/some_folder/", 2),
        (f"{tmp_path}/some_folder", 2),
        (f"{tmp_path}/new_folder/", 2),
        (f"{root}/index.sqlite", 2),
    ]
    for target, code in cases:
        result = runner.invoke(app, ["--store", str(root), "export", "t", target])
        assert result.exit_code == code, (target, result.output)
        assert result.stderr.startswith("error: "), result.stderr
    assert not (tmp_path / "new_folder").exists()


def test_cli_export_replaces_a_file_only_with_force(tmp_path: Path) -> None:
    """Issue 16, item 7: `export` silently replaced an existing file."""
    root = tmp_path / "store"
    with WeightStore.open(root, settings=StoreSettings(fsync=False)) as store:
        store.save("t", SD)
    target = tmp_path / "mine.safetensors"
    target.write_bytes(b"precious")
    runner = CliRunner()
    refused = runner.invoke(app, ["--store", str(root), "export", "t", str(target)])
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert target.read_bytes() == b"precious"
    done = runner.invoke(app, ["--store", str(root), "export", "t", str(target), "--force"])
    assert done.exit_code == 0, done.output
    check_written(target)
