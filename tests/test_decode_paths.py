"""The decode paths agree bit-exactly: the compiled kernel, numpy with libzstd, numpy with
python-zstandard, on every encoding, element size, chain shape and thread count."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightstore.codec import Codec, Layout, digest
from weightstore.codec.format import HEADER_SIZE, read_header
from weightstore.codec.fused import library_path
from weightstore.errors import CorruptObject, InvalidInput
from weightstore.settings import DECODER_ENV, CodecSettings

needs_kernel = pytest.mark.skipif(
    library_path() is None or Codec().decoder != "compiled",
    reason="the compiled decoder is not built here (python setup.py build_ext --inplace)",
)

FLOATS = {2: np.float16, 4: np.float32, 8: np.float64}


def _codecs(frame: int) -> dict[str, Codec]:
    s = CodecSettings(frame_size=frame)
    return {
        "reference": Codec(s, native=False),  # numpy + python-zstandard: the reference
        "numpy": Codec(CodecSettings(frame_size=frame, decoder="numpy")),
        "auto": Codec(s),
        "auto-threads": Codec(s, threads=3),
    }


def _weights(rng: np.random.Generator, n: int, k: int, kind: str) -> np.ndarray:
    if kind == "random":
        return rng.integers(0, 256, n * k, dtype=np.uint8)
    if kind == "zeros":
        return np.zeros(n * k, np.uint8)
    if kind == "specials" and k > 1 and n:
        vals = rng.normal(0, 0.05, n).astype(FLOATS[k])
        specials = np.array([np.nan, -0.0, np.inf, -np.inf, 0.0], FLOATS[k])
        vals[rng.integers(0, n, max(1, n // 10))] = specials[rng.integers(0, 5, max(1, n // 10))]
        raw: np.ndarray = vals.view(np.uint8).copy()
        raw[rng.integers(0, raw.size, 3)] ^= 0x5A  # NaN payloads, denormals
        return raw
    if k == 1:
        ints: np.ndarray = rng.integers(-3, 3, n).astype(np.int8).view(np.uint8)
        return ints
    floats: np.ndarray = rng.normal(0, 0.05, n).astype(FLOATS[k]).view(np.uint8).copy()
    return floats


def _step(rng: np.random.Generator, raw: np.ndarray, k: int) -> np.ndarray:
    """A fine-tuning step: floats nudged by a few ULPs, integers by a few bits."""
    if k == 1 or raw.size == 0:
        out: np.ndarray = raw.copy()
        out[rng.integers(0, max(raw.size, 1), min(raw.size, 5))] ^= 1
        return out
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[k]
    moved = raw.view(uint) + rng.integers(0, 300, raw.size // k).astype(uint)
    out_bytes: np.ndarray = moved.view(np.uint8)
    return out_bytes


@st.composite
def chains(draw: st.DrawFn) -> tuple[int, Layout, list[np.ndarray], list[str], str]:
    k = draw(st.sampled_from([1, 2, 4, 8]))
    layout = Layout(k, draw(st.booleans()) and k > 1)
    n = draw(st.integers(0, 5000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "random", "zeros", "specials"]))
    versions = [_weights(rng, n, k, kind)]
    for _ in range(draw(st.integers(0, 4))):
        versions.append(_step(rng, versions[-1], k))
    encodings = draw(
        st.lists(st.sampled_from(["delta", "sub", "raw-root"]), min_size=len(versions))
    )
    frame = draw(st.sampled_from([64, 1000, 4096, 65536]))
    return frame, layout, versions, encodings, draw(st.sampled_from(["plain", "raw"]))


def _encode_chain(
    codec: Codec, layout: Layout, versions: list[np.ndarray], kinds: list[str], root: str
) -> tuple[list[bytes], list[str]]:
    """Objects of ``versions`` (root first) as one chain, newest first, as the reader reads
    them."""
    names = [digest(v.tobytes()) for v in versions]
    first = (
        codec.encode_raw(versions[0]) if root == "raw" else codec.encode_plain(versions[0], layout)
    )
    blobs = [first.blob]
    for i in range(1, len(versions)):
        prev, raw = versions[i - 1], versions[i]
        if kinds[i] == "sub" and layout.rotate:
            enc = codec.encode_sub(raw, prev, names[i - 1], layout)
        else:
            enc = codec.encode_delta(raw, prev, names[i - 1], layout)
        blobs.append(enc.blob)
    return blobs[::-1], names[::-1]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_every_path_decodes_every_chain_alike(
    case: tuple[int, Layout, list[np.ndarray], list[str], str],
) -> None:
    frame, layout, versions, kinds, root = case
    codecs = _codecs(frame)
    blobs, names = _encode_chain(codecs["reference"], layout, versions, kinds, root)
    for depth in range(len(blobs)):
        chain, chain_names = blobs[depth:], names[depth:]
        want = versions[len(versions) - 1 - depth]
        for label, codec in codecs.items():
            got = codec.decode_verified(chain, chain_names)
            assert np.array_equal(got, want), label
            into = np.full(want.size + 8, 0xEE, np.uint8)
            codec.decode(chain, chain_names, into[8:])  # into a buffer, like a tensor's memory
            assert np.array_equal(into[8:], want) and (into[:8] == 0xEE).all(), label


@needs_kernel
def test_kernel_is_selected_and_can_be_forced_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Codec().decoder == "compiled"
    assert Codec(CodecSettings(decoder="numpy")).decoder == "numpy+libzstd"
    assert Codec(native=False).decoder == "numpy+python-zstandard"
    monkeypatch.setenv(DECODER_ENV, "numpy")
    assert Codec().decoder == "numpy+libzstd"
    monkeypatch.setenv(DECODER_ENV, "fastest")
    with pytest.raises(InvalidInput):
        Codec()


def _large_chain() -> tuple[list[bytes], list[str], np.ndarray]:
    """A 6 MB fp32 object over two deltas: large enough for the codec's threads."""
    rng = np.random.default_rng(7)
    layout = Layout(4, True)
    versions = [_weights(rng, 1_500_000, 4, "normal")]
    versions += [_step(rng, versions[-1], 4), _step(rng, versions[-1], 4)]
    blobs, names = _encode_chain(Codec(), layout, versions, ["", "sub", "delta"], "plain")
    return blobs, names, versions[-1]


