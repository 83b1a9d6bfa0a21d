"""Robustness seen under load and attack: pins dated when taken (gc with a short grace beside a
save), verify going on past unreadable objects, crafted headers that must not allocate, Ctrl-C
right after a save's commit, and task names that read as snapshot ids."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from weightstore import StoreSettings, WeightStore
from weightstore.cli.main import app
from weightstore.codec.format import pack_header, read_header
from weightstore.codec.layout import Layout
from weightstore.errors import AmbiguousRef, CorruptObject, InvalidRef
from weightstore.index import Index


@pytest.fixture
def store(tmp_path: Path, index_url: str) -> Iterator[WeightStore]:
    s = WeightStore.open(
        tmp_path / "store", index_url=index_url, settings=StoreSettings(fsync=False, threads=1)
    )
    yield s
    s.close()


class SlowWeights(Mapping[str, torch.Tensor]):
    """A state dict whose first read takes ``delay`` seconds, like a checkpoint on slow disk."""

    def __init__(self, tensors: dict[str, torch.Tensor], delay: float) -> None:
        self._tensors = tensors
        self._delay = delay

    def __getitem__(self, name: str) -> torch.Tensor:
        if self._delay:
            time.sleep(self._delay)
            self._delay = 0
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def test_objects_are_dated_when_recorded_not_when_the_save_began(store: WeightStore) -> None:
    # A gc with a grace shorter than the save's age, but longer than the time between the
    # object's row and the commit, must spare the object: the row is dated when it is taken.
    ran: list[object] = []

    def progress(nbytes: int) -> None:
        if len(ran) == 1:  # the second call: blobs written and recorded, commit still ahead
            ran.append(store.gc(grace_seconds=1.0))
        else:
            ran.append(None)

    weights = SlowWeights({"w": torch.randn(1000)}, delay=1.5)
    snap = store.save("t", weights, progress=progress)
    assert ran[1] is not None and ran[1].objects_removed == 0  # type: ignore[attr-defined]
    assert torch.equal(store.restore(snap.id)["w"], weights["w"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_verify_reports_an_unreadable_object_and_goes_on(store: WeightStore, kind: str) -> None:
    snap = store.save("t", {"a": torch.randn(100), "b": torch.randn(100), "c": torch.randn(50)})
    bad = snap.tensors[0].digest
    path = store.objects.root / bad[:2] / bad  # type: ignore[attr-defined]
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    result = store.verify()
    assert result.objects_checked == 3
    assert [p.digest for p in result.problems] == [bad]
    assert "regular file" in result.problems[0].problem
    assert result.problems[0].snapshots == (snap.id,)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("raw_len", "frame_size"), [(2**50, 1), (2**40 * 3, 3), (2**33, 2**32 - 1), (1 << 31, 1 << 31)]
)
def test_a_crafted_header_cannot_ask_for_huge_allocations(raw_len: int, frame_size: int) -> None:
    # A valid checksum over lying sizes: one frame claimed, a frame plan of billions or a
    # frame far larger than any writer uses.
    blob = pack_header("plain", Layout(1, False), raw_len, frame_size, None, [4]) + b"zstd"
    with pytest.raises(CorruptObject):
        read_header(blob)


def test_a_ctrl_c_right_after_the_commit_reports_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No real SIGINT can be timed to land between the commit and the return, so the commit
    # is wrapped to raise KeyboardInterrupt just after it succeeded.
    root = tmp_path / "st"
    file = tmp_path / "w.safetensors"
    save_file({"w": torch.randn(10)}, str(file))
    runner = CliRunner()
    assert runner.invoke(app, ["--store", str(root), "init"]).exit_code == 0
    real_commit = Index.commit_snapshot

    def commit_then_interrupt(self: Index, **kwargs: object) -> None:
        real_commit(self, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(Index, "commit_snapshot", commit_then_interrupt)
    result = runner.invoke(app, ["--store", str(root), "save", "t", str(file), "--step", "3"])
    assert result.exit_code == 0, result.output
    assert "saved" in result.stdout and "interrupted" in result.output
    monkeypatch.undo()
    with WeightStore.open(root) as store:
        assert [s.step for s in store.log("t")] == [3]

    def interrupt(self: Index, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Index, "commit_snapshot", interrupt)
    result = runner.invoke(app, ["--store", str(root), "save", "t", str(file), "--step", "4"])
    assert result.exit_code == 130 and "interrupted" in result.stderr


def test_a_task_named_like_a_snapshot_id_is_refused(store: WeightStore) -> None:
    snap = store.save("t", {"w": torch.zeros(3)})
    for name in (snap.id[:8], "beef", "0123", snap.id):
        with pytest.raises(InvalidRef, match="id"):
            store.save(name, {"w": torch.ones(3)})
    assert store.tasks() == ["t"]
    store.save("beef-2", {"w": torch.ones(3)})  # not only hex digits: fine


def test_a_legacy_task_named_like_an_id_prefix_is_ambiguous_not_guessed(
    store: WeightStore,
) -> None:
    # A task created before the rule above (written straight into the index).
    victim = store.save("t", {"w": torch.zeros(3)})
    prefix = victim.id[:6]
    snap = store.save("legacy", {"w": torch.ones(3)})
    store.index.commit_snapshot(
        snapshot_id="f" * 64,
        task=prefix,
        step=None,
        parent_id=None,
        created_at=snap.created_at,
        message="",
        metadata={},
        logical_bytes=12,
        tensors=list(snap.tensors),
        tags=[],
    )
    with pytest.raises(AmbiguousRef):
        store.delete(prefix)
    assert store.show(victim.id).id == victim.id and store.log(prefix)
    assert store.resolve(victim.id[:10]) == victim.id  # more digits than the task name


def test_gc_help_says_what_grace_protects() -> None:
    result = CliRunner().invoke(app, ["gc", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Grace protects saves running now" in " ".join(result.stdout.split())
