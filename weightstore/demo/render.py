"""The demo's figures as rich tables, one per objection, each readable at a glance."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text


def human(n: float) -> str:
    """Bytes in powers of 1024, three significant figures."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def ms(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.1f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def accuracy_table(run: dict[str, Any]) -> Table:
    acc = run["accuracy"]
    tasks = run["tasks"]
    t = Table(
        caption_justify="left",
        title="1. Forgetting and recovery: accuracy on task j after training task i",
    )
    t.add_column("after training")
    for task in tasks:
        t.add_column(f"{task['name']}\n{task['description']}", justify="center")
    for i, (seq, swapped) in enumerate(zip(acc["sequential"], acc["swapped"], strict=True)):
        cells = []
        for j, (a, b) in enumerate(zip(seq, swapped, strict=True)):
            if b is None:
                cells.append(Text(_pct(a), style="dim"))
            elif i == j:
                cells.append(Text(_pct(a), style="bold"))
            else:
                style = "green" if b > a else ""
                cells.append(Text(f"{_pct(a)} -> {_pct(b)}", style=style))
        t.add_row(tasks[i]["name"], *cells)
    exact = "yes" if acc["restored_exactly"] else "NO"
    t.caption = (
        "cell: single network -> with task j's own snapshot swapped in by the TaskLoader\n"
        f"mean over all tasks at the end: single network {_pct(acc['final_mean_sequential'])}, "
        f"per-task snapshots {_pct(acc['final_mean_swapped'])}; every swapped accuracy equals "
        f"the one measured right after training, exactly: {exact}"
    )
    return t


def memory_table(run: dict[str, Any]) -> Table:
    m = run["memory"]
    t = Table(caption_justify="left", title="2. Memory: full copies vs what is stored")
    t.add_column("what")
    t.add_column("bytes", justify="right")
    t.add_column("vs one copy", justify="right")
    one = m["model_bytes"]
    n_tasks = len(run["tasks"])
    rows = [
        ("one full copy of the model", one),
        (f"naive: a copy per task ({n_tasks})", m["naive_task_copies_bytes"]),
        (
            f"naive: a copy per task and checkpoint ({m['snapshots']})",
            m["naive_all_copies_bytes"],
        ),
        (f"weightstore: all {m['snapshots']} snapshots stored", m["stored_bytes"]),
        ("loader host cache (peak)", m["loader"]["host_cache_peak"]),
        ("loader: bytes moved per swap (mean)", m["loader"]["mean_bytes_moved_per_swap"]),
    ]
    for label, b in rows:
        t.add_row(label, human(b), f"{b / one:.2f}x")
    t.add_row("stored / naive", f"{m['stored_over_naive']:.1%}", "")
    x = m["extrapolation"]
    t.add_section()
    big = f"{x['parameters'] / 1e9:.0f}B bf16, {x['tasks']} tasks x {m['snapshots_per_task']}"
    for label, key in ((f"{big}: naive *", "naive_bytes"), (f"{big}: stored *", "stored_bytes")):
        t.add_row(label, human(x[key]), f"{x[key] / x['copy_bytes']:.0f}x")
    t.caption = f"* {x['label']}"
    return t


def latency_table(run: dict[str, Any]) -> Table:
    lat = run["latency"]
    t = Table(
        caption_justify="left",
        title=f"3. Latency on {lat['device']}: swapping a task's weights in vs using them",
    )
    for col in ("measure", "of", "bytes", "p50 ms", "p95 ms"):
        t.add_column(col, justify="left" if col in ("measure", "of") else "right")
    for r in lat["rows"]:
        t.add_row(r["kind"], r["refs"], human(r["bytes"]), ms(r["p50_ms"]), ms(r["p95_ms"]))
    order = " < ".join(f"{x['tier']} ({ms(x['p50_ms'])} ms)" for x in lat["tiers_fastest_first"])
    t.caption = "\n".join(filter(None, [f"tiers by p50: {order}", lat["note"]]))
    return t


def compute_table(run: dict[str, Any]) -> Table:
    c = run["compute"]
    t = Table(caption_justify="left", title="4. Training compute: time spent saving snapshots")
    t.add_column("training (s)", justify="right")
    t.add_column("saving (s)", justify="right")
    t.add_column("saves", justify="right")
    t.add_column("ms per save", justify="right")
    t.add_column("saving / total", justify="right")
    t.add_row(
        f"{c['train_s']:.2f}",
        f"{c['save_s']:.2f}",
        str(c["saves"]),
        f"{c['mean_save_ms']:.1f}",
        f"{c['save_share']:.1%}",
    )
    return t


def generality_table(run: dict[str, Any]) -> Table:
    g = run["generality"]
    t = Table(
        caption_justify="left",
        title="5. Generality: the task of an input is not given",
        caption=f"rule: {g['rule']}; {g['forward_passes_per_input']} forward passes per input",
    )
    t.add_column("who answers")
    t.add_column(f"accuracy on all {g['inputs']} test inputs", justify="right")
    t.add_row("oracle: the input's own task snapshot", _pct(g["accuracy_oracle"]))
    t.add_row(
        f"the rule (right snapshot picked for {_pct(g['task_picked_right'])})",
        _pct(g["accuracy_rule"]),
    )
    t.add_row("the single sequentially trained network", _pct(g["accuracy_single_network"]))
    return t


def report(result: dict[str, Any]) -> RenderableType:
    """Every table of every run of the demo."""
    parts: list[RenderableType] = []
    for run in result["runs"]:
        parts.append(
            Text(
                f"{run['name']}: {run['parameters']:,} parameters ({human(run['model_bytes'])}), "
                f"{len(run['tasks'])} tasks x {run['steps_per_task']} steps, "
                f"{run['threads']} torch thread(s)",
                style="bold",
            )
        )
        for make in (accuracy_table, memory_table, latency_table, compute_table, generality_table):
            parts.append(make(run))
    parts.append(Text(f"demo ran in {result['seconds']:.1f} s", style="dim"))
    return Group(*parts)
