"""Frozen value types shared by the facade and the front ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, get_args

# How an object's payload is stored: its raw bytes; byte planes in zstd frames; XOR against a
# base, then as plain; the arithmetic difference of float bit patterns, then as plain.
Encoding = Literal["raw", "plain", "delta", "sub"]
ENCODINGS: tuple[Encoding, ...] = get_args(Encoding)

RESERVED_PREFIX = "::"
"""Entry names weightstore keeps for itself (folder files, training state): never weights."""
FILE_PREFIX = RESERVED_PREFIX + "file/"
"""Names of the entries that hold the files of a model folder (see ``weightstore.folders``)."""
TRAIN_PREFIX = RESERVED_PREFIX + "train/"
"""Names of the entries that hold training state (see ``weightstore.training``)."""
OPTIMIZER_PREFIX = TRAIN_PREFIX + "optimizer/"
RNG_PREFIX = TRAIN_PREFIX + "rng/"
CHECKPOINT_PREFIX = TRAIN_PREFIX + "checkpoint/"
TRAINING_KEY = "weightstore.training"
"""The metadata key of a snapshot's training state (optimizer structure, scheduler, RNG)."""


@dataclass(frozen=True)
class TensorEntry:
    """One named tensor of a snapshot: what it is and which object holds its bytes."""

    name: str
    dtype: str  # torch dtype name without the prefix: "float32", "bfloat16", "float8_e4m3fn"
    shape: tuple[int, ...]
    digest: str  # hex digest of the tensor's raw little-endian bytes = the object's name
    nbytes: int


@dataclass(frozen=True)
class SnapshotHeader:
    """What every form of a snapshot carries: its row in the index and its tags."""

    id: str
    task: str
    step: int | None
    parent: str | None
    created_at: datetime
    message: str
    metadata: dict[str, Any]
    tags: tuple[str, ...]
    logical_bytes: int
    # The parent it was saved against, part of its id: ``parent`` until that snapshot is
    # deleted, then still its id (``parent`` becomes None).
    origin_parent: str | None

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class Snapshot(SnapshotHeader):
    """An immutable, committed set of named tensors saved for a task."""

    tensors: tuple[TensorEntry, ...] = field(repr=False)
    # Stored bytes of the objects no snapshot committed before it references: what saving it
    # cost the store (see docs/design.md, "Listings read only what they show").
    added_bytes: int = 0

    @cached_property
    def weights(self) -> tuple[TensorEntry, ...]:
        """The weight tensors: ``tensors`` without weightstore's own entries (a folder's files,
        training state): what restore, export and the loader read."""
        if not any(t.name.startswith(RESERVED_PREFIX) for t in self.tensors):
            return self.tensors
        return tuple(t for t in self.tensors if not t.name.startswith(RESERVED_PREFIX))


@dataclass(frozen=True)
class SnapshotSummary(SnapshotHeader):
    """A snapshot as listings show it: its tensors counted, not listed, so that listing many
    snapshots reads no tensor rows."""

    tensor_count: int
    added_bytes: int


@dataclass(frozen=True)
class TaskSummary:
    """One task: how many snapshots it has and its newest (None when it has none)."""

    task: str
    snapshots: int
    latest: SnapshotSummary | None


@dataclass(frozen=True)
class DeletionEffect:
    """What deleting a snapshot would let gc free: objects only it needs, and those it alone
    references that other snapshots' deltas still need as bases (they stay)."""

    frees_objects: int
    frees_bytes: int
    kept_as_bases: int
    kept_as_bases_bytes: int


@dataclass(frozen=True)
class ObjectRecord:
    """Index row of one stored object."""

    digest: str
    raw_size: int
    stored_size: int
    encoding: Encoding
    base: str | None
    chain_depth: int
    checksum: str | None = None  # BLAKE3 of the stored bytes (None: not recorded yet)
    device_checksum: int | None = None  # codec.devhash of the raw bytes (None: not recorded)


