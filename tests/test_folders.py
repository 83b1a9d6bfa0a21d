"""Model folders as snapshots (issue 14): every file kept, the folder given back byte for byte,
bad folders refused before anything is stored; on SQLite and PostgreSQL with objects on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hf_models import tiny_bert
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from weightstore.cli.main import app
from weightstore.errors import InputChanged, InvalidInput, NotFound
from weightstore.folders import FOLDER_KEY
from weightstore.manifests import check_manifest
from weightstore.settings import StoreSettings
from weightstore.store import WeightStore
from weightstore.sync import push
from weightstore.types import FILE_PREFIX


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _weights(seed: int, n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {f"layer.{i}.weight": torch.randn(32, 16, generator=g) for i in range(n)}
    out["special"] = torch.tensor([float("nan"), float("inf"), -0.0, 1.0])
    out["ids"] = torch.arange(7, dtype=torch.int64)
    return out


def _model_folder(root: Path, seed: int = 0) -> Path:
    """A folder as Hugging Face writes one: config, tokenizer, a subfolder, sharded weights
    with their index, and files weightstore cannot rebuild from tensors."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "bert", "seed": seed}))
    (root / "tokenizer.json").write_text('{"vocab": ["é", "日本"]}')
    (root / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    weights = _weights(seed)
    names = sorted(weights)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half]}
    shards["model-00002-of-00002.safetensors"] = names[half:]
    weight_map = {}
    for shard, members in shards.items():
        save_file({n: weights[n] for n in members}, str(root / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(members, shard))
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    torch.save({"w": torch.ones(3)}, root / "training_args.bin")
    # A safetensors file with a gap between its tensors: kept as bytes, still byte-identical.
    head = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}).encode()
    (root / "odd.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + bytes(8))
    return root


@pytest.fixture
def store(tmp_path: Path, index_url: str) -> Iterator[WeightStore]:
    s = WeightStore.open(tmp_path / "store", index_url=index_url, settings=StoreSettings(threads=2))
    yield s
    s.close()


def test_a_folder_comes_back_byte_for_byte(store: WeightStore, tmp_path: Path) -> None:
    src = _model_folder(tmp_path / "src")
    snap = store.import_folder("team/model", src, step=1, tags=["base"])
    assert {t.name for t in snap.weights} == set(_weights(0))
    restored = store.restore("team/model:base")
    for name, t in _weights(0).items():
        assert torch.equal(restored[name], t) or torch.equal(restored[name].isnan(), t.isnan())
    assert torch.equal(
        restored["special"].view(torch.int32), _weights(0)["special"].view(torch.int32)
    )
    store.export("team/model@1", tmp_path / "out")
    assert _files(tmp_path / "out") == _files(src)
    assert store.verify().ok


def test_shards_are_rebuilt_from_tensors_and_odd_files_kept_as_bytes(
    store: WeightStore, tmp_path: Path
) -> None:
    snap = store.import_folder("m", _model_folder(tmp_path / "src"))
    record = {f["path"]: f for f in snap.metadata[FOLDER_KEY]["files"]}
    assert record["model-00001-of-00002.safetensors"].get("safetensors") is True
    assert "safetensors" not in record["odd.safetensors"]
    assert "safetensors" not in record["training_args.bin"]
    header = next(
        t for t in snap.tensors if t.name == FILE_PREFIX + "model-00001-of-00002.safetensors"
    )
    assert header.nbytes < 1024  # only the header is kept as bytes


def test_checkpoints_share_their_side_files(store: WeightStore, tmp_path: Path) -> None:
    first = store.import_folder("m", _model_folder(tmp_path / "a", seed=0), step=1)
    second = store.import_folder("m", _model_folder(tmp_path / "b", seed=0), step=2)
    assert second.added_bytes == 0  # the same folder again costs nothing
    third = store.import_folder("m", _model_folder(tmp_path / "c", seed=1), step=3)
    side = {t.digest for t in first.tensors if t.name.startswith(FILE_PREFIX)}
    assert len(side & {t.digest for t in third.tensors}) >= 5  # tokenizer, vocab, pooling...


def test_push_carries_the_files(store: WeightStore, tmp_path: Path, index_url: str) -> None:
    src = _model_folder(tmp_path / "src")
    store.import_folder("m", src, step=1)
    other = WeightStore.open(tmp_path / "other", create=True)
    try:
        push(store, other, ["m"])
        other.export("m@1", tmp_path / "out")
        assert _files(tmp_path / "out") == _files(src)
        assert other.verify().ok
    finally:
        other.close()


def test_gc_keeps_the_files_of_live_snapshots(store: WeightStore, tmp_path: Path) -> None:
    src = _model_folder(tmp_path / "src")
    store.import_folder("m", src, step=1)
    store.save("other", {"x": torch.ones(3)})
    store.delete("other")
    store.gc(grace_seconds=0)
    store.export("m@1", tmp_path / "out")
    assert _files(tmp_path / "out") == _files(src)


def _count(store: WeightStore) -> int:
    return sum(s.snapshots for s in store.task_summaries())


@pytest.mark.parametrize("attack", ["link_out", "link_dir", "fifo", "empty", "newline"])
def test_bad_folders_are_refused_before_anything_is_stored(
    store: WeightStore, tmp_path: Path, attack: str
) -> None:
    src = _model_folder(tmp_path / "src")
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    if attack == "link_out":
        (src / "config.json").unlink()
        (src / "config.json").symlink_to(outside)
    elif attack == "link_dir":
        (src / "sub").symlink_to(tmp_path)
    elif attack == "fifo":
        os.mkfifo(src / "pipe")
    elif attack == "empty":
        src = tmp_path / "nothing"
        src.mkdir()
    else:
        (src / "bad\nname.json").write_text("{}")
    objects = store.stats().objects
    with pytest.raises(InvalidInput):
        store.import_folder("m", src)
    assert _count(store) == 0
    assert store.stats().objects == objects


def test_a_link_inside_the_folder_is_followed(store: WeightStore, tmp_path: Path) -> None:
    src = _model_folder(tmp_path / "src")
    (src / "alias.json").symlink_to(src / "config.json")
    store.import_folder("m", src)
    store.export("m", tmp_path / "out")
    assert (tmp_path / "out" / "alias.json").read_bytes() == (src / "config.json").read_bytes()
    assert not (tmp_path / "out" / "alias.json").is_symlink()


def test_git_and_hf_cache_folders_are_skipped(store: WeightStore, tmp_path: Path) -> None:
    src = _model_folder(tmp_path / "src")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (src / ".cache" / "huggingface").mkdir(parents=True)
    (src / ".cache" / "huggingface" / "x.lock").write_text("")
    snap = store.import_folder("m", src)
    paths = {f["path"] for f in snap.metadata[FOLDER_KEY]["files"]}
    assert not any(p.startswith((".git/", ".cache/")) for p in paths)


def test_a_file_changed_during_the_save_commits_nothing(
    store: WeightStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _model_folder(tmp_path / "src")
    shard = src / "model-00001-of-00002.safetensors"
    real_store = store.writer.store

    def changing(*args: object, **kwargs: object) -> None:
        real_store(*args, **kwargs)  # type: ignore[arg-type]
        data = bytearray(shard.read_bytes())
        data[-1] ^= 1
        shard.write_bytes(bytes(data))

    monkeypatch.setattr(store.writer, "store", changing)
    with pytest.raises(InputChanged):
        store.import_folder("m", src)
    assert _count(store) == 0


def test_reserved_names_and_keys_are_refused_in_plain_saves(store: WeightStore) -> None:
    with pytest.raises(InvalidInput, match="reserved"):
        store.save("m", {FILE_PREFIX + "config.json": torch.zeros(3, dtype=torch.uint8)})
    with pytest.raises(InvalidInput, match="reserved"):
        store.save("m", {"w": torch.ones(2)}, metadata={FOLDER_KEY: {"files": []}})
    assert _count(store) == 0


def test_a_manifest_whose_record_disagrees_with_its_entries_is_refused(
    store: WeightStore, tmp_path: Path
) -> None:
    snap = store.import_folder("m", _model_folder(tmp_path / "src"))
    check_manifest(snap)
    record = json.loads(json.dumps(snap.metadata[FOLDER_KEY]))
    cases = []
    for change in ("size", "path", "traversal", "drop_entry"):
        r = json.loads(json.dumps(record))
        f = next(x for x in r["files"] if x["path"] == "config.json")
        tensors = snap.tensors
        if change == "size":
            f["size"] += 1
        elif change == "path":
            f["path"] = "other.json"
        elif change == "traversal":
            f["path"] = "../config.json"
        else:
            tensors = tuple(t for t in snap.tensors if t.name != FILE_PREFIX + "config.json")
        meta = {**snap.metadata, FOLDER_KEY: r}
        cases.append(dataclasses.replace(snap, metadata=meta, tensors=tensors))
    for bad in cases:
        with pytest.raises(InvalidInput):
            check_manifest(bad)


def test_export_refuses_a_folder_that_is_not_empty(store: WeightStore, tmp_path: Path) -> None:
    store.import_folder("m", _model_folder(tmp_path / "src"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not an empty folder"):
        store.export("m", out)
    assert _files(out) == {"keep.txt": b"mine"}
    with pytest.raises(NotFound):
        store.export("m", tmp_path / "missing" / "out")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


def test_the_cli_saves_and_exports_a_folder(tmp_path: Path) -> None:
    src = _model_folder(tmp_path / "src")
    runner = CliRunner()
    env = {"COLUMNS": "200", "WEIGHTSTORE_PATH": str(tmp_path / "store")}
    assert runner.invoke(app, ["init"], env=env).exit_code == 0
    saved = runner.invoke(
        app, ["save", "team/m", str(src), "--step", "3", "--tag", "best"], env=env
    )
    assert saved.exit_code == 0, saved.output
    shown = runner.invoke(app, ["show", "team/m:best"], env=env)
    assert "1_Pooling/config.json" in shown.output and "header + tensors" in shown.output
    assert FOLDER_KEY not in shown.output
    out = tmp_path / "out"
    exported = runner.invoke(app, ["export", "team/m:best", str(out)], env=env)
    assert exported.exit_code == 0, exported.output
    assert "files" in exported.output
    assert _files(out) == _files(src)
    again = runner.invoke(app, ["export", "team/m:best", str(out)], env=env)
    assert again.exit_code == 2


def test_transformers_loads_an_exported_folder(store: WeightStore, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    model = tiny_bert(0, hidden=8)
    model.save_pretrained(tmp_path / "src")
    store.import_folder("bert", tmp_path / "src", step=1)
    store.export("bert@1", tmp_path / "out")
    loaded = transformers.BertModel.from_pretrained(tmp_path / "out")
    expected = load_file(str(tmp_path / "src" / "model.safetensors"))
    for name, t in loaded.state_dict().items():
        if name in expected:
            assert torch.equal(t, expected[name])
    assert hashlib.sha256((tmp_path / "out" / "model.safetensors").read_bytes()).digest() == (
        hashlib.sha256((tmp_path / "src" / "model.safetensors").read_bytes()).digest()
    )
