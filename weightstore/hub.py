"""A store as the Hugging Face Hub sees a model repo: revisions, the files of a snapshot and
their tree entries, as ``huggingface_hub`` parses them (``hf_api.py``: ``ModelInfo``,
``RepoFile``, ``RepoFolder``; ``file_download.py``: the HEAD of ``resolve``).

Repo id = task name. Revision = ``main`` or none (the task's latest), a step in decimal digits,
a 40-hex commit (the first 40 hex digits of a snapshot id: what ``sha`` says) or a full id, or
a tag. The files of a snapshot saved from a folder are that folder's; a snapshot of bare
tensors shows one ``model.safetensors`` (the ``/safetensors`` download).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from weightstore.errors import InvalidRef, NotFound, RefNotFound
from weightstore.folders import folder_files
from weightstore.ports import SnapshotSource
from weightstore.read.layout import file_layout
from weightstore.refs import check_name
from weightstore.types import Snapshot

COMMIT_LENGTH = 40
SINGLE_FILE = "model.safetensors"
_HEX_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# Files the Hub would keep in LFS: weights, and anything large.
_LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".onnx",
    ".gguf",
    ".msgpack",
)
_LFS_MIN_BYTES = 10 << 20
_POINTER_SIZE = 134  # bytes of a git-lfs pointer file: the Hub reports it, clients require it

HubErrorCode = Literal["RepoNotFound", "RevisionNotFound", "EntryNotFound"]


class HubNotFound(NotFound):
    """A repo, revision or file the Hub routes do not have: the client maps ``code``."""

    def __init__(self, code: HubErrorCode, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.commit = commit


@dataclass(frozen=True)
class HubFile:
    """A file of a snapshot as the Hub routes serve it."""

    path: str
    size: int
    sha256: str
    lfs: bool

    @property
    def oid(self) -> str:
        # Not a git blob id (no git here): a stable 40-hex name of the content.
        return self.sha256[:COMMIT_LENGTH]

    def entry_json(self, last_commit: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "file",
            "oid": self.oid,
            "size": self.size,
            "path": self.path,
        }
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": _POINTER_SIZE}
        if last_commit is not None:
            out["lastCommit"] = last_commit
        return out

    def sibling_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rfilename": self.path, "size": self.size, "blobId": self.oid}
        if self.lfs:
            out["lfs"] = {"sha256": self.sha256, "size": self.size, "pointerSize": _POINTER_SIZE}
        return out


def commit_of(snap: Snapshot) -> str:
    return snap.id[:COMMIT_LENGTH]


def resolve_revision(
    store: SnapshotSource,
    repo: str,
    revision: str | None,
    load: Callable[[str], Snapshot] | None = None,
) -> Snapshot:
    """The snapshot ``revision`` names in task ``repo`` (see the module docstring), or
    :class:`HubNotFound` saying whether the repo or the revision is unknown. ``load`` gives
    the snapshot of a full id (a cache: snapshots never change; default: the store)."""
    load = load or store.snapshot
    try:
        task = check_name(repo)
    except InvalidRef as e:
        raise HubNotFound("RepoNotFound", f"no task {repo[:200]!r} in this store") from e
    rev = "main" if revision in (None, "") else str(revision)
    try:
        if _HEX_RE.fullmatch(rev):
            snap = load(store.resolve(rev))
            if snap.task != task:
                raise RefNotFound(f"{rev} is a commit of another task")
            return snap
        if rev == "main":
            return load(store.resolve(task))
        if rev.isascii() and rev.isdigit():
            return load(store.resolve(f"{task}@{int(rev)}"))
        return load(store.resolve(f"{task}:{rev}"))
    except (RefNotFound, InvalidRef) as e:
        if not _exists(store, task):
            raise HubNotFound("RepoNotFound", f"no task {task!r} in this store") from e
        raise HubNotFound("RevisionNotFound", f"task {task!r} has no revision {rev[:200]!r}") from e


def _exists(store: SnapshotSource, task: str) -> bool:
    try:
        return store.count_snapshots(task) > 0
    except NotFound:
        return False


def hub_files(snap: Snapshot, single_sha256: Callable[[Snapshot], str]) -> list[HubFile]:
    """The files of ``snap``; ``single_sha256`` gives the SHA-256 of the one file of a
    snapshot of bare tensors (computed once and remembered by the caller)."""
    files = folder_files(snap.metadata)
    if files:
        return [HubFile(f.path, f.size, f.sha256, f.rebuilt or _lfs(f.path, f.size)) for f in files]
    return [HubFile(SINGLE_FILE, file_layout(snap).size, single_sha256(snap), True)]


def _lfs(path: str, size: int) -> bool:
    return path.endswith(_LFS_SUFFIXES) or size >= _LFS_MIN_BYTES


def folders_of(paths: Iterable[str]) -> list[str]:
    """Every folder that holds one of ``paths``, sorted."""
    out: set[str] = set()
    for p in paths:
        parts = p.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(out)


def tree(
    files: list[HubFile], under: str, recursive: bool, last_commit: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The tree entries below folder ``under`` ('' for the top): its direct children, or every
    file and folder below it, folders first as the Hub lists them. :class:`HubNotFound`
    (EntryNotFound) if ``under`` is no folder."""
    prefix = f"{under}/" if under else ""
    folders = [d for d in folders_of(f.path for f in files) if d.startswith(prefix)]
    if under and under not in folders_of(f.path for f in files):
        raise HubNotFound("EntryNotFound", f"no folder {under!r}")

    def shown(path: str) -> bool:
        return recursive or "/" not in path[len(prefix) :]

    out: list[dict[str, Any]] = [
        {"type": "directory", "oid": "0" * COMMIT_LENGTH, "size": 0, "path": d}
        for d in folders
        if shown(d)
    ]
    out += [f.entry_json(last_commit) for f in files if f.path.startswith(prefix) and shown(f.path)]
    return out


def paths_info(
    files: list[HubFile], paths: Iterable[str], last_commit: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Entries for those of ``paths`` that exist (files or folders), as ``paths-info`` answers."""
    by_path = {f.path: f for f in files}
    folders = set(folders_of(by_path))
    out: list[dict[str, Any]] = []
    for p in dict.fromkeys(paths):
        p = p.strip("/")
        if p in by_path:
            out.append(by_path[p].entry_json(last_commit))
        elif p in folders:
            out.append({"type": "directory", "oid": "0" * COMMIT_LENGTH, "size": 0, "path": p})
    return out
