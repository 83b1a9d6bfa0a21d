"""push / pull between two stores, local or remote, in either direction.

Like git: the snapshots one side has and the other lacks are sent with the objects they need,
and only those the receiver lacks (asked for in one batch), each delta's base before the delta;
the manifests are committed last, oldest first (a parent before its children), keeping their
ids. Each object is kept by the receiver as soon as it arrives, verified, so an interrupted
transfer resumes where it stopped: the next run finds those objects present.

A damaged object (at the source, or altered on the way: the receiver decodes each one) fails
only the snapshots that need it and those saved on top of them: every intact snapshot is still
sent, and the report names each damaged one, its tensors and digests.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from weightstore.errors import CorruptFile, CorruptObject, NotFound, ObjectsMissing
from weightstore.ports import ObjectExchange, Progress
from weightstore.read import blob_base
from weightstore.remote import RemoteStore
from weightstore.store import WeightStore
from weightstore.types import Snapshot

Side = ObjectExchange


@dataclass(frozen=True)
class DamagedSnapshot:
    """A snapshot a transfer could not send: the tensors whose objects are damaged (or a
    parent that could not be sent), and why."""

    snapshot: Snapshot
    tensors: tuple[tuple[str, str], ...]  # (tensor name, object digest)
    reason: str


@dataclass(frozen=True)
class TransferReport:
    """What one push or pull sent: snapshots committed, objects and their encoded bytes, and
    the snapshots left behind because an object they need is damaged."""

    snapshots: int
    objects: int
    object_bytes: int
    damaged: tuple[DamagedSnapshot, ...] = ()


def _to_send(src: Side, dst: Side, tasks: Sequence[str]) -> list[Snapshot]:
    """The snapshots of ``tasks`` (and their ancestors) that ``dst`` lacks, oldest first,
    with their tensor lists."""
    there = {s.id for s in dst.log()}
    chosen: dict[str, Snapshot] = {}
    # src.log(t) raises for an unknown task: an error, not an empty transfer.
    todo = [s.id for t in tasks for s in src.log(t) if s.id not in there]
    while todo:
        sid = todo.pop()
        if sid in chosen or sid in there:
            continue
        snap = chosen[sid] = src.show(sid)
        if snap.parent is not None:
            todo.append(snap.parent)
    return sorted(chosen.values(), key=lambda s: (s.created_at, s.id))


class _Sender:
    """Sends objects on several threads, each delta's base before it. A thread claims an
    object before fetching it; one that needs a base another thread claimed waits for it.
    Waits follow base links, which never loop, and a claimed object is always being worked
    on, so no thread waits forever."""

    def __init__(
        self, a: Side, b: Side, missing: set[str], present: set[str], progress: Progress | None
    ) -> None:
        self.a, self.b = a, b
        self.missing, self.present = missing, present
        self.progress = progress
        self.sent: dict[str, int] = {}
        self.failed: dict[str, str] = {}  # digest -> why it could not be sent
        self._claims: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def send(self, digest: str) -> None:
        with self._lock:
            claim = self._claims.get(digest)
            mine = claim is None
            if claim is None:
                claim = self._claims[digest] = threading.Event()
        if not mine:
            claim.wait()
            if digest in self.failed:
                raise CorruptObject(f"object {digest[:12]}: {self.failed[digest]}")
            return
        try:
            blob = self.a.get_object(digest)
            base = blob_base(blob, digest)
            # The base goes first (the receiver verifies by decoding); ask about it only when
            # the batch question did not cover it.
            if base is not None and base not in self.present:
                if base in self.missing or self.b.missing([base]):
                    self.send(base)
                else:
                    with self._lock:
                        self.present.add(base)
            self.b.put_object(digest, blob)
            with self._lock:
                self.sent[digest] = len(blob)
            if self.progress:
                self.progress(len(blob))
        except (CorruptObject, CorruptFile) as e:
            with self._lock:
                self.failed[digest] = str(e)
            raise
        finally:
            claim.set()

    def resend(self, digests: Sequence[str]) -> None:
        """Send ``digests`` again: the receiver lost them since they were sent. What it was
        known to hold is forgotten too, so each delta's base is asked about again."""
        with self._lock:
            for d in digests:
                self._claims.pop(d, None)
                self.missing.add(d)
            self.present.clear()
        for d in digests:
            self.send(d)

    def send_or_note(self, digest: str) -> None:
        """:meth:`send`, a damaged object noted in ``failed`` instead of raised."""
        with contextlib.suppress(CorruptObject, CorruptFile):
            self.send(digest)


