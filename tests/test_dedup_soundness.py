"""A save never commits onto an object whose payload is damaged (issue 17, item 2): dedup
proves each reused object sound by its recorded checksum (or, for objects from before it, by a
decode), and rewrites a damaged one from the caller's bytes. SQLite and PostgreSQL, objects on
disk, one payload byte flipped after the header (the header and frame table stay valid)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import update

from weightstore import StoreSettings, WeightStore
from weightstore.codec.format import header_length
from weightstore.index.models import ObjectRow

SETTINGS = StoreSettings(threads=2, fsync=False)


@pytest.fixture
def store(tmp_path: Path, index_url: str) -> Iterator[WeightStore]:
    s = WeightStore.open(tmp_path / "store", index_url=index_url, settings=SETTINGS)
    yield s
    s.close()


def weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"w{i}": torch.randn(128, 64, generator=g) for i in range(4)}


def flip_payload(store: WeightStore, digest: str) -> None:
    path = store.objects.root / digest[:2] / digest  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    start = header_length(bytes(data[: 16 << 10]))
    assert len(data) > start + 16, "the object must have a payload to damage"
    data[start + (len(data) - start) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def restores(store: WeightStore, ref: str, expected: dict[str, torch.Tensor]) -> bool:
    got = store.restore(ref, verify=True)
    return all(torch.equal(got[k], v) for k, v in expected.items())


@pytest.mark.parametrize("legacy", [False, True])
def test_a_save_rewrites_a_damaged_object_it_would_reuse(store: WeightStore, legacy: bool) -> None:
    sd = weights(0)
    first = store.save("a", sd)
    victim = first.tensors[1].digest
    if legacy:  # an object written before checksums were recorded (revision 0005)
        with store.index.engine.begin() as conn:
            conn.execute(update(ObjectRow).values(checksum=None))
    flip_payload(store, victim)
    second = store.save("b", sd)  # the same weights: every object would be reused
    assert restores(store, second.id, sd)
    assert restores(store, first.id, sd)  # the rewrite repaired the first snapshot too
    assert store.verify().ok
    assert store.index.get_objects([victim])[victim].checksum is not None


def test_a_reused_delta_over_a_damaged_base_is_rewritten_standalone(store: WeightStore) -> None:
    base = weights(0)
    tuned = {k: v + 1e-3 for k, v in base.items()}
    store.save("a", base, step=0)
    snap = store.save("a", tuned, step=1)  # deltas against step 0's objects
    delta = next(t.digest for t in snap.tensors if t.name == "w2")
    record = store.index.get_objects([delta])[delta]
    assert record.base is not None, "the workload must store a delta"
    flip_payload(store, record.base)
    again = store.save("b", tuned)  # reuses the delta; its base is damaged
    assert restores(store, again.id, tuned)
    rewritten = store.index.get_objects([delta])[delta]
    assert rewritten.base is None and rewritten.checksum is not None


def test_sound_objects_are_reused_not_rewritten(store: WeightStore) -> None:
    sd = weights(3)
    store.save("a", sd)
    again = store.save("b", sd)
    assert again.added_bytes == 0
