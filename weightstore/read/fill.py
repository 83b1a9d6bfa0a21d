"""Decoding a snapshot's tensors into new tensors or into existing targets, by one rule.

Every blob must be present before the first target is written. When the targets fit the
staging budget, every tensor is decoded (and verified) into staging memory first, so a corrupt
object met part-way leaves the targets untouched; beyond the budget each tensor is decoded
straight into its target, and such a failure says the target was partly overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from weightstore.errors import CorruptObject, ObjectNotFound
from weightstore.ports import Progress, RunAll
from weightstore.read.reader import ObjectReader
from weightstore.read.targets import Pair
from weightstore.types import ObjectRecord, Snapshot, TensorEntry

if TYPE_CHECKING:
    import torch

Chains = Mapping[str, list[ObjectRecord]]


def fill_new(
    reader: ObjectReader,
    snap: Snapshot,
    chains: Chains,
    dev: torch.device,
    verify: bool,
    run_all: RunAll,
    progress: Progress | None = None,
) -> dict[str, torch.Tensor]:
    """The snapshot's tensors decoded onto ``dev``, in the snapshot's order."""
    out: dict[str, torch.Tensor] = {}

    def load(entry: TensorEntry) -> None:
        out[entry.name] = reader.tensor(entry, chains[entry.digest], dev, verify)
        if progress:
            progress(entry.nbytes)

    run_all(load, sorted(snap.weights, key=lambda e: -e.nbytes))
    return {t.name: out[t.name] for t in snap.weights}


def fill_targets(
    reader: ObjectReader,
    snap: Snapshot,
    pairs: Sequence[Pair],
    chains: Chains,
    verify: bool,
    run_all: RunAll,
    staging_bytes: int,
    progress: Progress | None = None,
) -> None:
    """Decode each pair's object into its target (checked by :func:`check_targets`)."""
    import torch  # the targets are torch tensors: it is loaded

    needed = {r.digest for entry, _ in pairs for r in chains[entry.digest]}
    absent = sorted(needed - reader.source.present(needed))
    if absent:
        raise ObjectNotFound(
            f"object {absent[0]} of snapshot {snap.short_id} is missing from "
            f"{reader.source.describe()}: run `weightstore verify`; nothing was restored"
        )
    if sum(entry.nbytes for entry, _ in pairs) <= staging_bytes:
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
