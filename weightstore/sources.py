"""What a save reads: torch tensors, or :class:`RawTensor` s (a file's dtype, shape and bytes),
as one kind of thing to the writer.

A safetensors file is saved and a snapshot exported without torch: its tensors are bytes with a
dtype and a shape, and only a torch tensor handed in by a caller needs torch to be read.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from weightstore.codec.layout import U8
from weightstore.dtypes import dtype_info
from weightstore.errors import InvalidInput
from weightstore.inputs import check_tensor_name

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class RawTensor:
    """A tensor as stored: dtype name, torch shape, contiguous little-endian bytes.

    ``owned``: ``data`` is a fresh buffer nobody else holds (read from a file for this save), so
    the writer hashes and encodes it without copying it first."""

    dtype: str
    shape: tuple[int, ...]
    data: U8
    owned: bool = False


Source = Union["torch.Tensor", RawTensor]
"""One value of what a save reads."""

Savable = Union["torch.nn.Module", Mapping[str, Source]]
"""What ``save`` takes: a module, or a state dict of torch or raw tensors."""


def _is_torch_tensor(value: object) -> bool:
    # Without torch loaded there can be no torch tensor, and no need to import torch to say so.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def source_parts(name: str, value: object) -> tuple[str, tuple[int, ...], U8]:
    """Dtype name, shape and bytes (a view when possible) of one value of a state dict;
    :class:`InvalidInput` for anything that is not a storable tensor."""
    if isinstance(value, RawTensor):
        check_tensor_name(name)
        return dtype_info(value.dtype).name, value.shape, value.data
    if not _is_torch_tensor(value):
        check_tensor_name(name)
        raise InvalidInput(f"{name!r} is a {type(value).__name__}, not a torch.Tensor")
    from weightstore.tensors import check_tensor, tensor_bytes

    t = check_tensor(name, value)
    return dtype_info(t.dtype).name, tuple(t.shape), tensor_bytes(t)


def state_of(weights: object) -> Mapping[str, object]:
    """The tensors of an nn.Module (its state dict) or of a mapping, as they are."""
    if isinstance(weights, Mapping):
        return weights
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(weights, torch.nn.Module):
        return weights.state_dict(keep_vars=False)  # type: ignore[no-any-return]
    raise InvalidInput(
        f"expected an nn.Module or a mapping of name to tensor, got {type(weights).__name__}"
    )
