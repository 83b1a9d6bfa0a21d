"""The device checksum (issue 18.2): torch ops on any device agree bit for bit with the numpy
definition used at save, and every single-bit flip (every change within one word) is caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from weightstore import StoreSettings, WeightStore
from weightstore.codec.devhash import BLOCK, devhash
from weightstore.index.models import ObjectRow
from weightstore.sync import push
from weightstore.torchcodec.devhash import devhash_tensor


def _tensor(data: bytes, offset: int = 0) -> torch.Tensor:
    """``data`` as a uint8 tensor starting ``offset`` bytes into its storage (unaligned)."""
    whole = bytearray(b"\0" * offset + data)
    return torch.frombuffer(whole, dtype=torch.uint8)[offset:] if whole else torch.empty(0).byte()


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=3000),
    offset=st.integers(0, 7),
    per_call=st.sampled_from([None, 1, 3]),
)
def test_torch_agrees_with_numpy(data: bytes, offset: int, per_call: int | None) -> None:
    assert devhash_tensor(_tensor(data, offset), per_call) == devhash(data)


@pytest.mark.parametrize("per_call", [None, 2])
def test_agreement_across_blocks_and_dtypes(per_call: int | None) -> None:
    g = torch.Generator().manual_seed(0)
    big = torch.randint(-(2**63), 2**63 - 1, (3 * BLOCK + 5,), dtype=torch.int64, generator=g)
    assert devhash_tensor(big, per_call) == devhash(big.numpy())
    special = torch.tensor([float("nan"), -0.0, 0.0, float("inf"), 1e-45], dtype=torch.float32)
    for t in (special, special.to(torch.bfloat16), torch.ones(7, 3, dtype=torch.float16).t()):
        assert devhash_tensor(t, per_call) == devhash(t.contiguous().view(torch.uint8).numpy())


def test_every_single_bit_flip_is_caught() -> None:
    rng = np.random.default_rng(1)
    data = bytearray(rng.integers(0, 256, 1027, dtype=np.uint8).tobytes())
    seen = {devhash(data)}
    for bit in range(len(data) * 8):
        data[bit // 8] ^= 1 << (bit % 8)
        seen.add(devhash(data))
        data[bit // 8] ^= 1 << (bit % 8)
    assert len(seen) == len(data) * 8 + 1
    # torch, on every bit of a smaller buffer and of the first words of later blocks
    small = _tensor(bytes(data[:129]))
    base = devhash_tensor(small)
    for bit in range(129 * 8):
        small[bit // 8] ^= 1 << (bit % 8)
        assert devhash_tensor(small) != base
        small[bit // 8] ^= 1 << (bit % 8)
    assert devhash_tensor(small) == base


def test_length_position_and_block_order_count() -> None:
    assert devhash(b"x") != devhash(b"x\0") != devhash(b"")
    words = np.arange(2 * BLOCK, dtype=np.uint64) + np.uint64(1)
    swapped_words = words.copy()
    swapped_words[[3, 4]] = swapped_words[[4, 3]]
    swapped_blocks = np.concatenate([words[BLOCK:], words[:BLOCK]])
    assert len({devhash(words), devhash(swapped_words), devhash(swapped_blocks)}) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agrees_with_the_cpu() -> None:
    g = torch.Generator().manual_seed(2)
    for n in (0, 13, BLOCK * 8 + 3, (5 << 20) + 1):
        host = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g)
        expected = devhash(host.numpy())
        assert devhash_tensor(host.cuda()) == expected
        assert devhash_tensor(host.cuda(), 3) == expected


def _recorded(store: WeightStore) -> dict[str, int | None]:
    with store.index.engine.connect() as conn:
        return dict(conn.execute(select(ObjectRow.digest, ObjectRow.device_checksum)).all())


def test_saves_and_receives_record_it_from_the_raw_bytes(tmp_path: Path, index_url: str) -> None:
    """Roots and deltas alike; a receiver computes it from what it verified (SQLite and PG)."""
    g = torch.Generator().manual_seed(3)
    first = {"w": torch.randn(64, 32, generator=g), "b": torch.randn(5).to(torch.bfloat16)}
    second = {k: v.clone() for k, v in first.items()}
    second["w"][0, :4] += 1
    settings = StoreSettings(threads=2, fsync=False)
    with (
        WeightStore.open(tmp_path / "a", settings=settings, index_url=index_url) as a,
        WeightStore.open(tmp_path / "b", settings=settings) as b,
    ):
        a.save("t", first, step=1)
        a.save("t", second, step=2)
        push(a, b)
        for store in (a, b):
            recorded = _recorded(store)
            assert len(recorded) == 3 and any(
                r.encoding != "plain" for r in store.index.get_objects(recorded).values()
            )
            for step, sd in ((1, first), (2, second)):
                snap = store.show(f"t@{step}")
                for e in snap.tensors:
                    raw = sd[e.name].contiguous().view(torch.uint8).numpy()
                    assert recorded[e.digest] == devhash(raw), (store, e.name)


def test_verify_records_missing_and_wrong_device_checksums(tmp_path: Path, index_url: str) -> None:
    """Objects from before 0007 (NULL) and a row altered at rest get the checksum their
    verified bytes give; a second verify finds nothing to record (SQLite and PG)."""
    g = torch.Generator().manual_seed(6)
    sd = {f"w{i}": torch.randn(32, 32, generator=g) for i in range(3)}
    settings = StoreSettings(threads=2, fsync=False)
    with WeightStore.open(tmp_path / "s", settings=settings, index_url=index_url) as store:
        store.save("t", sd)
        right = _recorded(store)
        a, b, _ = sorted(right)
        with store.index.engine.begin() as conn:
            conn.execute(
                update(ObjectRow).where(ObjectRow.digest == a).values(device_checksum=None)
            )
            conn.execute(
                update(ObjectRow).where(ObjectRow.digest == b).values(device_checksum=12345)
            )
        first = store.verify()
        assert first.ok and first.device_checksums_recorded == 2
        assert _recorded(store) == right
        assert store.verify().device_checksums_recorded == 0
