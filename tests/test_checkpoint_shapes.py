"""Issue 7, item 5: the checkpoint shapes training scripts write are accepted, and nothing is
dropped without a word: nested state dicts, ``--key``, colliding keys, unlisted shard tensors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightstore import StoreSettings, WeightStore
from weightstore.errors import CorruptFile, InvalidInput
from weightstore.files import read_weights

FAST = StoreSettings(fsync=False)


def sd() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WeightStore]:
    with WeightStore.open(tmp_path / "s", settings=FAST) as s:
        yield s


@pytest.mark.parametrize("nest", ["state_dict", "model_state_dict", "model", "module"])
def test_usual_nestings_are_found(tmp_path: Path, store: WeightStore, nest: str) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({nest: sd(), "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    snap = store.import_file("t", path)
    out = store.restore(snap.id)
    assert all(torch.equal(out[k], v) for k, v in sd().items())


def test_key_chooses_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    other = {k: v + 1 for k, v in sd().items()}
    torch.save({"ema": {"weights": other}, "state_dict": sd()}, path)
    got = read_weights(path, key="ema/weights")
    assert all(torch.equal(got[k], v) for k, v in other.items())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"ckpt\.pt: has no entry 'nope'"):
        read_weights(path, key="nope")


def test_an_unknown_nesting_names_the_file_and_the_entries(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"weights_here": sd(), "epoch": 3}, path)
    with pytest.raises(InvalidInput, match=r"ckpt\.pt: .*'weights_here'.*--key"):
        read_weights(path)


def test_keys_that_collide_as_names_are_refused(tmp_path: Path, store: WeightStore) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({1: torch.zeros(2), "1": torch.ones(2)}, path)
    with pytest.raises(InvalidInput, match="both name tensor '1'"):
        store.import_file("t", path)
    assert store.log() == []


def test_a_non_tensor_entry_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.zeros(2), "note": "x"}, path)
    with pytest.raises(InvalidInput, match=r"ckpt\.pt: not a flat state_dict.*'note'"):
        read_weights(path)


def test_shard_tensors_missing_from_the_index_are_not_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(sd(), folder / "model-00001-of-00001.safetensors")
    index = {"weight_map": {"w": "model-00001-of-00001.safetensors"}}  # "b" unlisted
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptFile, match=r"does not list \('b'\)"):
        read_weights(folder)


def test_cli_save_with_key(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"ema": sd(), "state_dict": {k: v * 2 for k, v in sd().items()}}, path)
    root = tmp_path / "s"
    done = subprocess.run(
        [sys.executable, "-m", "weightstore.cli.main", "--store", str(root), "init"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "weightstore.cli.main",
            "--store",
            str(root),
            "save",
            "t",
            str(path),
            "--key",
            "ema",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with WeightStore.open(root, settings=FAST) as s:
        out = s.restore("t")
    assert all(torch.equal(out[k], v) for k, v in sd().items())


def test_export_hands_back_the_source_files_metadata(tmp_path: Path, store: WeightStore) -> None:
    from safetensors import safe_open

    src = tmp_path / "in.safetensors"
    save_file(sd(), src, metadata={"format": "pt", "config": '{"hidden": 3}'})
    snap = store.import_file("t", src, step=1)
    out = tmp_path / "out.safetensors"
    store.export("t@1", out)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["config"] == '{"hidden": 3}'
    assert meta["weightstore.snapshot"] == snap.id
