"""Un-grouping, XOR and arithmetic deltas as torch ops, bit-exact with ``weightstore.codec``.

They run wherever the tensors are: on a GPU next to a resident base, or on the CPU, where the
tests check them against the numpy reference. Elements are handled as signed integers of
their width (torch's unsigned types lack shifts on some devices); every step is a bit
operation or a wrapping add, so the sign of the container does not matter.
"""

from __future__ import annotations

import torch

_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def as_elements(raw: torch.Tensor, k: int) -> torch.Tensor:
    """A 1-D uint8 tensor viewed as ``k``-byte integers (no copy)."""
    if k == 1:
        return raw
    if raw.numel() == 0:  # an empty array from numpy has stride 0, which view() refuses
        return raw.new_empty(0, dtype=_INT[k])
    return raw.view(_INT[k])


def _top(k: int) -> int:
    return -(1 << (8 * k - 1))  # the sign bit alone, as a signed value


def _low_bits(k: int) -> int:
    return (1 << (8 * k - 1)) - 1  # every bit but the sign bit


def ungroup(planes: torch.Tensor, k: int, rotate: bool) -> torch.Tensor:
    """Plane-major bytes (``k`` rows of equal length, or flat) back to raw bytes: a new
    contiguous uint8 tensor on the planes' device."""
    if k == 1:
        return planes.reshape(-1).clone()
    raw = planes.reshape(k, -1).t().contiguous().reshape(-1)
    if rotate:
        v = as_elements(raw, k)
        # rotate right by one bit: the sign, stored lowest, goes back to the top
        v.copy_(((v >> 1) & _low_bits(k)) | (v << (8 * k - 1)))
    return raw


def xor_into(acc: torch.Tensor, delta: torch.Tensor) -> None:
    """``acc ^= delta`` on raw bytes (both uint8, same length)."""
    acc.bitwise_xor_(delta)


def _flip(x: torch.Tensor, k: int) -> torch.Tensor:
    """All ones where ``x``'s top bit is set, else the top bit alone (see codec.arith)."""
    return (x >> (8 * k - 1)) | _top(k)


def add_into(acc: torch.Tensor, delta: torch.Tensor, k: int) -> None:
    """Apply an arithmetic (ULP) delta to raw bytes in place: ``codec.arith.add_delta``."""
    z, b = as_elements(delta, k), as_elements(acc, k)
    d = ((z >> 1) & _low_bits(k)) ^ -(z & 1)  # un-zigzag
    d += b ^ _flip(b, k)  # wraps modulo 2^bits
    b.copy_(d ^ _flip(~d, k))
