"""Presentation for the CLI: human sizes and times, rich tables, and JSON forms of the results.

The JSON forms are the CLI's machine-readable contract: keys are stable, datetimes are ISO 8601
with their UTC offset, byte counts are plain integers and ids are full length.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from weightstore.cli.columns import Column, fitted_table
from weightstore.folders import FOLDER_KEY, FolderFile
from weightstore.forms import unchanged_bytes
from weightstore.types import (
    CHECKPOINT_PREFIX,
    OPTIMIZER_PREFIX,
    RNG_PREFIX,
    TRAIN_PREFIX,
    TRAINING_KEY,
    DeletionEffect,
    Diff,
    Snapshot,
    SnapshotHeader,
    SnapshotSummary,
    StoreStats,
    TaskSummary,
    TensorEntry,
    UsageRow,
    VerifyResult,
)

# What the encoding names in reports mean (objects are chosen per tensor, smallest wins).
ENCODINGS = {
    "plain": "bytes grouped by significance, zstd-compressed",
    "delta": "XOR against a base object, grouped, compressed",
    "sub": "float difference (in ULPs) against a base object, grouped, compressed",
    "raw": "kept as is: compression did not pay",
}

SHORT = 12
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


# ------------------------------------------------------------------------------------ formats


def human_bytes(n: int | float) -> str:
    """``1536`` -> ``"1.5 KiB"``; whole bytes below 1 KiB; negative sizes keep their sign."""
    sign = "-" if n < 0 else ""
    value = float(abs(n))
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{sign}{int(value)} B"
            return f"{sign}{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def local_time(when: datetime, *, seconds: bool = False) -> str:
    """A datetime in the local time zone, short: ``2024-05-01 14:03``."""
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def truncate(text: str, width: int) -> str:
    """The first line of ``text``, cut to ``width`` characters with an ellipsis."""
    line = text.splitlines()[0] if text else ""
    if len(line) > width or line != text:
        return line[: max(0, width - 1)].rstrip() + "…"
    return line


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def ref_text(snap: Snapshot | SnapshotSummary) -> str:
    """``task@step`` when the snapshot has a step, else ``task``."""
    return snap.task if snap.step is None else f"{snap.task}@{snap.step}"


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)


# ------------------------------------------------------------------------------------ JSON forms


def summary_of(s: Snapshot) -> SnapshotSummary:
    """The listing form of a full snapshot."""
    header = {f.name: getattr(s, f.name) for f in dataclasses.fields(SnapshotHeader)}
    return SnapshotSummary(**header, tensor_count=len(s.tensors), added_bytes=s.added_bytes)


def deletion_text(effect: DeletionEffect) -> str:
    """What gc can free after a delete, and why it may be nothing."""
    kept = (
        f"{effect.kept_as_bases} object(s) only it referenced "
        f"({human_bytes(effect.kept_as_bases_bytes)}) stay, as later snapshots are stored as "
        "deltas against them"
    )
    if effect.frees_objects:
        text = (
            f"`weightstore gc` can then free {effect.frees_objects} object(s), "
            f"{human_bytes(effect.frees_bytes)}"
        )
        return f"{text}; {kept}" if effect.kept_as_bases else text
    if effect.kept_as_bases:
        return f"this frees no storage: {kept}, and the rest are used by other snapshots"
    return "this frees no storage: every object it uses is needed by another snapshot"


# ------------------------------------------------------------------------------------ tables


def _kv_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    return table


def log_table(
    snaps: Sequence[SnapshotSummary], *, width: int = 160, title: str | None = None
) -> Table:
    """Snapshots as rows; at ``width`` columns the id, task, step and tags always show, then
    as many of added, created, size, tensors and message as fit."""
    cols = [
        Column("id", [s.short_id for s in snaps], style="yellow"),
        Column("task", [Text(s.task) for s in snaps], style="cyan"),
        Column("step", ["" if s.step is None else str(s.step) for s in snaps], justify="right"),
        Column("tags", [Text(", ".join(s.tags)) for s in snaps], style="green"),
        Column("created", [local_time(s.created_at) for s in snaps], priority=2),
        Column("tensors", [str(s.tensor_count) for s in snaps], priority=4, justify="right"),
        Column("holds", [holds(s.metadata) for s in snaps], priority=4),
        Column("size", [human_bytes(s.logical_bytes) for s in snaps], priority=3, justify="right"),
        Column("added", [human_bytes(s.added_bytes) for s in snaps], priority=1, justify="right"),
        Column("message", [Text(truncate(s.message, 40)) for s in snaps], priority=5, shrink_to=12),
    ]
    caption = "added: bytes the snapshot added to the store; size: its full (logical) size"
    return fitted_table(cols, width, title=title, caption=caption if snaps else None)


def holds(metadata: dict[str, Any]) -> str:
    """What a snapshot holds besides weights: a folder's files, training state."""
    parts = ["folder" if FOLDER_KEY in metadata else "weights"]
    record = metadata.get(TRAINING_KEY)
    if isinstance(record, dict):
        parts += [p for p in ("optimizer", "scheduler", "rng", "extra") if p in record]
    return ", ".join(parts)


