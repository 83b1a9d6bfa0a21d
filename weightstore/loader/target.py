"""The swap target: a module's or state dict's own tensors, matched against a snapshot.

Everything is checked before anything is written: names (with ``strict``), dtypes and shapes,
each mismatch listed in one error. Tensors that share memory (tied weights) form one slot and
are written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from weightstore.errors import IncompatibleTensor, InvalidInput
from weightstore.tensors import dtype_info
from weightstore.types import Snapshot, TensorEntry

Weights = torch.nn.Module | Mapping[str, torch.Tensor]
_SHOWN = 8  # mismatches named in one message
MemoryKey = tuple[int, int, tuple[int, ...], tuple[int, ...], torch.dtype]


@dataclass(frozen=True)
class Slot:
    """One piece of target memory and the snapshot tensor it receives; ``names`` are every
    target name that views it (more than one for tied weights)."""

    names: tuple[str, ...]
    tensor: torch.Tensor
    entry: TensorEntry
    key: MemoryKey  # memory_key(tensor)


def memory_key(t: torch.Tensor) -> MemoryKey:
    """What identifies a tensor's memory: two names with the same key are tied."""
    return (t.data_ptr(), t.device.index or 0, tuple(t.shape), tuple(t.stride()), t.dtype)


def target_tensors(weights: Weights) -> dict[str, torch.Tensor]:
    """The target's tensors by name, sharing its memory."""
    if isinstance(weights, torch.nn.Module):
        return dict(weights.state_dict(keep_vars=False))
    if isinstance(weights, Mapping):
        for name, t in weights.items():
            if not isinstance(t, torch.Tensor):
                raise InvalidInput(f"target {name!r} is a {type(t).__name__}, not a tensor")
        return dict(weights)
    raise InvalidInput(
        f"the target must be an nn.Module or a mapping of name to tensor, not "
        f"{type(weights).__name__}"
    )


def match(snap: Snapshot, target: Mapping[str, torch.Tensor], strict: bool) -> list[Slot]:
    """The slots to fill from ``snap``, or :class:`IncompatibleTensor` listing every problem."""
    stored = {t.name: t for t in snap.tensors}
    problems: list[str] = []
    if strict:
        missing = [n for n in target if n not in stored]
        unexpected = [n for n in stored if n not in target]
        if missing:
            problems.append(f"not in the snapshot: {missing[:_SHOWN]}")
        if unexpected:
            problems.append(f"not in the target: {unexpected[:_SHOWN]}")
    slots: dict[MemoryKey, Slot] = {}
    for name, t in target.items():
        entry = stored.get(name)
        if entry is None:
            continue
        have = f"{dtype_info(t.dtype).name}{list(t.shape)}" if _known(t.dtype) else str(t.dtype)
        if tuple(t.shape) != entry.shape or have.split("[")[0] != entry.dtype:
            problems.append(
                f"{name!r}: snapshot has {entry.dtype}{list(entry.shape)}, target {have}"
            )
            continue
        key = memory_key(t)
        tied = slots.get(key)
        if tied is None:
            slots[key] = Slot((name,), t, entry, key)
        elif tied.entry.digest != entry.digest:
            problems.append(f"{name!r} is tied to {tied.names[0]!r} but the snapshot differs")
        else:
            slots[key] = Slot((*tied.names, name), t, entry, key)
    if problems:
        more = f" and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise IncompatibleTensor(
            f"snapshot {snap.short_id} does not fit the target; nothing was written: "
            + "; ".join(problems[:_SHOWN])
            + more
            + (" (strict=False copies only the names both have)" if strict else "")
        )
    return list(slots.values())


def _known(dtype: torch.dtype) -> bool:
    try:
        dtype_info(dtype)
    except InvalidInput:
        return False
    return True
