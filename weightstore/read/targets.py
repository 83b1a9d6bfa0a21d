"""The one target check: may a snapshot be written into these tensors in place?

Shared by ``restore(into=...)`` (local and remote) and ``TaskLoader.activate``. Every target is
checked before anything is written, and every problem is reported at once: names, shapes and
dtypes, and tensors that cannot take bytes at all (a ``meta`` tensor holds no memory and a copy
into it silently does nothing; an expanded, stride-0 tensor has many elements in one memory
cell; an inference tensor refuses in-place writes outside inference mode; two targets that
share part of their memory would clobber each other). Exact aliases (tied weights) are one
slot, written once, and must receive the same bytes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from weightstore.dtypes import dtype_info
from weightstore.errors import IncompatibleTensor, UnsupportedDtype
from weightstore.types import Snapshot, TensorEntry

if TYPE_CHECKING:  # a target is a torch tensor, so torch is loaded when one is checked
    import torch

Pair = tuple[TensorEntry, "torch.Tensor"]
MemoryKey = tuple[int, int, tuple[int, ...], tuple[int, ...], "torch.dtype"]
_SHOWN = 10  # problems listed in one message


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


def check_slots(
    snap: Snapshot,
    target: Mapping[str, object],
    strict: bool,
    device: torch.device | None = None,
) -> list[Slot]:
    """:func:`check_targets`, with tied targets grouped into one slot each."""
    slots: dict[MemoryKey, Slot] = {}
    problems = []
    for entry, t in check_targets(snap, target, strict, device):
        key = memory_key(t)
        tied = slots.get(key)
        if tied is None:
            slots[key] = Slot((entry.name,), t, entry, key)
        elif tied.entry.digest != entry.digest:
            problems.append(
                f"{entry.name!r} is tied to {tied.names[0]!r} but the snapshot holds other "
                "bytes for it"
            )
        else:
            slots[key] = Slot((*tied.names, entry.name), t, entry, key)
    _raise(snap, problems)
    return list(slots.values())


def check_targets(
    snap: Snapshot,
    target: Mapping[str, object],
    strict: bool,
    device: torch.device | None,
) -> list[Pair]:
    """The (stored entry, target tensor) pairs to restore, or :class:`IncompatibleTensor`
    listing every problem. ``device``: the device the caller asked for, if any."""
    stored = {t.name: t for t in snap.weights}
    problems = []
    if strict:
        missing = [n for n in target if n not in stored]
        unexpected = [n for n in stored if n not in target]
        if missing or unexpected:
            problems.append(
                f"missing in snapshot {missing[:5]}, not in target {unexpected[:5]} "
                "(pass strict=False to copy only the names both have)"
            )
    pairs = []
    for name, t in target.items():
        if name not in stored:
            continue
        why = _unwritable(stored[name], t, device)
        if why:
            problems.append(f"{name!r} {why}")
        else:
            pairs.append((stored[name], cast("torch.Tensor", t)))  # _unwritable checked it
    problems += _shared_memory(pairs)
    _raise(snap, problems)
    return pairs


def _raise(snap: Snapshot, problems: list[str]) -> None:
    if problems:
        more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise IncompatibleTensor(
            f"snapshot {snap.short_id} cannot be restored into the target, nothing was "
            f"written: {'; '.join(problems[:_SHOWN])}{more}"
        )


def _span(t: torch.Tensor) -> tuple[int, int]:
    """The first and one past the last byte address ``t``'s elements occupy."""
    if t.numel() == 0:
        return t.data_ptr(), t.data_ptr()
    last = sum((n - 1) * st for n, st in zip(t.shape, t.stride(), strict=True))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


def _shared_memory(pairs: list[Pair]) -> list[str]:
    """Targets whose memory overlaps another's without being the same view of it (exact
    aliases are tied weights, one slot): writing both would clobber the earlier one. Spans
    are compared, so interleaved views of one buffer count as overlapping (a false alarm only
    for such exotic targets; pass clones)."""
    spans = sorted(
        (
            (t.device.type, t.device.index or 0, *_span(t), memory_key(t), entry.name)
            for entry, t in pairs
            if t.numel()
        ),
        key=lambda span: span[:4],
    )
    problems = []
    reach = None  # of the spans seen on this device, the one that ends last
    for span in spans:
        same_device = reach is not None and span[:2] == reach[:2]
        if reach is not None and same_device and span[2] < reach[3] and span[4] != reach[4]:
            problems.append(
                f"{span[5]!r} shares memory with {reach[5]!r} without being the same "
                "tensor: writing one would overwrite the other (pass clones)"
            )
        if reach is None or not same_device or span[3] > reach[3]:
            reach = span
    return problems


def _unwritable(entry: TensorEntry, t: object, device: torch.device | None) -> str | None:
    torch = sys.modules.get("torch")  # no torch loaded: no tensor
    if torch is None or not isinstance(t, torch.Tensor):
        return f"is a {type(t).__name__}, not a tensor"
    if t.is_meta:
        return "is on the meta device and holds no memory: materialise the model first"
    if device is not None and not _same_device(t.device, device):
        return f"is on device {t.device}, but the restore was asked for {device}"
    try:
        dtype = dtype_info(t.dtype).name
    except UnsupportedDtype:
        dtype = str(t.dtype)
    if tuple(t.shape) != entry.shape or dtype != entry.dtype:
        return f"is {dtype}{list(t.shape)}, the snapshot has {entry.dtype}{list(entry.shape)}"
    if t.layout != torch.strided:
        return f"is a {t.layout} tensor, which cannot be written in place"
    if t.is_inference():
        return "is an inference tensor, which cannot be written outside torch.inference_mode"
    if _overlaps(t):
        return "has elements that overlap in memory (expanded, stride 0): pass a clone"
    return None


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _overlaps(t: torch.Tensor) -> bool:
    """Whether two elements of ``t`` may share memory: its dimensions, sorted by stride, must
    each step past the whole extent of the smaller ones (false alarms only for exotic views)."""
    dims = sorted((st, n) for st, n in zip(t.stride(), t.shape, strict=True) if n > 1)
    extent = 1
    for stride, size in dims:
        if stride < extent:
            return True
        extent = stride * size
    return False
