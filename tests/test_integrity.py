"""Issue 5, items 1-6, 10 and 13: every way found to lose data or hand out wrong bytes with
success, each reproduced on real files and real SQLite/PostgreSQL indexes.

Wrong bytes: export verifies like restore; a save hashes and encodes one immutable copy; a save
or ``verify --repair`` rewrites damaged objects instead of deduplicating against them. Data
loss: a store's index and objects carry one id and a mismatch is refused (gc above all); store
paths are never pasted into URLs; gc keeps blobs snapshots reach. Reads never write.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import create_engine, text

from weightstore import StoreSettings, WeightStore
from weightstore.errors import (
    CorruptObject,
    IndexRequired,
    InputChanged,
    NotFound,
    StoreMismatch,
    UnsupportedLocation,
)

FAST = StoreSettings(fsync=False, gc_grace_seconds=0)


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(128, 96, generator=g),
        "b": torch.randn(96, generator=g),
        "ids": torch.arange(1000, dtype=torch.int64),  # stored raw-ish, compresses well
        "noise": torch.randint(0, 255, (5000,), dtype=torch.uint8, generator=g),  # stored raw
    }


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
    )


@pytest.fixture
def store(tmp_path: Path, index_url: str) -> Iterator[WeightStore]:
    s = WeightStore.open(tmp_path / "store", index_url=index_url, settings=FAST)
    yield s
    s.close()


def object_path(store: WeightStore, digest: str) -> Path:
    root = Path(store.objects.describe().removeprefix("local:"))
    return root / digest[:2] / digest


def flip(path: Path, where: float = 0.5) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[min(len(data) - 1, int(len(data) * where))] ^= 0x01
    path.write_bytes(bytes(data))


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weightstore.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


# ---------------------------------------------------------------------- 1. export verifies


@pytest.mark.parametrize("victim", ["w", "noise"])  # a compressed frame, a raw payload
def test_export_of_a_damaged_object_fails_and_leaves_no_file(
    store: WeightStore, tmp_path: Path, victim: str
) -> None:
    snap = store.save("t", weights(), step=1)
    entry = next(t for t in snap.tensors if t.name == victim)
    flip(object_path(store, entry.digest), 0.9)
    out = tmp_path / "out.safetensors"
    with pytest.raises(CorruptObject):
        store.export("t@1", out)
    assert not out.exists()
    assert list(tmp_path.glob("*.safetensors*")) == [] and list(tmp_path.glob(".out*")) == []


def test_an_object_replaced_by_a_symlink_to_another_is_caught(
    store: WeightStore, tmp_path: Path
) -> None:
    sd = {"a": torch.randn(64, 64), "b": torch.randn(64, 64)}
    snap = store.save("t", sd, step=1)
    a, b = (object_path(store, t.digest) for t in snap.tensors)
    a.unlink()
    a.symlink_to(b)  # a valid object, of the same size, under the wrong name
    with pytest.raises(CorruptObject):
        store.export("t@1", tmp_path / "out.safetensors")
    with pytest.raises(CorruptObject):
        store.restore("t@1")
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_export_of_a_damaged_snapshot_exits_5(tmp_path: Path) -> None:
    with WeightStore.open(tmp_path / "s", settings=FAST) as s:
        snap = s.save("t", weights(), step=1)
        flip(object_path(s, snap.tensors[0].digest))
    out = tmp_path / "x.safetensors"
    done = cli("--store", str(tmp_path / "s"), "export", "t@1", str(out))
    assert done.returncode == 5, done.stderr
    assert "error:" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()
    # It says where the damage is and what to do, not just a digest (issue 16, item 5).
    name = snap.tensors[0].name
    assert f"snapshot {snap.short_id} (t@1)" in done.stderr
    assert f"tensor {name!r}" in done.stderr
    assert "weightstore verify --repair FILE" in done.stderr


def test_corruption_names_the_snapshot_tensor_and_the_others_sharing_it(
    store: WeightStore, tmp_path: Path
) -> None:
    sd = weights()
    first = store.save("t", sd, step=1)
    other = store.save("u", {"w": sd["w"], "x": torch.zeros(3)}, step=7)
    entry = next(t for t in first.tensors if t.name == "w")
    flip(object_path(store, entry.digest), 0.9)
    for read in (
        lambda: store.restore("t@1"),
        lambda: store.restore("t@1", into={k: v.clone() for k, v in sd.items()}),
        lambda: store.export("t@1", tmp_path / "out.safetensors"),
    ):
        with pytest.raises(CorruptObject) as caught:
            read()
        message = str(caught.value)
        assert f"snapshot {first.short_id} (t@1) is damaged: tensor 'w'" in message
        assert f"1 other snapshot(s): u@7 ({other.short_id})" in message
        assert "`weightstore verify`" in message
        assert caught.value.tensor == "w" and caught.value.digest == entry.digest


# ---------------------------------------------------------------------- 2. one immutable copy


class ChangingWeights(Mapping[str, torch.Tensor]):
    """A source whose tensors differ on every read, as a checkpoint rewritten in place does."""

    def __init__(self, base: dict[str, torch.Tensor]) -> None:
        self.base = base
        self.reads = 0

    def __getitem__(self, name: str) -> torch.Tensor:
        self.reads += 1
        return self.base[name] + self.reads

    def __iter__(self) -> Iterator[str]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


def test_a_source_that_changes_during_the_save_is_an_error_and_commits_nothing(
    store: WeightStore,
) -> None:
    with pytest.raises(InputChanged, match="changed while it was being saved"):
        store.save("t", ChangingWeights(weights()), step=1)
    assert store.log() == []


def test_a_model_trained_during_the_save_never_yields_an_unrestorable_snapshot(
    store: WeightStore,
) -> None:
    """The tensor is mutated in place between the hashing pass and the encoding pass."""
    sd = weights()

    class Mutating(dict[str, torch.Tensor]):
        hashed: ClassVar[set[str]] = set()

        def __getitem__(self, name: str) -> torch.Tensor:
            t = super().__getitem__(name)
            if name in self.hashed and t.is_floating_point():
                t.add_(1.0)  # the optimizer stepped
            self.hashed.add(name)
            return t

    with pytest.raises(InputChanged):
        store.save("t", Mutating(sd), step=1)
    assert store.log() == [] and store.verify().ok


# ---------------------------------------------------------------------- 3. dedup and repair


def test_resaving_the_original_weights_rewrites_a_damaged_object(store: WeightStore) -> None:
    sd = weights()
    snap = store.save("t", sd, step=1)
    flip(object_path(store, snap.tensors[0].digest))
    assert not store.verify().ok  # flags it
    again = store.save("t", sd, step=2)
    assert store.verify().ok
    for ref in ("t@1", "t@2"):
        out = store.restore(ref)
        assert all(same(out[k], sd[k]) for k in sd)
    assert again.tensors[0].digest == snap.tensors[0].digest


def test_a_truncated_object_is_rewritten_even_without_verify(store: WeightStore) -> None:
    sd = weights()
    snap = store.save("t", sd, step=1)
    path = object_path(store, snap.tensors[0].digest)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-7])
    store.save("t", sd, step=2)  # size and header are checked before trusting an object
    assert store.verify().ok


def test_a_damaged_delta_base_is_not_used_as_a_base(store: WeightStore) -> None:
    base = weights()
    snap = store.save("t", base, step=1)
    flip(object_path(store, snap.tensors[0].digest))
    store.verify()
    tuned = {k: (v + 1e-3 if v.is_floating_point() else v) for k, v in base.items()}
    store.save("t", tuned, step=2)
    out = store.restore("t@2")
    assert all(same(out[k], tuned[k]) for k in tuned)


def test_verify_repair_rewrites_damaged_objects_from_a_file(tmp_path: Path) -> None:
    sd = weights()
    save_file(sd, tmp_path / "w.safetensors")
    root = tmp_path / "s"
    with WeightStore.open(root, settings=FAST) as s:
        base = s.import_file("t", tmp_path / "w.safetensors", step=1)
        tuned = {k: (v * 1.01 if v.is_floating_point() else v) for k, v in sd.items()}
        s.save("t", tuned, step=2)  # deltas against step 1's objects
        for t in base.tensors:
            flip(object_path(s, t.digest))
    failed = cli("--store", str(root), "verify")
    assert failed.returncode == 5
    fixed = cli("--store", str(root), "verify", "--repair", str(tmp_path / "w.safetensors"))
    assert fixed.returncode == 0, fixed.stderr
    assert "repaired 4 of" in fixed.stderr
    with WeightStore.open(root, settings=FAST) as s:
        assert s.verify().ok
        out = s.restore("t@2")
        assert all(same(out[k], tuned[k]) for k in tuned)


# ---------------------------------------------------------------------- 4 and 6. identity


def test_init_with_another_index_url_is_refused_and_not_remembered(
    tmp_path: Path, postgres_url: str
) -> None:
    root = tmp_path / "s"
    with WeightStore.open(root, settings=FAST) as s:
        s.save("t", weights(), step=1)
    config_before = (root / "weightstore.json").exists()
    done = cli("--store", str(root), "--index-url", postgres_url, "init")
    assert done.returncode == 4, done.stderr
    assert "do not belong together" in done.stderr and "Traceback" not in done.stderr
    assert (root / "weightstore.json").exists() == config_before
    with WeightStore.open(root, settings=FAST) as s:  # still its own index
        assert [x.step for x in s.log()] == [1]
        assert s.gc().objects_removed == 0
        assert s.verify().ok


def test_a_failing_index_url_is_never_remembered(tmp_path: Path) -> None:
    root = tmp_path / "s"
    WeightStore.open(root, settings=FAST).close()
    bad = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"
    with pytest.raises(Exception):  # noqa: B017 - any failure; the point is what stays
        WeightStore.open(root, index_url=bad, settings=FAST)
    assert not (root / "weightstore.json").exists()
    WeightStore.open(root, settings=FAST).close()


def test_two_stores_indexes_are_refused_across(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        with WeightStore.open(root, settings=FAST) as s:
            s.save("t", weights(), step=1)
    with pytest.raises(StoreMismatch, match="different stores"):
        WeightStore.open(a, index_url=f"sqlite:///{b / 'index.sqlite'}")
    assert not (a / "weightstore.json").exists()


def test_a_deleted_index_is_never_replaced_by_an_empty_one(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with WeightStore.open(root, settings=FAST) as s:
        snap = s.save("t", weights(), step=1)
    (root / "index.sqlite").unlink()
    done = cli("--store", str(root), "init")
    assert done.returncode == 4 and "index is empty but the objects are not" in done.stderr
    assert not (root / "index.sqlite").exists()
    for command in (["db", "upgrade"], ["gc", "--grace", "0"], ["log"]):
        done = cli("--store", str(root), *command)
        assert done.returncode == 3 and "no store" in done.stderr, (command, done.stderr)
    for t in snap.tensors:
        assert object_path_in(root, t.digest).exists()


def object_path_in(root: Path, digest: str) -> Path:
    return root / "objects" / digest[:2] / digest


def test_gc_keeps_a_blob_a_snapshot_reaches_when_its_row_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with WeightStore.open(root, settings=FAST) as s:
        snap = s.save("t", weights(), step=1)
    victim = snap.tensors[1].digest
    engine = create_engine(f"sqlite:///{root / 'index.sqlite'}")
    with engine.begin() as conn:  # index damage: the row goes, the snapshot still names it
        conn.execute(text("PRAGMA foreign_keys=OFF"))
        conn.execute(text("DELETE FROM objects WHERE digest = :d"), {"d": victim})
    engine.dispose()
    with WeightStore.open(root, settings=FAST) as s:
        assert s.gc(grace_seconds=0).objects_removed == 0
    assert object_path_in(root, victim).exists()


def test_gc_refuses_to_run_when_the_ids_disagree(store: WeightStore) -> None:
    store.save("t", weights(), step=1)
    store.objects.write_store_id("someone-else")
    with pytest.raises(StoreMismatch):
        store.gc(grace_seconds=0)
    assert store.verify().ok


def test_stores_made_before_ids_are_adopted(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with WeightStore.open(root, settings=FAST) as s:
        s.save("t", weights(), step=1)
    (root / "objects" / "store-id").unlink()
    engine = create_engine(f"sqlite:///{root / 'index.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM store_meta"))
    engine.dispose()
    with WeightStore.open(root, settings=FAST) as s:
        assert s.store_id == (root / "objects" / "store-id").read_text().strip()
        assert s.gc().objects_removed == 0


# ---------------------------------------------------------------------- 5. paths and URLs


def test_question_marks_and_percents_in_store_paths_stay_in_the_path(tmp_path: Path) -> None:
    a, b, c = tmp_path / "st?a", tmp_path / "st?b", tmp_path / "st%20c"
    for i, root in enumerate((a, b, c)):
        with WeightStore.open(root, settings=FAST) as s:
            s.save("t", weights(i), step=1)
        assert (root / "index.sqlite").is_file()
    with WeightStore.open(a, settings=FAST) as s:
        s.delete("t@1")
    with WeightStore.open(b, settings=FAST) as s:
        assert [x.step for x in s.log()] == [1]
    with WeightStore.open(c, settings=FAST) as s:
        assert s.verify().ok
    assert not (tmp_path / "st").exists()


def test_a_relative_sqlite_url_in_the_config_resolves_against_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "weightstore.json").write_text(json.dumps({"index_url": "sqlite:///meta.db"}))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with WeightStore.open(root, settings=FAST) as s:
        s.save("t", weights(), step=1)
    assert (root / "meta.db").is_file() and not (elsewhere / "meta.db").exists()


@pytest.mark.parametrize("config", ["[1, 2]", '"x"', '{"index_url": 5}', "{" * 5000])
def test_a_config_that_is_not_an_object_is_a_typed_error(tmp_path: Path, config: str) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "weightstore.json").write_text(config)
    with pytest.raises(ValueError):
        WeightStore.open(root)
    assert sorted(p.name for p in root.iterdir()) == ["weightstore.json"]


# ---------------------------------------------------------------------- 10. reads never write


def test_log_on_a_plain_folder_creates_nothing(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    for command in (["log"], ["tasks"], ["show", "t"], ["report", "storage"]):
        done = cli("--store", str(plain), *command)
        assert done.returncode == 3, (command, done.stderr)
        assert "no store" in done.stderr
    assert list(plain.iterdir()) == []
    with pytest.raises(NotFound):
        WeightStore.open(plain, read_only=True)


@contextlib.contextmanager
def read_only_mount(source: Path, target: Path) -> Iterator[Path]:
    target.mkdir()
    try:
        subprocess.run(
            ["mount", "--bind", str(source), str(target)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot bind-mount here (needs root): {e}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(target)], check=True, capture_output=True
        )
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False, capture_output=True)


def test_a_store_on_a_read_only_filesystem_can_be_read(tmp_path: Path) -> None:
    root = tmp_path / "s"
    sd = weights()
    with WeightStore.open(root, settings=FAST) as s:
        s.save("t", sd, step=1, tags=["best"])
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))
    with read_only_mount(root, tmp_path / "ro") as ro:
        for command in (["log"], ["tasks"], ["show", "t:best"], ["report", "storage"]):
            done = cli("--store", str(ro), *command)
            assert done.returncode == 0, (command, done.stderr)
        out = tmp_path / "out.safetensors"
        done = cli("--store", str(ro), "export", "t:best", str(out))
        assert done.returncode == 0, done.stderr
        got = load_file(out)
        assert all(same(got[k], sd[k]) for k in sd)
        with WeightStore.open(ro, read_only=True, settings=FAST) as s:
            assert s.verify().ok
            restored = s.restore("t@1")
            assert all(same(restored[k], sd[k]) for k in sd)
    after = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))
    assert before == after


# ---------------------------------------------------------------------- 13. URL schemes


@pytest.mark.parametrize(
    ("url", "advice"), [("gs://b/p", "local folder path"), ("http://host:8000", "open_store")]
)
def test_a_url_no_backend_serves_is_refused_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, advice: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsupportedLocation, match=advice):
        WeightStore.open(url)
    assert list(tmp_path.iterdir()) == []
    done = cli("--store", url, "init", cwd=tmp_path)
    assert done.returncode == 2 and "error:" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_s3_url_without_an_index_url_is_refused_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(IndexRequired, match="--index-url"):
        WeightStore.open("s3://bucket/prefix")
    done = cli("--store", "s3://bucket/prefix", "init", cwd=tmp_path)
    assert done.returncode == 2 and "--index-url" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_store_folder_survives_moving(tmp_path: Path) -> None:
    """Nothing absolute is written for the default SQLite index, so a moved store opens."""
    with WeightStore.open(tmp_path / "a", settings=FAST) as s:
        s.save("t", weights(), step=1)
    shutil.move(tmp_path / "a", tmp_path / "b")
    with WeightStore.open(tmp_path / "b", settings=FAST) as s:
        assert s.verify().ok


def test_gc_counts_what_it_keeps_without_orphan_blobs(store: WeightStore) -> None:
    snap = store.save("t", weights(), step=1)
    for i in range(5):  # blobs with no row, as a crashed save leaves them
        store.objects.put(f"{i:064x}", b"orphan")
    result = store.gc(grace_seconds=0)
    assert result.objects_removed == 5
    assert result.objects_kept == len({t.digest for t in snap.tensors})
