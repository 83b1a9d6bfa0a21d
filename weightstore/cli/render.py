"""Presentation for the CLI: human sizes and times, rich tables, and JSON forms of the results.

The JSON forms are the CLI's machine-readable contract: keys are stable, datetimes are ISO 8601
with their UTC offset, byte counts are plain integers and ids are full length.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from weightstore.forms import ratio, snapshot_json, unchanged_bytes
from weightstore.types import (
    Diff,
    Snapshot,
    StoreStats,
    TensorEntry,
    UsageRow,
    VerifyResult,
)

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


def ref_text(snap: Snapshot) -> str:
    """``task@step`` when the snapshot has a step, else ``task``."""
    return snap.task if snap.step is None else f"{snap.task}@{snap.step}"


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)


def task_summaries(tasks: Iterable[str], snapshots: Iterable[Snapshot]) -> list[dict[str, Any]]:
    """Per task: snapshot count and its latest snapshot (``snapshots`` newest first, as
    ``store.log()`` returns them); tasks without snapshots are listed with a count of 0."""
    rows: dict[str, dict[str, Any]] = {
        t: {"task": t, "snapshots": 0, "latest": None} for t in tasks
    }
    for s in snapshots:
        row = rows.setdefault(s.task, {"task": s.task, "snapshots": 0, "latest": None})
        row["snapshots"] += 1
        if row["latest"] is None:
            row["latest"] = snapshot_json(s)
    return [rows[t] for t in sorted(rows)]


# ------------------------------------------------------------------------------------ tables


def _kv_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    return table


def log_table(snaps: Sequence[Snapshot], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("id", style="yellow", no_wrap=True)
    table.add_column("task", style="cyan")
    table.add_column("step", justify="right")
    table.add_column("tags", style="green")
    table.add_column("created", no_wrap=True)
    table.add_column("tensors", justify="right")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("message", overflow="ellipsis", no_wrap=True, max_width=40)
    for s in snaps:
        table.add_row(
            s.short_id,
            s.task,
            "" if s.step is None else str(s.step),
            ", ".join(s.tags),
            local_time(s.created_at),
            str(len(s.tensors)),
            human_bytes(s.logical_bytes),
            Text(truncate(s.message, 40)),
        )
    return table


def snapshot_table(s: Snapshot) -> Table:
    table = _kv_table()
    table.add_row("id", Text(s.id, style="yellow"))
    table.add_row("task", s.task)
    table.add_row("step", "-" if s.step is None else str(s.step))
    table.add_row("tags", ", ".join(s.tags) or "-")
    table.add_row("parent", s.parent[:SHORT] if s.parent else "-")
    table.add_row("created", local_time(s.created_at, seconds=True))
    table.add_row("tensors", str(len(s.tensors)))
    table.add_row("size", f"{human_bytes(s.logical_bytes)} ({s.logical_bytes} bytes)")
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


def tensor_table(tensors: Sequence[TensorEntry]) -> Table:
    table = Table(title=f"tensors ({len(tensors)})", title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("digest", style="dim", no_wrap=True)
    for t in tensors:
        table.add_row(
            Text(t.name), t.dtype, shape_text(t.shape), human_bytes(t.nbytes), t.digest[:SHORT]
        )
    return table


def diff_table(d: Diff) -> Table:
    table = Table(
        title=f"{d.a.short_id} ({ref_text(d.a)}) -> {d.b.short_id} ({ref_text(d.b)})",
        title_justify="left",
    )
    table.add_column("", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("note")
    for t in d.added:
        table.add_row(
            Text("+", style="green"),
            Text(t.name),
            t.dtype,
            shape_text(t.shape),
            human_bytes(t.nbytes),
            "added",
        )
    for t in d.removed:
        table.add_row(
            Text("-", style="red"),
            Text(t.name),
            t.dtype,
            shape_text(t.shape),
            human_bytes(t.nbytes),
            "removed",
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
        table.add_row(
            Text("~", style="yellow"),
            Text(c.name),
            dtype,
            shape,
            human_bytes(c.new.nbytes),
            ", ".join(notes) or "values changed",
        )
    return table


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


def tasks_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table()
    table.add_column("task", style="cyan")
    table.add_column("snapshots", justify="right")
    table.add_column("latest", style="yellow", no_wrap=True)
    table.add_column("latest step", justify="right")
    table.add_column("latest tags", style="green")
    table.add_column("latest created", no_wrap=True)
    for row in rows:
        latest = row["latest"]
        if latest is None:
            table.add_row(row["task"], "0", "-", "-", "-", "-")
            continue
        table.add_row(
            row["task"],
            str(row["snapshots"]),
            latest["short_id"],
            "-" if latest["step"] is None else str(latest["step"]),
            ", ".join(latest["tags"]) or "-",
            local_time(datetime.fromisoformat(latest["created_at"])),
        )
    return table


def storage_table(s: StoreStats) -> Table:
    objects = ", ".join(f"{n} {enc}" for enc, n in sorted(s.objects_by_encoding.items()))
    table = Table(
        title="storage",
        caption=f"{s.objects} objects" + (f" ({objects})" if objects else ""),
        title_justify="left",
    )
    table.add_column("task", style="cyan")
    for name in (
        "snapshots",
        "logical",
        "stored",
        "ratio",
        "dedup saved",
        "delta saved",
        "compression saved",
    ):
        table.add_column(name, justify="right", no_wrap=True)
    rows: list[UsageRow] = [*s.tasks, s.total]
    for row in rows:
        is_total = row.task is None
        table.add_row(
            "total" if is_total else row.task,
            str(row.snapshots),
            human_bytes(row.logical_bytes),
            human_bytes(row.stored_bytes),
            f"{ratio(row):.4f}",
            human_bytes(row.saved_by_dedup),
            human_bytes(row.saved_by_delta),
            human_bytes(row.saved_by_compression),
            style="bold" if is_total else None,
            end_section=row is s.tasks[-1] if s.tasks else False,
        )
    return table


def result_table(pairs: Iterable[tuple[str, str]]) -> Table:
    table = _kv_table()
    for key, value in pairs:
        table.add_row(key, Text(value))
    return table
