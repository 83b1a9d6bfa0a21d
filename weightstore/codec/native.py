"""Direct calls into the system's libzstd, to decompress frames straight into their place.

python-zstandard returns each decompressed frame as a new bytes object, which then has to be
copied, with the GIL held for each of the thousands of 64 KiB frames of a large object. Through
ctypes, ``ZSTD_decompressDCtx`` writes into the destination plane and runs without the GIL, so
many threads decode at once. Used when libzstd is found; python-zstandard is the fallback.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

from weightstore.errors import CorruptObject


class NativeZstd:
    """A thin, thread-safe wrapper over libzstd's one-shot decompression."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        lib.ZSTD_createDCtx.restype = ctypes.c_void_p
        lib.ZSTD_decompressDCtx.restype = ctypes.c_size_t
        lib.ZSTD_decompressDCtx.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
        ]
        lib.ZSTD_isError.restype = ctypes.c_uint
        lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
        lib.ZSTD_getErrorName.restype = ctypes.c_char_p
        lib.ZSTD_getErrorName.argtypes = [ctypes.c_size_t]
        self._local = threading.local()

    @property
    def version(self) -> str:
        """libzstd's version, as "1.5.4"."""
        n = int(self._lib.ZSTD_versionNumber())
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"

    def addresses(self) -> tuple[int, int]:
        """Addresses of ``ZSTD_decompressDCtx`` and ``ZSTD_isError``, for compiled callers."""
        fns = (self._lib.ZSTD_decompressDCtx, self._lib.ZSTD_isError)
        return tuple(ctypes.cast(f, ctypes.c_void_p).value or 0 for f in fns)  # type: ignore[return-value]

    def error_name(self, code: int) -> str:
        return str(self._lib.ZSTD_getErrorName(code).decode())

    def context(self) -> int:
        """This thread's decompression context."""
        dctx: int | None = getattr(self._local, "dctx", None)
        if dctx is None:
            # One context per thread for the thread's life: contexts are not thread-safe, and
            # creating one per frame would cost more than the frame.
            dctx = self._local.dctx = self._lib.ZSTD_createDCtx()
            if not dctx:
                raise MemoryError("ZSTD_createDCtx failed")
        return dctx

    def decompress_many(self, jobs: list[tuple[int, int, int, int]], name: str) -> None:
        """Decompress frames given as (destination address, its exact length, source address,
        source length); the caller keeps both buffers alive and in bounds."""
        lib, dctx = self._lib, self.context()
        for dst, n, src, size in jobs:
            got = lib.ZSTD_decompressDCtx(dctx, dst, n, src, size)
            if got != n:
                if lib.ZSTD_isError(got):
                    err = self.error_name(got)
                    raise CorruptObject(f"{name}: a frame does not decompress: {err}")
                raise CorruptObject(f"{name}: a frame decoded to {got} bytes, expected {n}")


def load_native() -> NativeZstd | None:
    """The system libzstd, or None when there is none (python-zstandard is used then)."""
    path = ctypes.util.find_library("zstd")
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        if lib.ZSTD_versionNumber() < 10400:  # 1.4: ZSTD_decompressDCtx is stable long before
            return None
        return NativeZstd(lib)
    except (OSError, AttributeError):
        return None