def test_threads_split_large_objects_alike() -> None:
    blobs, names, want = _large_chain()
    for codec in _codecs(1 << 16).values():
        assert np.array_equal(codec.decode_verified(blobs, names), want)


@pytest.mark.parametrize("decoder", ["auto", "numpy"])
def test_damaged_frames_are_typed_errors_in_every_path(decoder: str) -> None:
    blobs, names, _ = _large_chain()
    codec = Codec(CodecSettings(decoder=decoder), threads=2)
    h = read_header(blobs[0])
    # Flip a byte inside the first compressed frame's payload: zstd's checks or the frame
    # length catch it (the frame table's CRC does not cover payloads; the digest does).
    at = next(i for i, f in enumerate(h.frames) if not f & 0x8000_0000)
    start = h.payload_offset + sum(f & 0x7FFF_FFFF for f in h.frames[:at])
    bad = bytearray(blobs[0])
    bad[start + 1 : start + 9] = bytes(8)
    out = np.zeros(h.raw_len, np.uint8)
    with pytest.raises(CorruptObject):
        codec.decode_verified([bytes(bad), *blobs[1:]], names, out)
    truncated = bytes(blobs[0][: HEADER_SIZE + 10])
    with pytest.raises(CorruptObject):
        codec.decode([truncated, *blobs[1:]], names)


def test_mixed_element_sizes_go_to_the_numpy_path() -> None:
    """A chain whose levels disagree on element size is not the kernel's: the numpy path
    rejects it as before."""
    raw = np.arange(4096, dtype=np.uint8)
    codec = Codec()
    base = codec.encode_plain(raw, Layout(2))
    delta = codec.encode_delta(raw ^ np.uint8(1), raw, digest(raw.tobytes()), Layout(4))
    with pytest.raises(CorruptObject):
        codec.decode([delta.blob, base.blob])


def test_without_the_extension_the_fallback_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no compiler was present at install time the kernel is absent: the codec picks the
    numpy path by itself and decodes the same bytes."""
    import weightstore.codec.fused as fused

    monkeypatch.setattr(fused, "library_path", lambda: None)
    blobs, names, want = _large_chain()
    codec = Codec(threads=2)
    assert codec.decoder == "numpy+libzstd"
    assert np.array_equal(codec.decode_verified(blobs, names), want)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_deltas_apply_to_a_held_base_alike(
    case: tuple[int, Layout, list[np.ndarray], list[str], str],
) -> None:
    """A delta whose base is already decoded (a cached tensor) is applied to it directly,
    never by replaying the base's chain; ``out`` may be the base itself."""
    frame, layout, versions, kinds, root = case
    codecs = _codecs(frame)
    blobs, names = _encode_chain(codecs["reference"], layout, versions, kinds, root)
    for top in range(len(blobs) - 1):
        for held in range(top + 1, len(blobs)):
            chain, chain_names = blobs[top:held], names[top:held]
            base = versions[len(versions) - 1 - held]
            want = versions[len(versions) - 1 - top]
            for label, codec in codecs.items():
                kept = base.copy()
                got = codec.decode_verified(chain, chain_names, base=kept)
                assert np.array_equal(got, want) and np.array_equal(kept, base), label
                codec.decode(chain, chain_names, kept, base=kept)  # in place
                assert np.array_equal(kept, want), label


def test_a_held_base_must_fit_and_links_must_be_deltas() -> None:
    blobs, names, want = _large_chain()
    codec = Codec()
    with pytest.raises(InvalidInput):
        codec.decode(blobs[:1], names[:1], base=np.zeros(10, np.uint8))
    with pytest.raises(CorruptObject):  # the root is no delta: nothing to apply to a base
        codec.decode(blobs, names, base=np.zeros(want.size, np.uint8))
    base = codec.decode(blobs[1:], names[1:])
    assert np.array_equal(codec.decode_verified(blobs[:1], names[:2], base=base), want)
    with pytest.raises(CorruptObject):  # the held base is named, and it is not the link's base
        codec.decode(blobs[:1], [names[0], names[2]], base=base)


@pytest.mark.parametrize("decoder", ["auto", "numpy"])
def test_an_error_in_one_thread_waits_for_the_others(decoder: str) -> None:
    """A damaged frame seen by one of the codec's threads raises only once every thread is
    done with the buffers: none may still write into ``out`` after decode returns."""
    blobs, names, _ = _large_chain()
    h = read_header(blobs[0])
    at = next(i for i, f in enumerate(h.frames) if not f & 0x8000_0000)
    start = h.payload_offset + sum(f & 0x7FFF_FFFF for f in h.frames[:at])
    bad = bytearray(blobs[0])
    bad[start + 1 : start + 9] = bytes(8)
    codec = Codec(CodecSettings(decoder=decoder), threads=4)
    out = np.zeros(h.raw_len, np.uint8)
    with pytest.raises(CorruptObject):
        codec.decode([bytes(bad), *blobs[1:]], names, out)
    snapshot = out.copy()
    time.sleep(0.05)  # a straggling thread would still be changing it
    assert np.array_equal(out, snapshot)
