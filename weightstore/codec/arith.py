"""Arithmetic deltas of floats: the difference of their bit patterns in ULPs, zigzag-coded.

A fine-tuning step moves a weight by a few hundred to a few ten-thousand units in the last
place. XOR of two such values scrambles every bit below the change and often flips the bits
above it through carries; their difference as integers is small, so its high bytes are zero.
Floats are first mapped to unsigned integers in the order of their values (negative values
inverted, positive ones with the top bit set); everything is modular on k-byte unsigned
integers, so the transform is a bijection on every bit pattern, NaN payloads included.
Measured on all-MiniLM-L6-v2 fine-tunes: 10-15% smaller than XOR deltas.
"""

from __future__ import annotations

import numpy as np

from weightstore.codec.layout import _UINT, U8


def _ordered(u: np.ndarray, bits: int) -> np.ndarray:
    top = np.array(1 << (bits - 1), u.dtype)
    return np.where(u & top, ~u, u | top)


def _unordered(m: np.ndarray, bits: int) -> np.ndarray:
    top = np.array(1 << (bits - 1), m.dtype)
    return np.where(m & top, m ^ top, ~m)


def sub_delta(raw: U8, base: U8, elem_size: int) -> U8:
    """Zigzag(ordered(raw) - ordered(base)) as raw little-endian bytes."""
    uint = _UINT[elem_size]
    bits = 8 * elem_size
    d = _ordered(raw.view(uint), bits) - _ordered(base.view(uint), bits)  # wraps modulo 2^bits
    signed = d.view(np.dtype(f"i{elem_size}"))
    zigzag = (d << np.array(1, uint)) ^ (signed >> (bits - 1)).view(uint)
    result: U8 = zigzag.view(np.uint8)
    return result


def add_delta(delta: U8, base: U8, elem_size: int, out: U8) -> U8:
    """Inverse of :func:`sub_delta`: the raw bytes whose delta against ``base`` is ``delta``."""
    uint = _UINT[elem_size]
    bits = 8 * elem_size
    z = delta.view(uint)
    d = (z >> np.array(1, uint)) ^ (np.array(0, uint) - (z & np.array(1, uint)))
    m = _ordered(base.view(uint), bits) + d
    out.view(uint)[:] = _unordered(m, bits)
    return out
