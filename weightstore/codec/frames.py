"""zstd over fixed-size independent frames of a plane-major buffer.

Frames never span two planes, so each frame sees bytes of one kind (exponents, or mantissas),
and any frame can be decoded alone: by many threads, or later by a GPU's batched zstd.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable

import numpy as np
import zstandard as zstd

from weightstore.codec.format import RAW_FRAME
from weightstore.codec.layout import U8
from weightstore.codec.native import NativeZstd
from weightstore.errors import CorruptObject

# zstd's fast strategy with a 64-entry hash table and 7-byte minimum matches: exponent planes are
# near-random symbol streams in which short LZ matches cost more than Huffman-coded literals, so
# finding fewer matches is both smaller and faster. Measured on all-MiniLM-L6-v2 exponent planes
# (64 KiB frames): 0.331 of raw at 663-749 MB/s, vs level 1: 0.358 at 336, level 3: 0.401 at 165,
# level 19: 0.332 at 3; equal or better than level 1 on the other planes and on XOR deltas.
_FAST = {
    "strategy": zstd.STRATEGY_FAST,
    "min_match": 7,
    "search_log": 1,
    "hash_log": 6,
    "window_log": 17,
}


# Objects with fewer compressed bytes decode on the calling thread: zstd's threads would cost more.
PARALLEL_FROM = 4 << 20

# Planes with fewer frames are always compressed whole: probing them saves nothing.
_PROBE_MIN_FRAMES = 8


class FrameCodec:
    """Compresses and decompresses frames; one instance may be shared by many threads."""

    def __init__(
        self, level: int | None = None, native: NativeZstd | None = None, min_saving: float = 0.01
    ) -> None:
        self._native = native
        self._min_saving = min_saving
        if level is None:
            self._params = zstd.ZstdCompressionParameters(write_content_size=True, **_FAST)
        else:
            self._params = zstd.ZstdCompressionParameters.from_level(level, write_content_size=True)
        self._local = threading.local()

    def _cctx(self) -> zstd.ZstdCompressor:
        cctx: zstd.ZstdCompressor | None = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstd.ZstdCompressor(compression_params=self._params)
        return cctx

    def _dctx(self) -> zstd.ZstdDecompressor:
        dctx: zstd.ZstdDecompressor | None = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = zstd.ZstdDecompressor()
        return dctx

    def compress(
        self, planes: U8, plan: list[tuple[int, int]], n_planes: int, threads: int = 1
    ) -> tuple[list[int], list[memoryview | bytes]]:
        """Compress each planned frame; return the frame table and the payload pieces.

        A plane whose sampled frames do not shrink by ``min_saving`` (1% by default: the low
        mantissa bytes of trained weights) is stored uncompressed without compressing the
        rest: that halves encoding time on fp32 for a size cost below 0.1%, and such a plane
        costs nothing to decode.
        """
        view = memoryview(planes)  # type: ignore[arg-type]
        pieces = [view[off : off + n] for off, n in plan]
        if not pieces:
            return [], []
        cctx = self._cctx()
        per_plane = len(pieces) // n_planes
        todo: list[int] = []
        for p in range(n_planes):
            idx = range(p * per_plane, (p + 1) * per_plane)
            if per_plane >= _PROBE_MIN_FRAMES:
                probe = [idx[0], idx[len(idx) // 2], idx[-1]]
                sizes = cctx.multi_compress_to_buffer([pieces[i] for i in probe], threads=1)
                packed = sum(len(sizes[i]) for i in range(len(probe)))
                if packed >= (1 - self._min_saving) * sum(len(pieces[i]) for i in probe):
                    continue
            todo.extend(idx)
        table = [len(piece) | RAW_FRAME for piece in pieces]
        payload: list[memoryview | bytes] = list(pieces)
        if todo:
            big = threads > 1 and sum(len(pieces[i]) for i in todo) >= PARALLEL_FROM
            out = cctx.multi_compress_to_buffer(
                [pieces[i] for i in todo], threads=threads if big else 1
            )
            for j, i in enumerate(todo):
                segment = out[j]
                if len(segment) < len(pieces[i]):
                    table[i] = len(segment)
                    payload[i] = segment.tobytes()
        return table, payload

    def decode_planes(
        self,
        raw_len: int,
        n_planes: int,
        plan: list[tuple[int, int]],
        table: tuple[int, ...],
        payload: memoryview,
        name: str,
        threads: int = 1,
        alloc: Callable[[int, int], U8] | None = None,
        map_chunks: Callable[[Callable[[int, int], None], list[tuple[int, int]]], None]
        | None = None,
    ) -> list[U8]:
        """Decode the frames into one array per plane.

        A plane stored entirely uncompressed comes back as a read-only view into ``payload``
        (no copy: those are 3 of 4 planes of fp32 weights); other planes are new arrays. With
        ``threads`` > 1, large objects' frames are decompressed on several threads.
        ``alloc(plane, size)`` supplies the decoded planes' buffers (default: new arrays).
        """
        plane_len = raw_len // n_planes if n_planes else 0
        per_plane = len(plan) // n_planes if n_planes else 0
        planes: list[U8] = []
        packed: list[tuple[int, int, U8, int, int]] = []  # (at, size, plane, offset, length)
        pos = 0
        for p in range(n_planes):
            rows = range(p * per_plane, (p + 1) * per_plane)
            sizes = [table[i] & ~RAW_FRAME for i in rows]
            if all(table[i] & RAW_FRAME for i in rows):
                if sum(sizes) != plane_len or pos + plane_len > len(payload):
                    raise CorruptObject(f"{name}: plane {p} is not {plane_len} bytes")
                planes.append(np.frombuffer(payload[pos : pos + plane_len], dtype=np.uint8))
                pos += plane_len
                continue
            plane = alloc(p, plane_len) if alloc else np.empty(plane_len, dtype=np.uint8)
            for i, size in zip(rows, sizes, strict=True):
                off, n = plan[i]
                off -= p * plane_len
                src = payload[pos : pos + size]
                pos += size
                if table[i] & RAW_FRAME:
                    if size != n:
                        raise CorruptObject(f"{name}: stored frame of {size} bytes, expected {n}")
                    plane[off : off + n] = np.frombuffer(src, dtype=np.uint8)
                else:
                    packed.append((pos - size, size, plane, off, n))
            planes.append(plane)
        if pos > len(payload):
            raise CorruptObject(f"{name}: frames run past the end of the object")
        if self._native is not None:
            self._decompress_native(packed, payload, name, threads, map_chunks)
        else:
            self._decompress(packed, payload, name, threads)
        return planes

    def _decompress_native(
        self,
        packed: list[tuple[int, int, U8, int, int]],
        payload: memoryview,
        name: str,
        threads: int,
        map_chunks: Callable[[Callable[[int, int], None], list[tuple[int, int]]], None] | None,
    ) -> None:
        native = self._native
        assert native is not None
        src_base = np.frombuffer(payload, dtype=np.uint8).ctypes.data if len(payload) else 0
        # Addresses are worked out once per plane: the per-frame loop then holds the GIL for
        # little more than one ctypes call, which releases it while zstd runs.
        addr = {id(plane): plane.ctypes.data for _, _, plane, _, _ in packed}
        jobs = [
            (addr[id(plane)] + off, n, src_base + at, size) for at, size, plane, off, n in packed
        ]

        def run(start: int, stop: int) -> None:
            native.decompress_many(jobs[start:stop], name)

        total = sum(n for _, _, _, _, n in packed)
        if map_chunks is None or threads <= 1 or total < PARALLEL_FROM:
            run(0, len(packed))
            return
        step = -(-len(packed) // threads)
        map_chunks(run, [(a, min(a + step, len(packed))) for a in range(0, len(packed), step)])

    def _decompress(
        self,
        packed: list[tuple[int, int, U8, int, int]],
        payload: memoryview,
        name: str,
        threads: int,
    ) -> None:
        if not packed:
            return
        total = sum(n for _, _, _, _, n in packed)
        frames: list[bytes | bytearray | memoryview] = [
            payload[at : at + size] for at, size, _, _, _ in packed
        ]
        try:
            if threads > 1 and total >= PARALLEL_FROM:
                sizes = struct.pack(f"<{len(packed)}Q", *(n for _, _, _, _, n in packed))
                out = self._dctx().multi_decompress_to_buffer(
                    frames, decompressed_sizes=sizes, threads=threads
                )
                results: list[bytes | memoryview] = [
                    memoryview(out[i])  # type: ignore[arg-type]
                    for i in range(len(out))
                ]
            else:
                dctx = self._dctx()
                results = []
                for src, (_, _, _, off, n) in zip(frames, packed, strict=True):
                    if zstd.frame_content_size(src) != n:
                        raise CorruptObject(f"{name}: frame at {off} does not hold {n} bytes")
                    results.append(dctx.decompress(src))
        except zstd.ZstdError as e:
            raise CorruptObject(f"{name}: a frame does not decompress: {e}") from e
        for (_, _, plane, off, n), data in zip(packed, results, strict=True):
            if len(data) != n:
                raise CorruptObject(f"{name}: frame at {off} decoded to {len(data)} bytes")
            plane[off : off + n] = np.frombuffer(data, dtype=np.uint8)