def training_table(s: Snapshot) -> Table | None:
    """What ``restore(..., optimizer=, scheduler=, rng=True)`` / ``restore_extra`` would load."""
    record = s.metadata.get(TRAINING_KEY)
    if not isinstance(record, dict):
        return None
    entries = [t for t in s.tensors if t.name.startswith(TRAIN_PREFIX)]
    table = Table(
        title="training state (restore with optimizer= / scheduler= / rng=True)",
        title_justify="left",
    )
    table.add_column("part")
    table.add_column("what")
    table.add_column("tensors", justify="right")
    table.add_column("size", justify="right")
    for part, prefix in (
        ("optimizer", OPTIMIZER_PREFIX),
        ("rng", RNG_PREFIX),
        ("extra", CHECKPOINT_PREFIX),
    ):
        if part in record:
            mine = [t for t in entries if t.name.startswith(prefix)]
            what = record[part].get("class", "") if isinstance(record[part], dict) else ""
            table.add_row(part, what, str(len(mine)), human_bytes(sum(t.nbytes for t in mine)))
    if "scheduler" in record:
        table.add_row("scheduler", str(record["scheduler"].get("class", "")), "0", "-")
    return table


def snapshot_table(s: Snapshot) -> Table:
    table = _kv_table()
    table.add_row("id", Text(s.id, style="yellow"))
    table.add_row("task", s.task)
    table.add_row("step", "-" if s.step is None else str(s.step))
    table.add_row("tags", ", ".join(s.tags) or "-")
    table.add_row("parent", s.parent[:SHORT] if s.parent else "-")
    table.add_row("created", local_time(s.created_at, seconds=True))
    table.add_row("tensors", str(len(s.weights)))
    table.add_row("size", f"{human_bytes(s.logical_bytes)} ({s.logical_bytes} bytes)")
    table.add_row(
        "added",
        f"{human_bytes(s.added_bytes)}: stored bytes of the objects it was the first to use",
    )
    if s.message:
        table.add_row("message", Text(s.message))
    return table


