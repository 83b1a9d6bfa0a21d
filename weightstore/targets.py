"""Restoring into existing tensors (``restore(into=...)``) without ever leaving them half done.

Every target is checked before anything is written, and every problem is reported at once:
names, shapes and dtypes, and tensors that cannot take bytes at all (a ``meta`` tensor holds no
memory and a copy into it silently does nothing; an expanded, stride-0 tensor has many elements
in one memory cell; an inference tensor refuses in-place writes outside inference mode).

Objects are then decoded (and verified) into staging memory first when the tensors fit the
staging budget, so a corrupt object met part-way leaves the targets untouched; beyond the
budget each tensor is decoded straight into its target, and such a failure says the target was
partly overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from weightstore.errors import CorruptObject, IncompatibleTensor, ObjectNotFound, UnsupportedDtype
from weightstore.reader import ObjectReader
from weightstore.tensors import dtype_info
from weightstore.types import ObjectRecord, Snapshot, TensorEntry

Pair = tuple[TensorEntry, torch.Tensor]
RunAll = Callable[[Callable[[Any], None], Iterable[Any]], None]
_SHOWN = 10  # problems listed in one message


def check_targets(
    snap: Snapshot,
    target: Mapping[str, object],
    strict: bool,
    device: torch.device | None,
) -> list[Pair]:
    """The (stored entry, target tensor) pairs to restore, or :class:`IncompatibleTensor`
    listing every problem. ``device``: the device the caller asked for, if any."""
    stored = {t.name: t for t in snap.tensors}
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
            assert isinstance(t, torch.Tensor)
            pairs.append((stored[name], t))
    if problems:
        more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise IncompatibleTensor(
            f"snapshot {snap.short_id} cannot be restored into the target, nothing was "
            f"written: {'; '.join(problems[:_SHOWN])}{more}"
        )
    return pairs


def _unwritable(entry: TensorEntry, t: object, device: torch.device | None) -> str | None:
    if not isinstance(t, torch.Tensor):
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


def restore_pairs(
    reader: ObjectReader,
    pairs: Sequence[Pair],
    chains: Mapping[str, list[ObjectRecord]],
    verify: bool,
    run_all: RunAll,
    staging_bytes: int,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Decode each pair's object into its target: through staging memory when all of them fit
    ``staging_bytes``, so nothing is written unless everything decoded; else straight in."""
    total = sum(entry.nbytes for entry, _ in pairs)
    if total <= staging_bytes:
        staged: dict[int, torch.Tensor] = {}

        def stage(i: int) -> None:
            entry, t = pairs[i]
            staged[i] = reader.tensor(entry, chains[entry.digest], t.device, verify)
            if progress:
                progress(entry.nbytes)

        run_all(stage, range(len(pairs)))
        with torch.no_grad():
            for i, (_, t) in enumerate(pairs):
                t.copy_(staged.pop(i))
        return

    def load(pair: Pair) -> None:
        entry, t = pair
        with torch.no_grad():
            reader.tensor(entry, chains[entry.digest], t.device, verify, into=t)
        if progress:
            progress(entry.nbytes)

    try:
        run_all(load, pairs)
    except (CorruptObject, ObjectNotFound) as e:
        raise type(e)(
            f"{e}; the target was partly overwritten (it was larger than the staging budget, "
            "StoreSettings.restore_staging_bytes): restore it from a good snapshot"
        ) from e
