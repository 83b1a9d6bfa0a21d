"""Keeping a store healthy: garbage collection and verification.

gc removes objects no snapshot reaches (directly or as a delta base) and that were not used
within a grace period, each inside an index transaction (see docs/design.md, "Write order and
gc"), under a lock row that excludes other gc runs. verify re-derives digests and names the
snapshots that a missing or corrupt object breaks, and each snapshot's id from its manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from weightstore.codec.devhash import devhash
from weightstore.errors import CorruptObject, ObjectNotFound, StorageError
from weightstore.index import Index
from weightstore.manifests import derived_ids
from weightstore.objects import ObjectBackend
from weightstore.ports import Progress, RunAll
from weightstore.read import ObjectReader
from weightstore.types import GcResult, Snapshot, VerifyProblem, VerifyResult

GC_LOCK = "gc"
_STALE_GC_LOCK = timedelta(hours=6)
_TEMP_GRACE_SECONDS = 3600.0  # spares any put still running


def collect_garbage(
    index: Index,
    objects: ObjectBackend,
    holder: str,
    grace_seconds: float,
    dry_run: bool,
    progress: Progress | None = None,
) -> GcResult:
    """Remove unreachable objects unused for ``grace_seconds`` (or count them, ``dry_run``)."""
    with index.lock(GC_LOCK, holder, stale_after=_STALE_GC_LOCK):
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=grace_seconds)
        reachable = index.reachable_digests()
        rows = index.all_objects()
        known = {rec.digest for rec, _ in rows}
        removed = freed = spared = rows_removed = 0
        # Children before bases: a base's row can only go once no object names it as base.
        doomed = [(rec, used) for rec, used in rows if rec.digest not in reachable]
        doomed.sort(key=lambda ru: -ru[0].chain_depth)
        for rec, used in doomed:
            if used >= cutoff:
                spared += 1
                continue
            if dry_run or index.delete_object_if_unused(
                rec.digest, cutoff, _deleter(objects, rec.digest)
            ):
                removed += 1
                rows_removed += 1
                freed += rec.stored_size
            if progress:
                progress(1)
        cutoff_ts = cutoff.timestamp()
        for info in objects.iterate():
            # A blob a snapshot reaches stays even when its row is gone (a damaged index):
            # verify reports it, gc must not make it worse.
            if info.key in known or info.key in reachable:
                continue
            if info.modified >= cutoff_ts:
                spared += 1
            elif dry_run or index.delete_orphan_blob(info.key, _deleter(objects, info.key)):
                removed += 1
                freed += info.size
        if not dry_run:
            objects.cleanup_temp(max(grace_seconds, _TEMP_GRACE_SECONDS))
        return GcResult(dry_run, removed, freed, spared, len(rows) - rows_removed)


def _deleter(objects: ObjectBackend, key: str) -> Callable[[], None]:
    def delete() -> None:
        objects.delete(key)

    return delete


def verify_objects(
    index: Index,
    objects: ObjectBackend,
    reader: ObjectReader,
    digests: set[str],
    run_all: RunAll,
    progress: Progress | None = None,
    *,
    remember: bool = True,
    total: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Decode every object of ``digests`` with its chain and re-derive its digest. With
    ``remember``, damage found is flagged in the index (so a save of the same content
    rewrites those objects) and flags on objects found whole are cleared, and the device
    checksum of each object found whole is recorded where its row lacks it (objects from
    before revision 0007) or holds another (a row altered at rest would otherwise fail every
    device apply over it). ``total`` is told, before the work starts, how many bytes
    ``progress`` will count."""
    problems: dict[str, str] = {}
    device_checksums: dict[str, int] = {}
    checked = nbytes = stored = 0
    try:
        chains = reader.chains(digests)
    except ObjectNotFound:
        chains = {}
        for d in digests:
            try:
                chains.update(reader.chains([d]))
            except ObjectNotFound as e:
                problems[d] = str(e)

    if total is not None:
        total(sum(chain[0].raw_size for chain in chains.values()))

    def check(d: str) -> None:
        nonlocal checked, nbytes, stored
        chain = chains[d]
        try:
            h = devhash(reader.decode(chain, verify=True))
            if h != chain[0].device_checksum:
                device_checksums[d] = h
        except ObjectNotFound:
            for r in chain:
                if not objects.exists(r.digest):
                    problems[r.digest] = "missing from the object store"
        except (CorruptObject, StorageError) as e:
            # StorageError: an unreadable object (a folder or FIFO in its place, an I/O
            # error) is reported like a damaged one, and verify goes on.
            problems[d] = str(e)
        checked += 1
        nbytes += chain[0].raw_size
        stored += chain[0].stored_size
        if progress:
            progress(chain[0].raw_size)

    run_all(check, sorted(chains))
    if remember:
        index.flag_damaged(problems, datetime.now(timezone.utc))
        index.clear_damaged(index.damaged(digests).keys() - problems.keys())
        index.set_device_checksums(device_checksums)
    affected = index.snapshots_for_digests(problems)
    return VerifyResult(
        checked,
        nbytes,
        tuple(
            VerifyProblem(d, msg, tuple(affected.get(d, ()))) for d, msg in sorted(problems.items())
        ),
        stored,
        len(device_checksums),
    )


def altered_manifests(index: Index, snaps: list[Snapshot]) -> tuple[VerifyProblem, ...]:
    """The snapshots whose manifest in the index does not hash to their id."""
    altered = [s.id for s in snaps if s.id not in derived_ids(s)]
    # A parent deleted before revision 0005 took the id's parent with it: not damage.
    unknown = index.unknown_origins(altered) if altered else set()
    return tuple(
        VerifyProblem(sid, "its manifest in the index does not hash to its id", (sid,))
        for sid in altered
        if sid not in unknown
    )
