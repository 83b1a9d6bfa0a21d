"""The compiled decoder: a whole object and its delta chain in one call per block range.

``_fastdecode.c`` (built by setup.py when a C compiler is present; never compiled at import or
at run time) decompresses each block's frames of every level of a chain into a cache-sized
scratch buffer, un-groups them and applies the XOR or arithmetic deltas, writing each output
byte once. It is called through ctypes, which releases the GIL for the call, so Python runs
once per object (or per thread's share of a large object) instead of once per frame and per
numpy block. Chains the compiled code does not take (mixed element or frame sizes, a damaged
chain) go to the numpy path, which decodes or rejects them exactly as before.
"""

from __future__ import annotations

import ctypes
import importlib.util
from collections.abc import Callable, Sequence

import numpy as np

from weightstore.codec.format import HEADER_SIZE, Header
from weightstore.codec.frames import PARALLEL_FROM
from weightstore.codec.layout import U8
from weightstore.codec.native import NativeZstd
from weightstore.errors import CorruptObject

_OPS = {"raw": 0, "plain": 1, "delta": 2, "sub": 3}
_ZSTD, _SIZE, _RAW_SIZE, _NOMEM = 1, 2, 3, 4

MapChunks = Callable[[Callable[[int, int], None], list[tuple[int, int]]], None]


def library_path() -> str | None:
    """Where the built extension is, or None when it was not built."""
    spec = importlib.util.find_spec("weightstore.codec._fastdecode")
    return spec.origin if spec is not None and spec.origin else None


class FusedDecoder:
    """Decodes chains through the compiled kernel; thread-safe."""

    def __init__(self, lib: ctypes.CDLL, zstd: NativeZstd) -> None:
        self._zstd = zstd
        self._fn = lib.ws_decode_blocks
        self._fn.restype = ctypes.c_int
        self._fn.argtypes = [
            ctypes.c_void_p,  # levels
            ctypes.c_uint32,  # n_levels
            ctypes.c_uint32,  # k
            ctypes.c_uint64,  # plane_len
            ctypes.c_uint64,  # frame_size
            ctypes.c_uint64,  # first block
            ctypes.c_uint64,  # stop block
            ctypes.c_void_p,  # out
            ctypes.c_void_p,  # scratch
            ctypes.c_void_p,  # dctx
            ctypes.c_void_p,  # ZSTD_decompressDCtx
            ctypes.c_void_p,  # ZSTD_isError
            ctypes.c_void_p,  # err[3]
        ]
        self._decompress, self._is_error = zstd.addresses()

    @staticmethod
    def takes(headers: Sequence[Header]) -> bool:
        """Whether the kernel decodes this chain (root last); the numpy path takes the rest.

        Every level with frames must share one element size and frame size; an XOR-only chain
        one layout (the numpy path rejects others); arithmetic deltas need 2-8 byte elements
        without rotation (likewise).
        """
        framed = [h for h in headers if h.encoding != "raw"]
        if not framed or headers[0].raw_len == 0:
            return False
        k, size = framed[0].layout.elem_size, framed[0].frame_size
        if any(h.layout.elem_size != k or h.frame_size != size for h in framed):
            return False
        if all(h.encoding != "sub" for h in headers):
            return len({h.layout for h in framed}) == 1 and headers[0].layout == framed[0].layout
        return all(
            h.layout.elem_size > 1 and not h.layout.rotate for h in headers if h.encoding == "sub"
        )

    def decode(
        self,
        chain: Sequence[bytes | memoryview],
        headers: Sequence[Header],
        labels: Sequence[str],
        out: U8,
        scratch: Callable[[int], U8],
        threads: int,
        map_chunks: MapChunks | None,
        base: U8 | None = None,
    ) -> U8:
        """Write ``chain[0]``'s raw bytes into ``out`` (aligned to the element size).
        ``scratch(size)`` is the calling thread's buffer; ``map_chunks`` runs block ranges on
        the codec's threads for objects of at least ``PARALLEL_FROM`` bytes. With ``base``
        (raw bytes, aligned) every link is a delta applied to it: it is the chain's root,
        copied block by block like a raw object's payload."""
        framed = next(h for h in headers if h.encoding != "raw")
        k, frame_size = framed.layout.elem_size, framed.frame_size
        raw_len = headers[0].raw_len
        plane_len = raw_len // k
        # Views keep every blob's buffer alive (and its address fixed) until the calls return.
        views = [np.frombuffer(blob, dtype=np.uint8) for blob in chain]
        rows: list[int] = [] if base is None else [base.ctypes.data, 0, _OPS["raw"], 0]
        for view, h in zip(reversed(views), reversed(headers), strict=True):
            addr = view.ctypes.data if view.size else 0
            rows += [addr + h.payload_offset, addr + HEADER_SIZE, _OPS[h.encoding]]
            rows.append(int(h.layout.rotate))
        levels = np.array(rows, dtype=np.uint64)
        n_blocks = -(-plane_len // frame_size)
        slot = min(frame_size, plane_len)

        def run(first: int, stop: int) -> None:
            err = np.zeros(3, dtype=np.int64)
            buf = scratch(k * slot)
            rc = self._fn(
                levels.ctypes.data,
                len(levels) // 4,
                k,
                plane_len,
                frame_size,
                first,
                stop,
                out.ctypes.data,
                buf.ctypes.data,
                self._zstd.context(),
                self._decompress,
                self._is_error,
                err.ctypes.data,
            )
            if rc:
                self._raise(rc, err, labels, len(levels) // 4)

        if map_chunks is None or threads <= 1 or raw_len < PARALLEL_FROM or n_blocks < 2:
            run(0, n_blocks)
        else:
            step = -(-n_blocks // threads)
            map_chunks(run, [(a, min(a + step, n_blocks)) for a in range(0, n_blocks, step)])
        return out

    def _raise(self, rc: int, err: np.ndarray, labels: Sequence[str], n: int) -> None:
        level, frame, detail = (int(x) for x in err)
        at = n - 1 - level  # levels run root first; with a caller's base, one more than links
        name = labels[at] if 0 <= at < len(labels) else "object"
        if rc == _ZSTD:
            what = self._zstd.error_name(detail)
            raise CorruptObject(f"{name}: frame {frame} does not decompress: {what}")
        if rc == _SIZE:
            raise CorruptObject(f"{name}: frame {frame} decoded to {detail} bytes")
        if rc == _RAW_SIZE:
            raise CorruptObject(f"{name}: stored frame {frame} has {detail} bytes")
        if rc == _NOMEM:
            raise MemoryError("the compiled decoder could not allocate its cursors")
        raise ValueError(f"the compiled decoder rejected its arguments (code {rc})")


def load_fused(zstd: NativeZstd | None) -> FusedDecoder | None:
    """The compiled decoder, or None when it was not built or libzstd was not found."""
    path = library_path()
    if zstd is None or path is None:
        return None
    try:
        return FusedDecoder(ctypes.CDLL(path), zstd)
    except (OSError, AttributeError):
        return None
