"""The dtype table: which dtypes weightstore stores, their safetensors codes, element sizes and
how their bytes are grouped. Torch-free, so that commands which only move bytes (save and export
of safetensors files, verify, gc) never import torch; a row's torch dtype is looked up when a
tensor is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from weightstore.codec.layout import Layout
from weightstore.errors import UnsupportedDtype

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DtypeInfo:
    """How one dtype is named, sized and grouped."""

    name: str  # torch's attribute name: "float32", "bfloat16"
    safetensors: str
    itemsize: int  # bytes per torch element
    layout: Layout
    # Values per torch element: safetensors counts float4_e2m1fn_x2 in single 4-bit values,
    # so its last dimension is twice torch's.
    packed: int = 1

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype; :class:`UnsupportedDtype` on a torch too old to have it."""
        import torch

        dt = getattr(torch, self.name, None)
        if not isinstance(dt, torch.dtype):
            raise UnsupportedDtype(
                f"dtype {self.name} needs a newer torch than {torch.__version__}"
            )
        return dt

    def safetensors_shape(self, shape: tuple[int, ...]) -> list[int]:
        """The shape a safetensors header gives a tensor of this dtype and torch ``shape``."""
        dims = list(shape)
        if self.packed != 1 and dims:
            dims[-1] *= self.packed
        return dims

    def torch_shape(self, dims: list[int]) -> tuple[int, ...] | None:
        """The torch shape of a safetensors ``dims``; None when it cannot be one (a packed
        last dimension that is odd)."""
        if self.packed != 1 and dims:
            if dims[-1] % self.packed:
                return None
            dims = [*dims[:-1], dims[-1] // self.packed]
        return tuple(dims)


def _table() -> dict[str, DtypeInfo]:
    rows: list[tuple[str, str, int, int, bool]] = [
        ("float64", "F64", 8, 8, True),
        ("float32", "F32", 4, 4, True),
        ("float16", "F16", 2, 2, True),
        ("bfloat16", "BF16", 2, 2, True),
        ("float8_e4m3fn", "F8_E4M3", 1, 1, False),
        ("float8_e5m2", "F8_E5M2", 1, 1, False),
        ("float8_e8m0fnu", "F8_E8M0", 1, 1, False),
        ("float8_e4m3fnuz", "F8_E4M3FNUZ", 1, 1, False),
        ("float8_e5m2fnuz", "F8_E5M2FNUZ", 1, 1, False),
        ("float4_e2m1fn_x2", "F4", 1, 1, False),
        ("int64", "I64", 8, 8, False),
        ("int32", "I32", 4, 4, False),
        ("int16", "I16", 2, 2, False),
        ("int8", "I8", 1, 1, False),
        ("uint64", "U64", 8, 8, False),
        ("uint32", "U32", 4, 4, False),
        ("uint16", "U16", 2, 2, False),
        ("uint8", "U8", 1, 1, False),
        ("bool", "BOOL", 1, 1, False),
        # complex64 is pairs of float32: grouped as float32 so both exponents share a plane.
        ("complex64", "C64", 8, 4, True),
    ]
    return {
        name: DtypeInfo(name, st, size, Layout(group, rotate), 2 if st == "F4" else 1)
        for name, st, size, group, rotate in rows
    }


DTYPES: Mapping[str, DtypeInfo] = _table()
_BY_SAFETENSORS = {info.safetensors: info for info in DTYPES.values()}


def dtype_info(dtype: torch.dtype | str) -> DtypeInfo:
    """Look a dtype up by torch dtype or by name; raise :class:`UnsupportedDtype` if unknown."""
    # str(torch.float32) is "torch.float32": a torch dtype is looked up without importing torch.
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    info = DTYPES.get(name)
    if info is None:
        known = ", ".join(DTYPES)
        raise UnsupportedDtype(f"dtype {dtype} cannot be stored; supported: {known}")
    return info


def safetensors_dtype(code: str) -> DtypeInfo:
    """Look a dtype up by its safetensors code ("F32", "BF16"...)."""
    info = _BY_SAFETENSORS.get(code)
    if info is None:
        raise UnsupportedDtype(f"safetensors dtype {code} is not supported")
    return info
