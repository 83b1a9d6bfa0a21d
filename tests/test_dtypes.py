"""Every dtype the installed safetensors can hold round-trips save -> restore -> export ->
safe_open bit-exactly. The list comes from safetensors itself (its dtype tables in
``safetensors/torch.py``), so a dtype it adds later fails here, not in a user's save."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors.torch as st_torch
import torch
from safetensors import safe_open

from weightstore import StoreSettings, WeightStore
from weightstore.dtypes import DTYPES, dtype_info


def safetensors_dtypes() -> list[torch.dtype]:
    """The dtypes safetensors reads (``_TYPES``) or writes (``_SIZE``) with this torch."""
    # safetensors exposes its dtype tables only as privates.
    tables = [*st_torch._TYPES.values(), *st_torch._SIZE]  # noqa: SLF001
    found = {d for d in tables if d is not None}
    return sorted(found, key=str)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, so NaN payloads, -0.0 and packed dtypes compare exactly."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def sample(dtype: torch.dtype) -> torch.Tensor:
    """Every byte value (so NaN, inf and -0.0 patterns of 1-byte floats appear), shaped 2-D and
    made non-contiguous, for any element size."""
    size = torch.empty((), dtype=dtype).element_size()
    g = torch.Generator().manual_seed(size)
    raw = torch.cat([torch.arange(256, dtype=torch.uint8)] * size)
    raw = torch.cat([raw, torch.randint(0, 256, (size * 24,), dtype=torch.uint8, generator=g)])
    if dtype == torch.bool:
        raw = raw % 2  # only 0 and 1 are valid bools
    return raw.view(dtype).reshape(8, -1).t()


@pytest.fixture
def store(tmp_path: Path, index_url: str) -> Iterator[WeightStore]:
    s = WeightStore.open(
        tmp_path / "store", index_url=index_url, settings=StoreSettings(fsync=False)
    )
    yield s
    s.close()


def test_safetensors_lists_the_dtypes_we_expect() -> None:
    names = {str(d).removeprefix("torch.") for d in safetensors_dtypes()}
    assert {"float8_e4m3fnuz", "float8_e5m2fnuz", "uint16", "uint32", "uint64"} <= names
    assert "complex64" in names


@pytest.mark.parametrize("dtype", safetensors_dtypes(), ids=str)
def test_every_safetensors_dtype_round_trips(
    store: WeightStore, tmp_path: Path, dtype: torch.dtype
) -> None:
    info = dtype_info(dtype)  # a dtype safetensors knows and we do not fails here
    assert DTYPES[info.name] is info
    t = sample(dtype)
    snap = store.save("dt", {"x": t, "y": t[:3]})
    out = store.restore(snap.id)
    assert out["x"].dtype == dtype and out["x"].shape == t.shape
    assert torch.equal(bits(out["x"]), bits(t)) and torch.equal(bits(out["y"]), bits(t[:3]))
    target = {"x": torch.empty_like(t), "y": torch.empty_like(t[:3])}
    store.restore(snap.id, into=target)
    assert torch.equal(bits(target["x"]), bits(t))
    path = tmp_path / "out.safetensors"
    store.export(snap.id, path)
    with safe_open(str(path), framework="pt") as f:
        back = f.get_tensor("x")
    assert back.dtype == dtype and back.shape == t.shape
    assert torch.equal(bits(back), bits(t))
    again = store.import_file("dt2", path)
    assert [e.digest for e in again.tensors] == [e.digest for e in snap.tensors]
    assert store.verify().ok
