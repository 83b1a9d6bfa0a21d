"""Encode raw bytes into a stored object (raw, plain or delta) and decode objects back.

An object's name is the digest of its raw bytes; the encoding is only how those bytes are kept.
``decode`` resolves a whole delta chain in one pass through the compiled kernel
(``fused.py``) when it is built; the numpy path resolves XOR chains in the grouped domain (the
root's planes, every delta's planes XORed in, one un-grouping at the end) and chains with
arithmetic deltas level by level.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from weightstore.codec.arith import add_delta, sub_delta
from weightstore.codec.digest import digest as digest_of
from weightstore.codec.format import (
    HEADER_SIZE,
    Header,
    frame_plan,
    pack_header,
    read_chain,
)
from weightstore.codec.frames import FrameCodec
from weightstore.codec.fused import load_fused
from weightstore.codec.layout import BYTES, U8, Layout, group, ungroup
from weightstore.codec.native import load_native
from weightstore.codec.scratch import Scratch
from weightstore.errors import CorruptObject, InvalidInput
from weightstore.settings import DECODER_ENV, DECODERS, CodecSettings
from weightstore.types import Encoding


def raw_object_size(raw_len: int) -> int:
    """Stored size of an object kept raw."""
    return HEADER_SIZE + raw_len


@dataclass(frozen=True)
class Encoded:
    """An encoded object ready to store."""

    blob: bytes
    encoding: Encoding
    base: str | None
    raw_size: int

    @property
    def stored_size(self) -> int:
        return len(self.blob)


class Codec:
    """Pure bytes-to-bytes object codec; thread-safe."""

    def __init__(
        self, settings: CodecSettings | None = None, threads: int = 1, native: bool = True
    ) -> None:
        """``native``: decompress through the system libzstd when there is one.

        The decoder is the compiled one when it was built and libzstd is found, unless
        ``settings.decoder`` or the environment variable ``WEIGHTSTORE_DECODER`` (read here,
        when the codec is made) is ``"numpy"``; see :attr:`decoder`.
        """
        self.settings = settings or CodecSettings()
        if self.settings.frame_size <= 0 or self.settings.frame_size >= 1 << 31:
            raise InvalidInput("frame_size must be between 1 byte and 2 GiB")
        if not 0 <= self.settings.plane_min_saving < 1:
            raise InvalidInput("plane_min_saving must be at least 0 and below 1")
        choice = os.environ.get(DECODER_ENV) or self.settings.decoder
        if choice not in DECODERS:
            raise InvalidInput(f"decoder must be one of {', '.join(DECODERS)}, not {choice!r}")
        zstd = load_native() if native else None
        self._frames = FrameCodec(self.settings.level, zstd, self.settings.plane_min_saving)
        self._fused = load_fused(zstd) if choice == "auto" else None
        self.zstd_version = zstd.version if zstd else None
        self._threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._scratch = Scratch()

    def _map_chunks(self, fn: Callable[[int, int], None], chunks: list[tuple[int, int]]) -> None:
        """Run ``fn`` over element ranges of one large object on the codec's own threads
        (separate from any caller's pool, so nesting cannot deadlock)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, "weightstore-codec")
        futures = [self._pool.submit(fn, a, b) for a, b in chunks]
        # Every chunk must be done with the caller's buffers before an error in one of them
        # propagates: a chunk still running would write into memory its caller has freed.
        wait(futures)
        for f in futures:
            f.result()

    @property
    def decoder(self) -> str:
        """``"compiled"`` (fused C kernel), ``"numpy+libzstd"`` or ``"numpy+python-zstandard"``."""
        if self._fused is not None:
            return "compiled"
        return "numpy+libzstd" if self.zstd_version else "numpy+python-zstandard"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def encode_raw(self, raw: U8) -> Encoded:
        head = pack_header("raw", BYTES, raw.size, self.settings.frame_size, None, [])
        return Encoded(head + raw.tobytes(), "raw", None, raw.size)

    def _encode_planes(
        self, planes: U8, raw_len: int, layout: Layout, encoding: Encoding, base: str | None
    ) -> Encoded:
        plan = frame_plan(raw_len, layout, self.settings.frame_size)
        table, payload = self._frames.compress(planes, plan, layout.elem_size, self._threads)
        head = pack_header(encoding, layout, raw_len, self.settings.frame_size, base, table)
        return Encoded(b"".join([head, *payload]), encoding, base, raw_len)

    def encode_plain(self, raw: U8, layout: Layout) -> Encoded:
        planes = group(raw, layout, self._scratch.get("planes", raw.size))
        return self._encode_planes(planes, raw.size, layout, "plain", None)

    def encode_delta(self, raw: U8, base_raw: U8, base_digest: str, layout: Layout) -> Encoded:
        if base_raw.size != raw.size:
            raise InvalidInput(f"delta base has {base_raw.size} bytes, object has {raw.size}")
        xor = np.bitwise_xor(raw, base_raw, out=self._scratch.get("xor", raw.size))
        planes = group(xor, layout, self._scratch.get("planes", raw.size))
        return self._encode_planes(planes, raw.size, layout, "delta", base_digest)

    def encode_sub(self, raw: U8, base_raw: U8, base_digest: str, layout: Layout) -> Encoded:
        """Arithmetic delta of floats (``layout.rotate``): ULP differences, zigzag-coded,
        grouped without rotation."""
        if not layout.rotate:
            raise InvalidInput("arithmetic deltas are for floating-point layouts")
        if base_raw.size != raw.size:
            raise InvalidInput(f"delta base has {base_raw.size} bytes, object has {raw.size}")
        plain = Layout(layout.elem_size)
        diff = sub_delta(raw, base_raw, layout.elem_size, self._scratch.get("xor", raw.size))
        planes = group(diff, plain, self._scratch.get("planes", raw.size))
        return self._encode_planes(planes, raw.size, plain, "sub", base_digest)

    def encode(self, raw: U8, layout: Layout, base: tuple[str, U8] | None = None) -> Encoded:
        """Smallest of raw, plain and (given a base) delta.

        A delta at most ``delta_accept_ratio`` of the raw size is taken without trying the
        other encodings, which would double the encoding time for a choice they practically
        never win. Floats try the arithmetic delta before XOR.
        """
        candidates: list[Encoded] = []
        if raw.size:
            if base is not None:
                accept = self.settings.delta_accept_ratio * raw.size
                deltas = []
                # Floats try the arithmetic delta first: it won for 606 of 610 fine-tuned
                # tensors measured, so XOR is only tried when it is not already small.
                if layout.rotate:
                    deltas.append(self.encode_sub(raw, base[1], base[0], layout))
                    if deltas[0].stored_size <= accept:
                        return deltas[0]
                deltas.append(self.encode_delta(raw, base[1], base[0], layout))
                delta = min(deltas, key=lambda e: e.stored_size)
                if delta.stored_size <= accept:
                    return delta
                candidates.append(delta)
            candidates.append(self.encode_plain(raw, layout))
        best = min(candidates, key=lambda e: e.stored_size, default=None)
        if best is None or best.stored_size >= raw_object_size(raw.size):
            return self.encode_raw(raw)
        return best

    def decode(
        self,
        chain: Sequence[bytes | memoryview],
        names: Sequence[str] = (),
        out: U8 | None = None,
        *,
        base: U8 | None = None,
    ) -> U8:
        """Decode ``chain[0]`` given its delta chain ``chain[1:]`` (its base, its base's base...).

        With ``out`` (uint8, the object's raw length) the raw bytes are written there.
        With ``base`` (the raw bytes of the last link's base, e.g. a cached tensor's), every
        link is a delta and is applied to it, so a cached base is not decoded again; ``base``
        itself is only read (``out`` may be ``base``). Its digest is the caller's to know.
        Raises :class:`CorruptObject` if a header is damaged, a frame fails to decode, or the
        chain's links do not match.
        """
        headers, labels = read_chain(chain, names, rooted=base is None)
        if base is not None and base.size != headers[0].raw_len:
            raise InvalidInput(f"the base holds {base.size} bytes, the object {headers[0].raw_len}")
        fast = self._decode_fused(chain, headers, labels, out, base)
        if fast is not None:
            return fast
        if base is not None or any(h.encoding == "sub" for h in headers):
            return self._decode_in_order(chain, headers, labels, out, base)
        layout = headers[0].layout
        planes = self._planes(headers[-1], chain[-1], labels[-1], layout)
        for i in range(len(chain) - 2, -1, -1):
            if headers[i].layout != layout:
                raise CorruptObject(f"{labels[i]}: layout differs within its delta chain")
            delta = self._planes(headers[i], chain[i], labels[i], layout, f"delta{i % 2}")
            for j, d in enumerate(delta):
                if planes[j].flags.writeable:  # this thread's scratch
                    np.bitwise_xor(planes[j], d, out=planes[j])
                else:  # a view into a stored blob: XOR into scratch instead
                    acc = self._scratch.get(f"acc{j}", d.size)
                    planes[j] = np.bitwise_xor(planes[j], d, out=acc)
        chunks = self._map_chunks if self._threads > 1 else None
        return ungroup(planes, layout, out, chunks)

    def _decode_fused(
        self,
        chain: Sequence[bytes | memoryview],
        headers: list[Header],
        labels: list[str],
        out: U8 | None,
        base: U8 | None,
    ) -> U8 | None:
        """Decode through the compiled kernel; None when it is absent or does not take this
        chain or output (then the numpy path decodes, or rejects, it as before)."""
        fused = self._fused
        if fused is None or not fused.takes(headers):
            return None
        if base is not None and (base.ctypes.data % 8 or not base.flags.c_contiguous):
            return None
        raw_len = headers[0].raw_len
        if out is None:
            out = np.empty(raw_len, dtype=np.uint8)
        elif out.size != raw_len:
            raise InvalidInput(f"output holds {out.size} bytes, object {raw_len}")
        if out.ctypes.data % 8 or not (out.flags.c_contiguous and out.flags.writeable):
            return None
        scratch = self._scratch
        return fused.decode(
            chain,
            headers,
            labels,
            out,
            lambda n: scratch.get("fused", n),
            self._threads,
            self._map_chunks if self._threads > 1 else None,
            base,
        )

    def _decode_in_order(
        self,
        chain: Sequence[bytes | memoryview],
        headers: list[Header],
        labels: list[str],
        out: U8 | None,
        base: U8 | None = None,
    ) -> U8:
        """Resolve a chain with arithmetic deltas, or over a given ``base``: each level is
        applied to the fully decoded level below it (XOR levels could stay grouped, arithmetic
        ones cannot)."""
        chunks = self._map_chunks if self._threads > 1 else None
        raw_len = headers[0].raw_len
        acc = self._scratch.get("chain-acc", raw_len)
        if base is None:
            root = headers[-1]
            planes = self._planes(root, chain[-1], labels[-1], root.layout)
            ungroup(planes, root.layout, acc, chunks)
            top = len(chain) - 2
        else:
            acc[:] = base
            top = len(chain) - 1
        level = self._scratch.get("chain-level", raw_len)
        for i in range(top, -1, -1):
            h = headers[i]
            k = h.layout.elem_size
            if h.encoding == "sub" and (h.layout.rotate or k == 1):
                raise CorruptObject(f"{labels[i]}: invalid layout for an arithmetic delta")
            planes = self._planes(h, chain[i], labels[i], h.layout, f"delta{i % 2}")
            ungroup(planes, h.layout, level, chunks)
            if h.encoding == "sub":
                add_delta(level, acc, k, acc)
            else:
                np.bitwise_xor(acc, level, out=acc)
        if out is None:
            fresh: U8 = acc.copy()
            return fresh
        out[:] = acc
        return out

    def _planes(
        self, h: Header, blob: bytes | memoryview, name: str, layout: Layout, slot: str = "root"
    ) -> list[U8]:
        """The object's planes, in this thread's scratch buffers ``slot-*`` or as read-only
        views into ``blob``."""
        payload = memoryview(blob)[h.payload_offset :]
        if h.encoding == "raw":
            raw = np.frombuffer(payload, dtype=np.uint8)
            if layout.elem_size == 1:
                return [raw]
            planes = group(raw, layout, self._scratch.get(f"{slot}-grouped", raw.size))
            return list(planes.reshape(layout.elem_size, -1))
        if h.layout != layout:
            raise CorruptObject(f"{name}: layout differs within its delta chain")
        k = layout.elem_size
        scratch = self._scratch

        def alloc(p: int, size: int) -> U8:
            return scratch.get(f"{slot}-plane{p}", size)

        chunks = self._map_chunks if self._threads > 1 else None
        return self._frames.decode_planes(
            h.raw_len, k, h.frame_plan(), h.frames, payload, name, self._threads, alloc, chunks
        )

    def decode_verified(
        self,
        chain: Sequence[bytes | memoryview],
        names: Sequence[str],
        out: U8 | None = None,
        *,
        base: U8 | None = None,
    ) -> U8:
        """Decode and check that the result's digest is ``names[0]``."""
        raw = self.decode(chain, names, out, base=base)
        got = digest_of(memoryview(raw))  # type: ignore[arg-type]
        if got != names[0]:
            raise CorruptObject(f"{names[0]}: decoded bytes have digest {got}")
        return raw
