"""Pydantic models of the API's bodies: the JSON forms of :mod:`weightstore.forms`, typed for
validation and for the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, Field

from weightstore.types import Encoding


class TensorOut(BaseModel):
    name: str
    dtype: str
    shape: list[int]
    nbytes: int
    digest: str


class SnapshotOut(BaseModel):
    id: str
    short_id: str
    task: str
    step: int | None
    parent: str | None
    origin_parent: str | None = None  # the parent at save, kept after it is deleted (in the id)
    created_at: str
    message: str
    metadata: dict[str, Any]
    tags: list[str]
    tensor_count: int
    logical_bytes: int
    added_bytes: int = 0  # stored bytes of the objects no earlier snapshot references


class ManifestOut(SnapshotOut):
    tensors: list[TensorOut]


class ManifestIn(BaseModel):
    """A snapshot to commit whose objects are stored already (``POST /snapshots``)."""

    id: str = Field(pattern=r"^[0-9a-f]{64}$")
    task: str
    step: int | None = None
    parent: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    origin_parent: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    created_at: AwareDatetime
    message: str = ""
    metadata: dict[str, Any] = {}
    tags: list[str] = []
    logical_bytes: int = 0
    tensors: list[TensorOut] = Field(min_length=1)


class TaskOut(BaseModel):
    task: str
    snapshots: int
    latest: SnapshotOut | None


class SnapshotPage(BaseModel):
    items: list[SnapshotOut]
    total: int
    offset: int
    limit: int
    next_offset: int | None
    next_cursor: str | None


class ChangeOut(BaseModel):
    name: str
    old: TensorOut
    new: TensorOut
    dtype_changed: bool
    shape_changed: bool


class DiffOut(BaseModel):
    a: ManifestOut
    b: ManifestOut
    added: list[TensorOut]
    removed: list[TensorOut]
    changed: list[ChangeOut]
    unchanged: list[str]
    unchanged_count: int
    unchanged_bytes: int


class UsageOut(BaseModel):
    task: str | None
    snapshots: int
    logical_bytes: int
    stored_bytes: int
    ratio: float
    saved_by_dedup: int
    saved_by_delta: int
    saved_by_compression: int


class SnapshotUsageOut(BaseModel):
    id: str
    task: str
    step: int | None
    created_at: str
    logical_bytes: int
    stored_bytes: int


class StatsOut(BaseModel):
    tasks: list[UsageOut]
    total: UsageOut
    snapshots: list[SnapshotUsageOut]
    objects: int
    objects_by_encoding: dict[str, int]


class DigestList(BaseModel):
    digests: list[str] = Field(max_length=100_000)


class MissingOut(BaseModel):
    missing: list[str]


class ObjectOut(BaseModel):
    digest: str
    raw_size: int
    stored_size: int
    encoding: Encoding
    base: str | None


class Health(BaseModel):
    status: str
