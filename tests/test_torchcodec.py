"""The torch decode path (un-group and deltas as torch ops, frames decompressed in batches)
agrees bit-exactly with the numpy reference on every encoding; on the CPU here, with
python-zstandard standing in for nvCOMP, and on CUDA with nvCOMP where both are present."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightstore.codec import Codec, Layout, digest, group
from weightstore.codec.arith import add_delta
from weightstore.errors import CorruptObject, InvalidInput
from weightstore.settings import CodecSettings
from weightstore.torchcodec import ops
from weightstore.torchcodec.gpu import DeviceDecoder, nvcomp_available, via_host

ELEMS = [1, 2, 4, 8]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(ELEMS), st.booleans(), st.binary(max_size=4000))
def test_ops_match_numpy(k: int, rotate: bool, data: bytes) -> None:
    rotate = rotate and k > 1
    raw = np.frombuffer(data[: len(data) // k * k], dtype=np.uint8).copy()
    layout = Layout(k, rotate)
    planes = torch.from_numpy(group(raw, layout).copy())
    assert torch.equal(ops.ungroup(planes, k, rotate), torch.from_numpy(raw))
    base = raw[::-1].copy()
    acc = torch.from_numpy(base.copy())
    ops.xor_into(acc, torch.from_numpy(raw))
    assert torch.equal(acc, torch.from_numpy(base ^ raw))
    if k > 1:
        acc = torch.from_numpy(base.copy())
        ops.add_into(acc, torch.from_numpy(raw), k)
        want = add_delta(raw, base.copy(), k, base.copy())
        assert torch.equal(acc, torch.from_numpy(want))


def _chain(
    k: int, frame: int, n: int, seed: int
) -> tuple[list[bytes], list[str], list[np.ndarray]]:
    """Root (plain) + an arithmetic delta + an XOR delta of float data with NaN and -0.0."""
    dtype = {2: np.float16, 4: np.float32, 8: np.float64}[k]
    rng = np.random.default_rng(seed)
    v0 = rng.normal(0, 0.05, n).astype(dtype)
    v0[: min(n, 3)] = np.array([np.nan, -0.0, np.inf], dtype)[: min(n, 3)]
    raws = [v0.view(np.uint8).copy()]
    for _ in range(2):
        nxt = raws[-1].copy()
        nxt.view(f"u{k}")[:] += rng.integers(0, 200, n).astype(f"u{k}")
        raws.append(nxt)
    names = [digest(r.tobytes()) for r in raws]
    codec, layout = Codec(CodecSettings(frame_size=frame)), Layout(k, True)
    blobs = [
        codec.encode_plain(raws[0], layout).blob,
        codec.encode_sub(raws[1], raws[0], names[0], layout).blob,
        codec.encode_delta(raws[2], raws[1], names[1], layout).blob,
    ]
    return blobs[::-1], names[::-1], raws[::-1]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([2, 4, 8]), st.sampled_from([16, 1000, 65536]), st.integers(0, 3000))
def test_device_decoder_matches_the_codec_on_cpu(k: int, frame: int, n: int) -> None:
    blobs, names, raws = _chain(k, frame, n, seed=n)
    dec = DeviceDecoder("cpu")
    for depth in range(3):
        got = dec.decode(blobs[depth:], names[depth:])
        assert torch.equal(got, torch.from_numpy(raws[depth])), depth
        ref = Codec(native=False).decode(blobs[depth:], names[depth:])
        assert np.array_equal(ref, raws[depth])
    # Against a resident base: only the deltas above it are decoded.
    base = torch.from_numpy(raws[2].copy())
    assert torch.equal(dec.decode(blobs[:2], names[:2], base=base), torch.from_numpy(raws[0]))
    assert torch.equal(base, torch.from_numpy(raws[2]))  # the base itself is left alone
    raw_root = Codec().encode_raw(raws[2]).blob
    assert torch.equal(dec.decode([raw_root]), torch.from_numpy(raws[2]))


def test_device_decoder_rejects_damage() -> None:
    blobs, names, _ = _chain(4, 1024, 20000, seed=3)
    dec = DeviceDecoder("cpu")
    with pytest.raises(CorruptObject):
        dec.decode(blobs[1:], names[:2])  # wrong base name for the link
    with pytest.raises(CorruptObject):
        dec.decode(blobs[:2], names[:2])  # a chain without its root
    bad = bytearray(blobs[-1])
    bad[-200:-100] = bytes(100)
    with pytest.raises(CorruptObject):
        dec.decode([bytes(bad)])


def test_the_host_stand_in_for_nvcomp_decodes_alike() -> None:
    """What a GPU without nvCOMP runs (here its copies are between CPU tensors)."""
    blobs, names, raws = _chain(4, 1024, 7000, seed=9)
    dec = DeviceDecoder("cpu", via_host)
    for depth in range(3):
        assert torch.equal(dec.decode(blobs[depth:], names[depth:]), torch.from_numpy(raws[depth]))


@pytest.mark.parametrize("k", [2, 4, 8])
def test_device_decoder_applies_deltas_in_place(k: int) -> None:
    """Both links at once onto the held root's own memory; a damaged link changes nothing."""
    blobs, names, raws = _chain(k, 1024, 5000, seed=k)
    dec = DeviceDecoder("cpu")
    held = torch.from_numpy(raws[2].copy())
    ptr = held.data_ptr()
    out = dec.decode(blobs[:2], names[:3], base=held, in_place=True)
    assert out.data_ptr() == ptr and torch.equal(held, torch.from_numpy(raws[0]))
    held = torch.from_numpy(raws[2].copy())
    with pytest.raises(CorruptObject):  # the newest link cut short
        dec.decode([blobs[0][:-50], blobs[1]], names[:3], base=held, in_place=True)
    assert torch.equal(held, torch.from_numpy(raws[2]))  # the later link failed first
    with pytest.raises(InvalidInput, match="contiguous"):
        wide = torch.from_numpy(np.stack([raws[2], raws[2]], axis=1).copy())
        dec.decode(blobs[:2], names[:3], base=wide[:, 0], in_place=True)


@pytest.mark.gpu
@pytest.mark.skipif(
    nvcomp_available() is None, reason="needs nvCOMP (pip install 'weightstore[gpu]')"
)
def test_nvcomp_decodes_on_the_gpu() -> None:
    dev = torch.device("cuda")
    dec = DeviceDecoder(dev)
    for k in (2, 4):
        blobs, names, raws = _chain(k, 65536, 3_000_000, seed=k)
        for depth in range(3):
            got = dec.decode(blobs[depth:], names[depth:])
            assert torch.equal(got.cpu(), torch.from_numpy(raws[depth]))
        base = torch.from_numpy(raws[2]).to(dev)
        assert torch.equal(
            dec.decode(blobs[:2], names[:2], base=base).cpu(), torch.from_numpy(raws[0])
        )
