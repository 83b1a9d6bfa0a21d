"""``restore(into=...)`` checks every target before writing anything, and never leaves a model
mixed: a corrupt object met part-way is found while decoding into staging memory, before the
first target is touched (within ``StoreSettings.restore_staging_bytes``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from weightstore import StoreSettings, WeightStore
from weightstore.errors import CorruptObject, IncompatibleTensor

SD = {
    "a": torch.randn(64, 32),
    "b": torch.randn(32),
    "c": torch.randn(16, 16),
    "d": torch.arange(10),
}


def open_store(root: Path, **settings: object) -> WeightStore:
    return WeightStore.open(root, settings=StoreSettings(fsync=False, threads=2, **settings))  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WeightStore]:
    s = open_store(tmp_path / "store")
    s.save("t", SD)
    yield s
    s.close()


def fresh() -> dict[str, torch.Tensor]:
    return {k: torch.full_like(v, 7) for k, v in SD.items()}


def untouched(target: dict[str, torch.Tensor]) -> bool:
    return all(
        t.is_meta or bool((t == 7).all()) for t in target.values() if isinstance(t, torch.Tensor)
    )


def test_a_plain_target_restores(store: WeightStore) -> None:
    target = fresh()
    store.restore("t", into=target)
    assert all(torch.equal(target[k], SD[k]) for k in SD)


def test_every_unwritable_target_is_listed_and_nothing_is_written(store: WeightStore) -> None:
    with torch.inference_mode():
        inference = torch.full((16, 16), 7.0)
    target = fresh()
    target["b"] = torch.full((1,), 7.0).expand(32)  # stride 0: one element, 32 names
    target["c"] = inference
    target["d"] = torch.zeros(10, dtype=torch.int64, device="meta")
    with pytest.raises(IncompatibleTensor) as info:
        store.restore("t", into=target)
    message = str(info.value)
    for name, why in (("b", "overlap"), ("c", "inference"), ("d", "meta")):
        assert repr(name) in message and why in message, message
    assert "nothing was written" in message
    assert untouched(target)


def test_shape_dtype_and_name_problems_are_listed_together(store: WeightStore) -> None:
    target = fresh()
    target["a"] = torch.full((64, 31), 7.0)
    target["b"] = torch.full((32,), 7, dtype=torch.float16)
    target["extra"] = torch.full((2,), 7.0)
    with pytest.raises(IncompatibleTensor) as info:
        store.restore("t", into=target)
    message = str(info.value)
    assert "'a'" in message and "'b'" in message and "extra" in message
    assert untouched(target)


def test_a_target_on_another_device_than_asked_is_refused(store: WeightStore) -> None:
    target = fresh()
    with pytest.raises(IncompatibleTensor, match="device"):
        store.restore("t", into=target, device="meta")
    assert untouched(target)


def corrupt(store: WeightStore, name: str) -> None:
    entry = next(e for e in store.show("t").tensors if e.name == name)
    path = store.objects.root / entry.digest[:2] / entry.digest  # type: ignore[attr-defined]
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_object_mid_restore_leaves_the_target_untouched(store: WeightStore) -> None:
    corrupt(store, "d")  # the smallest tensor: decoded last
    target = fresh()
    with pytest.raises(CorruptObject) as info:
        store.restore("t", into=target)
    assert "partly" not in str(info.value)
    assert untouched(target)


def test_beyond_the_staging_budget_the_partial_overwrite_is_reported(tmp_path: Path) -> None:
    with open_store(tmp_path / "small", restore_staging_bytes=0) as store:
        store.save("t", SD)
        corrupt(store, "d")
        with pytest.raises(CorruptObject, match="partly overwritten"):
            store.restore("t", into=fresh())


@pytest.mark.gpu
def test_cuda_targets_are_staged_on_their_device(store: WeightStore) -> None:
    target = {k: v.cuda() for k, v in fresh().items()}
    store.restore("t", into=target)
    assert all(torch.equal(target[k].cpu(), SD[k]) for k in SD)
    corrupt(store, "d")
    again = {k: v.cuda() for k, v in fresh().items()}
    with pytest.raises(CorruptObject):
        store.restore("t", into=again)
    assert untouched(again)