def _parent_digests(src: Side, snaps: Sequence[Snapshot]) -> list[str]:
    """The tensors of the parents the receiver has already: new objects are mostly deltas
    against them, so asking about them in the one batch question spares a question per base."""
    sending = {s.id for s in snaps}
    out: list[str] = []
    for parent in {s.parent for s in snaps if s.parent and s.parent not in sending}:
        try:
            out.extend(t.digest for t in src.show(parent).tensors)
        except NotFound:
            continue  # deleted at the source: its objects are asked about one by one
    return out


_COMMIT_TRIES = 3


def _commit(dst: Side, snap: Snapshot, sender: _Sender) -> None:
    """Commit ``snap`` at ``dst``; if objects it names are gone there (a gc collected them
    since they were sent, its grace shorter than this transfer), send them again and retry."""
    for attempt in range(_COMMIT_TRIES):
        try:
            dst.commit_manifest(snap)
            return
        except ObjectsMissing:
            if attempt == _COMMIT_TRIES - 1:
                raise
            sender.resend(dst.missing(list(dict.fromkeys(t.digest for t in snap.tensors))))


def transfer(
    src: WeightStore | RemoteStore,
    dst: WeightStore | RemoteStore,
    tasks: Sequence[str] = (),
    *,
    progress: Progress | None = None,
    concurrency: int = 4,
) -> TransferReport:
    """Send the snapshots of ``tasks`` (default: every task) that ``dst`` lacks, objects
    ``concurrency`` at a time."""
    a, b = src, dst
    snaps = _to_send(a, b, list(tasks) or a.tasks())
    needed = list(dict.fromkeys(t.digest for s in snaps for t in s.tensors))
    asked = list(dict.fromkeys(needed + _parent_digests(a, snaps)))
    missing = set(b.missing(asked))
    sender = _Sender(a, b, missing, set(asked) - missing, progress)
    with ThreadPoolExecutor(max(1, concurrency), "weightstore-transfer") as pool:
        list(pool.map(sender.send_or_note, [d for d in needed if d in missing]))
    damaged: list[DamagedSnapshot] = []
    left: set[str] = set()
    for snap in snaps:
        broken = tuple((t.name, t.digest) for t in snap.tensors if t.digest in sender.failed)
        if broken:
            reason = sender.failed[broken[0][1]]
        elif snap.parent in left:
            reason = f"its parent {str(snap.parent)[:12]} could not be sent"
        else:
            _commit(b, snap, sender)
            continue
        left.add(snap.id)
        damaged.append(DamagedSnapshot(snap, broken, reason))
    sent = len(snaps) - len(damaged)
    return TransferReport(sent, len(sender.sent), sum(sender.sent.values()), tuple(damaged))


def push(
    local: WeightStore | RemoteStore,
    remote: WeightStore | RemoteStore,
    tasks: Sequence[str] = (),
    *,
    progress: Progress | None = None,
) -> TransferReport:
    """Send ``local``'s snapshots of ``tasks`` to ``remote``."""
    return transfer(local, remote, tasks, progress=progress)


def pull(
    local: WeightStore | RemoteStore,
    remote: WeightStore | RemoteStore,
    tasks: Sequence[str] = (),
    *,
    progress: Progress | None = None,
) -> TransferReport:
    """Fetch ``remote``'s snapshots of ``tasks`` into ``local``."""
    return transfer(remote, local, tasks, progress=progress)


__all__ = ["DamagedSnapshot", "TransferReport", "pull", "push", "transfer"]
