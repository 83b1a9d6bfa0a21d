"""Byte budgets given as integers or as strings such as "8GiB", "512 MB" or "0"."""

from __future__ import annotations

import re

from weightstore.errors import InvalidInput

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1 << 10,
    "kib": 1 << 10,
    "mi": 1 << 20,
    "mib": 1 << 20,
    "gi": 1 << 30,
    "gib": 1 << 30,
    "ti": 1 << 40,
    "tib": 1 << 40,
}
_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_bytes(value: int | str, what: str = "budget") -> int:
    """A byte count from ``value``: a non-negative int, or a number with an optional unit
    (B, KB/MB/GB/TB in powers of 1000, KiB/MiB/GiB/TiB in powers of 1024; case-insensitive)."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a byte count or a string like '8GiB', not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise InvalidInput(f"{what} must be >= 0 bytes, not {value}")
        return value
    if isinstance(value, str):
        m = _PATTERN.fullmatch(value)
        unit = _UNITS.get(m.group(2).lower()) if m else None
        if m is not None and unit is not None:
            return int(float(m.group(1)) * unit)
    raise InvalidInput(
        f"{what} {value!r} is not a byte count: use an integer or a string like '8GiB' or '512MB'"
    )