@dataclass(frozen=True)
class TensorChange:
    """A tensor present in both sides of a diff whose bytes, dtype or shape differ."""

    name: str
    old: TensorEntry
    new: TensorEntry


@dataclass(frozen=True)
class Diff:
    """What changed between two snapshots, by tensor name."""

    a: Snapshot
    b: Snapshot
    added: tuple[TensorEntry, ...]
    removed: tuple[TensorEntry, ...]
    changed: tuple[TensorChange, ...]
    unchanged: tuple[str, ...]


@dataclass(frozen=True)
class GcResult:
    """What a gc run removed (or, with ``dry_run``, would remove)."""

    dry_run: bool
    objects_removed: int
    bytes_freed: int
    objects_spared: int  # unreferenced but younger than the grace period
    objects_kept: int


@dataclass(frozen=True)
class VerifyProblem:
    """One object that failed verification and the snapshots it breaks (or one snapshot
    whose manifest does not hash to its id: then ``digest`` is that id)."""

    digest: str
    problem: str
    snapshots: tuple[str, ...]


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``verify``: ``ok`` when every checked object re-derives its digest."""

    objects_checked: int
    bytes_checked: int  # decoded: the tensor bytes the checked objects hold
    problems: tuple[VerifyProblem, ...]
    stored_bytes_checked: int = 0  # read: what the checked objects take in the store
    device_checksums_recorded: int = 0  # missing (before 0007) or wrong ones, now right

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class UsageRow:
    """Storage figures for one task (or the total, ``task=None``) or one snapshot."""

    task: str | None
    snapshots: int
    logical_bytes: int  # what full safetensors copies of every snapshot would take (tensor bytes)
    stored_bytes: int  # object bytes attributed here (each object to the first snapshot using it)
    saved_by_dedup: int
    saved_by_delta: int
    saved_by_compression: int

    @property
    def ratio(self) -> float:
        return self.stored_bytes / self.logical_bytes if self.logical_bytes else 0.0


@dataclass(frozen=True)
class SnapshotUsage:
    """Per-snapshot storage figures, in commit order (for plots over time)."""

    id: str
    task: str
    step: int | None
    created_at: datetime
    logical_bytes: int
    stored_bytes: int


@dataclass(frozen=True)
class StoreStats:
    """The storage report: per task, in total, and per snapshot over time."""

    tasks: tuple[UsageRow, ...]
    total: UsageRow
    snapshots: tuple[SnapshotUsage, ...]
    objects: int
    objects_by_encoding: dict[str, int]
    # Objects no snapshot holds as a tensor, kept because later snapshots' deltas need them
    # as bases (their own snapshots were deleted): charged to no task, counted in the total.
    kept_base_objects: int = 0
    kept_base_bytes: int = 0


def diff_snapshots(a: Snapshot, b: Snapshot) -> Diff:
    """What changed from ``a`` to ``b``, tensor by tensor (by name, dtype, shape and digest)."""
    old = {t.name: t for t in a.tensors}
    new = {t.name: t for t in b.tensors}
    changed, unchanged = [], []
    for name, t in new.items():
        if name in old:
            o = old[name]
            if (o.digest, o.dtype, o.shape) == (t.digest, t.dtype, t.shape):
                unchanged.append(name)
            else:
                changed.append(TensorChange(name, o, t))
    return Diff(
        a,
        b,
        added=tuple(t for n, t in new.items() if n not in old),
        removed=tuple(t for n, t in old.items() if n not in new),
        changed=tuple(changed),
        unchanged=tuple(unchanged),
    )


TOKEN_SCOPES = ("read", "write", "admin")


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: never its secret."""

    id: str
    name: str
    scope: str
    created_at: datetime


def scope_allows(granted: str, needed: str) -> bool:
    """Whether a token of scope ``granted`` may do what needs ``needed``."""
    return TOKEN_SCOPES.index(granted) >= TOKEN_SCOPES.index(needed)
