"""The device checksum: a 64-bit hash of an object's raw bytes that torch ops compute on any
device (``weightstore.torchcodec.devhash``), so a tensor changed in place on a GPU is checked
there, without copying it back for BLAKE3. This is the numpy definition, used at save.

The bytes, zero-padded to a multiple of 8, are little-endian 64-bit words ``w_i``; word ``i``
lies in block ``c = i // 2**15`` at position ``j = i % 2**15``. With all arithmetic modulo 2**64::

    mix(w) = w ^ (w >> 29)                                   (logical shift: a bijection)
    H      = sum_i  k_c * m_j * mix(w_i)  +  len * L         k_c = c*B | 1,  m_j = j*A | 1

Every change confined to one word is caught, so every single-bit flip: ``mix`` is a bijection,
so the word's term changes by some ``d != 0``, times an odd number, which is never 0 modulo
2**64. Zero padding adds nothing, so the length term tells ``b"x"`` from ``b"x\\0"``. Sums
commute, so a device may reduce in any order and agree to the bit. It is not a cryptographic
hash: it checks what the loader itself just wrote, the object's name (BLAKE3) is the identity.
"""

from __future__ import annotations

import numpy as np

BLOCK = 1 << 15  # words per block: 256 KiB, cache-resident on a CPU
A = 0x9E3779B97F4A7C15  # 2**64 / golden ratio
B = 0xC2B2AE3D27D4EB4F  # xxHash's 64-bit primes
L = 0x165667B19E3779F9
SHIFT = 29
_MASK = (1 << 64) - 1

_U = np.uint64


def position_weights(n: int) -> np.ndarray:
    """``m_j`` for ``j < n``, as uint64."""
    with np.errstate(over="ignore"):
        weights: np.ndarray = (np.arange(n, dtype=_U) * _U(A)) | _U(1)
    return weights


def block_weight(c: int) -> int:
    """``k_c`` as an unsigned integer."""
    return ((c * B) & _MASK) | 1


def finish(acc: int, nbytes: int) -> int:
    """The hash as a signed 64-bit integer (how the index and torch hold it)."""
    h = (acc + nbytes * L) & _MASK
    return h - (1 << 64) if h >> 63 else h


_WEIGHTS = position_weights(BLOCK)


def devhash(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """The device checksum of ``data``'s bytes (see the module docstring)."""
    raw = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    raw = raw.reshape(-1).view(np.uint8)
    n = raw.size
    whole = n // 8
    words = raw[: whole * 8].view("<u8") if whole else np.empty(0, dtype=_U)
    if n % 8:
        tail = np.zeros(8, dtype=np.uint8)
        tail[: n % 8] = raw[whole * 8 :]
        words = np.concatenate([words, tail.view("<u8")])
    acc = 0
    mixed = np.empty(min(BLOCK, words.size), dtype=_U)
    weighted = np.empty_like(mixed)
    with np.errstate(over="ignore"):
        for c, at in enumerate(range(0, words.size, BLOCK)):
            w = words[at : at + BLOCK]
            x, y = mixed[: w.size], weighted[: w.size]
            np.right_shift(w, _U(SHIFT), out=x)
            np.bitwise_xor(x, w, out=x)
            np.multiply(x, _WEIGHTS[: w.size], out=y)
            acc += block_weight(c) * int(y.sum(dtype=_U))
    return finish(acc & _MASK, n)
