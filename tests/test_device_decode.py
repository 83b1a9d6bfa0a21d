"""Decoding where a tensor goes (issue 18.3): with ``StoreSettings(device_decode="always")``
restores and loader swaps run the GPU's plan (frames batched into one buffer, decompressed by
the batched decompressor, un-grouped and deltas applied by torch ops, checked by the device
checksum) on the CPU here, with python-zstandard standing in for nvCOMP; bit-exact against the
CPU codec's path, and damage is a typed error. On CUDA with nvCOMP the "auto" rule picks it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from test_loader import _chain, _model_for, flip_byte, holds, object_path
from test_store import FAST, every_dtype, same

from weightstore import StoreSettings, TaskLoader, WeightStore
from weightstore.errors import CorruptObject, InvalidInput, SwapFailed
from weightstore.settings import DeviceDecode
from weightstore.torchcodec.gpu import nvcomp_available

ALWAYS = dataclasses.replace(FAST, device_decode="always")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WeightStore]:
    with WeightStore.open(tmp_path / "s", settings=ALWAYS) as s:
        yield s


def test_restores_decode_on_the_device_path_bit_exactly(store: WeightStore) -> None:
    ckpts = _chain(store, 3)
    sd = every_dtype()
    store.save("every", sd)
    cpu = torch.device("cpu")
    assert store.reader.decodes_on_device(cpu, 1)
    for ref, expected in (("every", sd), ("ft@1", ckpts[0]), ("ft@3", ckpts[2])):
        got = store.restore(ref)
        assert all(same(got[k], v) for k, v in expected.items()), ref
        into = {k: torch.zeros_like(v) for k, v in expected.items() if k != "f32.tied"}
        store.restore(ref, into=into, strict=False)
        assert all(same(into[k], v) for k, v in expected.items() if k in into), ref


def test_damage_is_a_typed_error_naming_the_tensor(store: WeightStore) -> None:
    ckpts = _chain(store, 2)
    victim = next(t for t in store.show("ft@2").weights if t.name == "f32")
    flip_byte(object_path(store, victim.digest))
    with pytest.raises(CorruptObject, match=r"tensor 'f32(\.tied)?'"):
        store.restore("ft@2")
    model = _model_for(ckpts[0])
    with TaskLoader(store, model, host_cache=0, staging=0) as loader:
        with pytest.raises(SwapFailed, match=r"does not decompress|device checksum|digest"):
            loader.activate("ft@2")
        assert loader.active is None


@pytest.mark.parametrize("staging", [1 << 30, 0])
def test_loader_swaps_decode_on_the_device_path(
    store: WeightStore, staging: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpts = _chain(store, 4)
    model = _model_for(ckpts[0])
    ptrs = {k: v.data_ptr() for k, v in model.items()}
    device = store.reader.device
    decoded: list[object] = []
    applied: list[object] = []

    def spy(calls: list[object], real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: object) -> Any:
            calls.append(args)
            return real(*args)

        return call

    monkeypatch.setattr(device, "decode", spy(decoded, device.decode))
    monkeypatch.setattr(device, "apply", spy(applied, device.apply))
    with TaskLoader(store, model, host_cache=0, staging=staging, apply_deltas="device") as loader:
        for step in (1, 3, 4, 2):  # whole chains, deltas over what it holds, whole again
            decoded.clear()
            applied.clear()
            report = loader.activate(f"ft@{step}")
            assert holds(model, ckpts[step - 1]), step
            assert decoded if step in (1, 2) else applied, step
            assert (report.bytes_delta_in_place > 0) == (step in (3, 4)), step
    assert {k: v.data_ptr() for k, v in model.items()} == ptrs


def test_the_rule(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="device_decode"):
        StoreSettings(device_decode="gpu")  # type: ignore[arg-type]
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    modes: list[tuple[DeviceDecode, bool, bool | None]] = [
        ("never", False, False),
        ("auto", False, None),
    ]
    for mode, on_cpu, on_cuda_big in modes:
        settings = dataclasses.replace(FAST, device_decode=mode)
        with WeightStore.open(tmp_path / mode, settings=settings) as s:
            assert s.reader.decodes_on_device(cpu, 64 << 20) is on_cpu
            big = s.reader.decodes_on_device(cuda, 64 << 20)
            small = s.reader.decodes_on_device(cuda, 1 << 10)
            assert not small  # below device_decode_min_bytes the CPU codec decodes
            expected = (nvcomp_available() is not None) if on_cuda_big is None else on_cuda_big
            assert big is expected
    with WeightStore.open(tmp_path / "always", settings=ALWAYS) as s:
        assert not s.reader.decodes_on_device(cpu, 0)  # nothing to decode


@pytest.mark.gpu
@pytest.mark.skipif(nvcomp_available() is None, reason="needs nvCOMP (weightstore[gpu])")
def test_cuda_restores_and_swaps_decode_with_nvcomp(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(5)
    first = {"big": torch.randn(3 << 20, generator=g), "small": torch.randn(7, generator=g)}
    second = {k: v + 1e-4 for k, v in first.items()}
    with WeightStore.open(tmp_path / "s", settings=FAST) as s:  # "auto"
        s.save("t", first, step=1)
        s.save("t", second, step=2)
        assert s.reader.decodes_on_device(torch.device("cuda"), first["big"].nbytes)
        got = s.restore("t@2", device="cuda")
        assert all(same(got[k].cpu(), v) for k, v in second.items())
        model = {k: torch.zeros_like(v, device="cuda") for k, v in first.items()}
        with TaskLoader(s, model, gpu_cache=0, host_cache=0, staging=0) as loader:
            loader.activate("t@1")
            report = loader.activate("t@2")
            assert holds(model, second) and report.bytes_delta_in_place > 0


def test_apply_deltas_host_keeps_the_codec_and_a_bad_value_is_refused(
    store: WeightStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpts = _chain(store, 2)
    model = _model_for(ckpts[0])
    with pytest.raises(InvalidInput, match="apply_deltas"):
        TaskLoader(store, model, apply_deltas="gpu")  # type: ignore[arg-type]
    monkeypatch.setattr(store.reader.device, "apply", None)  # the torch-ops path is not taken
    with TaskLoader(store, model, host_cache=0, apply_deltas="host") as loader:
        loader.activate("ft@1")
        report = loader.activate("ft@2")
        assert holds(model, ckpts[1]) and report.bytes_delta_in_place > 0