def metadata_table(meta: dict[str, Any]) -> Table:
    table = Table(title="metadata", title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in meta.items():
        table.add_row(Text(key), Text(value if isinstance(value, str) else json.dumps(value)))
    return table


# Long tensor names and paths fold onto lines of at least this many characters to make room
# for dtype, shape and size at 80 columns; digests are dropped before anything folds.
_FOLD = 32


def tensor_table(tensors: Sequence[TensorEntry], *, width: int = 160) -> Table:
    """Names stay whole (folded, never cut); the digest goes first when space runs out."""
    cols = [
        Column("name", [Text(t.name) for t in tensors], fold_to=_FOLD),
        Column("dtype", [t.dtype for t in tensors], priority=1, essential=True),
        Column("shape", [shape_text(t.shape) for t in tensors], priority=2, essential=True),
        Column(
            "size",
            [human_bytes(t.nbytes) for t in tensors],
            priority=0,
            justify="right",
            essential=True,
        ),
        Column("digest", [t.digest[:SHORT] for t in tensors], priority=3, style="dim"),
    ]
    return fitted_table(cols, width, title=f"tensors ({len(tensors)})")


def file_table(files: Sequence[FolderFile], *, width: int = 160) -> Table:
    cols = [
        Column("path", [Text(f.path) for f in files], fold_to=_FOLD),
        Column(
            "size",
            [human_bytes(f.size) for f in files],
            priority=0,
            justify="right",
            essential=True,
        ),
        Column("sha256", [f.sha256[:SHORT] for f in files], priority=2, style="dim"),
        Column(
            "kept as", ["header + tensors" if f.rebuilt else "bytes" for f in files], priority=1
        ),
    ]
    return fitted_table(cols, width, title=f"files ({len(files)})")


def diff_table(d: Diff, *, width: int = 160) -> Table:
    rows: list[tuple[Text, str, str, str, int, str]] = []
    for t in d.added:
        rows.append(
            (Text("+", style="green"), t.name, t.dtype, shape_text(t.shape), t.nbytes, "added")
        )
    for t in d.removed:
        rows.append(
            (Text("-", style="red"), t.name, t.dtype, shape_text(t.shape), t.nbytes, "removed")
        )
    for c in d.changed:
        notes = []
        dtype, shape = c.new.dtype, shape_text(c.new.shape)
        if c.old.dtype != c.new.dtype:
            dtype = f"{c.old.dtype} -> {c.new.dtype}"
            notes.append("dtype changed")
        if c.old.shape != c.new.shape:
            shape = f"{shape_text(c.old.shape)} -> {shape_text(c.new.shape)}"
            notes.append("shape changed")
        rows.append(
            (
                Text("~", style="yellow"),
                c.name,
                dtype,
                shape,
                c.new.nbytes,
                ", ".join(notes) or "values changed",
            )
        )
    cols = [
        Column("", [r[0] for r in rows]),
        Column("name", [Text(r[1]) for r in rows], fold_to=_FOLD),
        Column("dtype", [r[2] for r in rows], priority=2, essential=True),
        Column("shape", [r[3] for r in rows], priority=3, essential=True),
        Column("size", [human_bytes(r[4]) for r in rows], priority=1, justify="right"),
        Column("note", [r[5] for r in rows], priority=0, essential=True),
    ]
    title = f"{d.a.short_id} ({ref_text(d.a)}) -> {d.b.short_id} ({ref_text(d.b)})"
    return fitted_table(cols, width, title=title)


def diff_summary(d: Diff) -> str:
    return (
        f"{len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed, "
        f"{len(d.unchanged)} unchanged ({human_bytes(unchanged_bytes(d))})"
    )


def verify_table(r: VerifyResult) -> Table:
    table = Table(title="problems", title_justify="left")
    table.add_column("object", style="yellow", no_wrap=True)
    table.add_column("problem", overflow="fold")
    table.add_column("affected snapshots", overflow="fold")
    for p in r.problems:
        table.add_row(
            p.digest[:SHORT],
            Text(p.problem),
            ", ".join(s[:SHORT] for s in p.snapshots) or "-",
        )
    return table


def tasks_table(tasks: Sequence[TaskSummary], *, width: int = 160) -> Table:
    latest = [t.latest for t in tasks]
    cols = [
        Column("task", [Text(t.task) for t in tasks], style="cyan"),
        Column("snapshots", [str(t.snapshots) for t in tasks], justify="right"),
        Column("latest", [s.short_id if s else "-" for s in latest], priority=1, style="yellow"),
        Column(
            "latest step",
            ["-" if s is None or s.step is None else str(s.step) for s in latest],
            priority=2,
            justify="right",
        ),
        Column(
            "latest tags",
            [Text(", ".join(s.tags) or "-") if s else "-" for s in latest],
            priority=3,
            style="green",
        ),
        Column(
            "latest created", [local_time(s.created_at) if s else "-" for s in latest], priority=4
        ),
    ]
    return fitted_table(cols, width)


def percent(fraction: float) -> str:
    """A share as a percentage that never reads as zero when it is not: "<0.01%"."""
    if 0 < fraction < 0.0001:
        return "<0.01%"
    return f"{fraction * 100:.2f}%"


def storage_table(s: StoreStats, *, width: int = 160) -> Table:
    """Per task and in total. Savings show as 0 where an encoding cost a few bytes more than
    the raw tensor (frame headers on incompressible data); the caption names that overhead
    and what each encoding means."""
    rows: list[UsageRow] = [*s.tasks]
    if s.kept_base_objects:
        rows.append(UsageRow("(kept delta bases)", 0, 0, s.kept_base_bytes, 0, 0, 0))
    rows.append(s.total)
    overhead = -min(0, s.total.saved_by_compression)
    kept = len(rows) - 2 if s.kept_base_objects else -1

    def cells(values: list[str]) -> list[str | Text]:
        return ["-" if i == kept else v for i, v in enumerate(values)]

    def saved(values: list[int]) -> list[str | Text]:
        return cells([human_bytes(max(0, v)) for v in values])

    cols = [
        Column("task", [Text("total" if r.task is None else r.task) for r in rows], style="cyan"),
        Column("logical", cells([human_bytes(r.logical_bytes) for r in rows]), justify="right"),
        Column("stored", [human_bytes(r.stored_bytes) for r in rows], justify="right"),
        Column(
            "stored/logical", cells([percent(r.ratio) for r in rows]), priority=1, justify="right"
        ),
        Column("snapshots", cells([str(r.snapshots) for r in rows]), priority=2, justify="right"),
        Column("delta saved", saved([r.saved_by_delta for r in rows]), priority=3, justify="right"),
        Column("dedup saved", saved([r.saved_by_dedup for r in rows]), priority=4, justify="right"),
        Column(
            "compression saved",
            saved([r.saved_by_compression for r in rows]),
            priority=5,
            justify="right",
        ),
    ]
    objects = ", ".join(f"{n} {enc}" for enc, n in sorted(s.objects_by_encoding.items()))
    lines = [f"{s.objects} objects" + (f" ({objects})" if objects else "")]
    lines += [f"{e}: {ENCODINGS[e]}" for e in sorted(s.objects_by_encoding) if e in ENCODINGS]
    if overhead:
        lines.append(f"{human_bytes(overhead)} of frame headers where compression did not pay")
    if s.kept_base_objects:
        lines.append(
            f"kept delta bases: {s.kept_base_objects} object(s) of deleted snapshots that later "
            "snapshots are stored as deltas against (freed when no delta needs them)"
        )
    return fitted_table(
        cols,
        width,
        title="storage",
        caption="\n".join(lines),
        row_styles=[*([None] * (len(rows) - 1)), "bold"],
        end_sections=[i == len(rows) - 2 for i in range(len(rows))],
    )


def result_table(pairs: Iterable[tuple[str, str]]) -> Table:
    table = _kv_table()
    for key, value in pairs:
        table.add_row(key, Text(value))
    return table
