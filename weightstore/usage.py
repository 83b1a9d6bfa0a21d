"""The storage report's arithmetic: logical vs stored bytes, and where the savings come from.

Each object's stored bytes are attributed to the first snapshot (in commit order) that holds
it as a tensor, or as a delta base of one (a base another, later snapshot holds goes to that
one), so per-task and per-snapshot figures add up to the total. A base that no snapshot holds
as a tensor any more (its snapshot was deleted, a later delta still needs it) is charged to no
task: it is its own line, so that a task's savings never exceed its logical size
(logical = stored + dedup + delta + compression savings, per task).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from weightstore.index import SnapshotUsageRow
from weightstore.types import ObjectRecord, SnapshotUsage, StoreStats, UsageRow


def compute_stats(
    snapshots: Sequence[SnapshotUsageRow], objects: Sequence[tuple[ObjectRecord, datetime]]
) -> StoreStats:
    """``snapshots`` in commit order; ``objects``: every object row."""
    records = {rec.digest: rec for rec, _ in objects}
    held = {d for snap in snapshots for d, _ in snap.tensors}
    attributed: set[str] = set()
    kept: set[str] = set()
    per_task: dict[str, list[int]] = {}
    timeline: list[SnapshotUsage] = []
    for snap in snapshots:
        # [snapshots, logical, stored, dedup, delta, compression]
        row = per_task.setdefault(snap.task, [0, 0, 0, 0, 0, 0])
        row[0] += 1
        row[1] += snap.logical_bytes
        stored = 0
        for d, nbytes in snap.tensors:
            if d in attributed:
                row[3] += nbytes
                continue
            rec = records.get(d)
            attributed.add(d)
            if rec is None:
                continue
            stored += rec.stored_size
            row[4 if rec.encoding in ("delta", "sub") else 5] += rec.raw_size - rec.stored_size
            link = rec.base
            while link is not None and link not in held and link not in kept:
                base = records.get(link)
                if base is None:
                    break
                kept.add(link)
                link = base.base
        row[2] += stored
        timeline.append(
            SnapshotUsage(
                snap.id, snap.task, snap.step, snap.created_at, snap.logical_bytes, stored
            )
        )
    rows = tuple(UsageRow(task, *figures) for task, figures in sorted(per_task.items()))
    kept_bytes = sum(records[d].stored_size for d in kept)
    total = UsageRow(None, *map(sum, zip((0,) * 6, *map(_figures, rows), strict=True)))
    total = dataclasses.replace(total, stored_bytes=total.stored_bytes + kept_bytes)
    return StoreStats(
        tasks=rows,
        total=total,
        snapshots=tuple(timeline),
        objects=len(records),
        objects_by_encoding=dict(Counter(rec.encoding for rec in records.values())),
        kept_base_objects=len(kept),
        kept_base_bytes=kept_bytes,
    )


def _figures(r: UsageRow) -> tuple[int, int, int, int, int, int]:
    return (
        r.snapshots,
        r.logical_bytes,
        r.stored_bytes,
        r.saved_by_dedup,
        r.saved_by_delta,
        r.saved_by_compression,
    )
