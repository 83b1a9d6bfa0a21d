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

# Elements per block: temporaries stay in cache and are never fresh (page-faulting) memory.
_BLOCK = 1 << 16


def _flip_mask(x: np.ndarray, signed: np.dtype, top: np.ndarray) -> np.ndarray:
    """All ones where ``x``'s top bit is set, else just the top bit."""
    mask: np.ndarray = (x.view(signed) >> (8 * x.itemsize - 1)).view(x.dtype) | top
    return mask


def sub_delta(raw: U8, base: U8, elem_size: int, out: U8 | None = None) -> U8:
    """Zigzag(ordered(raw) - ordered(base)) as raw little-endian bytes (into ``out``)."""
    uint = _UINT[elem_size]
    signed = np.dtype(f"i{elem_size}")
    top = np.array(1 << (8 * elem_size - 1), uint)
    one = np.array(1, uint)
    if out is None:
        out = np.empty(raw.size, dtype=np.uint8)
    r_all, b_all, o_all = raw.view(uint), base.view(uint), out.view(uint)
    for s in range(0, r_all.size, _BLOCK):
        r, b = r_all[s : s + _BLOCK], b_all[s : s + _BLOCK]
        # ordered(u) = u ^ (all ones if negative else top): the values' order as unsigned ints
        d = r ^ _flip_mask(r, signed, top)
        d -= b ^ _flip_mask(b, signed, top)  # wraps modulo 2^bits
        sign = (d.view(signed) >> (8 * elem_size - 1)).view(uint)
        d <<= one
        d ^= sign
        o_all[s : s + _BLOCK] = d
    return out


def add_delta(delta: U8, base: U8, elem_size: int, out: U8) -> U8:
    """Inverse of :func:`sub_delta`: the raw bytes whose delta against ``base`` is ``delta``.
    ``out`` may be ``base`` itself."""
    uint = _UINT[elem_size]
    signed = np.dtype(f"i{elem_size}")
    top = np.array(1 << (8 * elem_size - 1), uint)
    one = np.array(1, uint)
    zero = np.array(0, uint)
    z_all, b_all, o_all = delta.view(uint), base.view(uint), out.view(uint)
    for s in range(0, z_all.size, _BLOCK):
        z, b = z_all[s : s + _BLOCK], b_all[s : s + _BLOCK]
        d = z >> one
        d ^= zero - (z & one)  # un-zigzag: (z >> 1) ^ -(z & 1)
        d += b ^ _flip_mask(b, signed, top)  # mod 2^bits
        o_all[s : s + _BLOCK] = d ^ _flip_mask(~d, signed, top)
    return out
