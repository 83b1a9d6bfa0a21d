"""The demo's PNG: per run, the two accuracy matrices, stored vs naive bytes, and swap latency
beside a forward pass (matplotlib's Agg canvas: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from weightstore.demo.render import human

LATENCY_KINDS = ("gpu cache", "host cache", "store warm", "load_file", "load_file + clone")


def plot_demo(result: dict[str, Any], out: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = result["runs"]
    fig = Figure(figsize=(18, 4.2 * len(runs)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(runs), 4, squeeze=False)
    for row, run in zip(axes, runs, strict=True):
        _matrix(row[0], run["accuracy"]["sequential"], run, "single network")
        _matrix(row[1], run["accuracy"]["swapped"], run, "task's own snapshot swapped in")
        _memory(row[2], run)
        _latency(row[3], run)
    fig.suptitle(f"weightstore demo: {result['workload']} (seed {result['seed']})")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def _matrix(ax: Any, matrix: list[list[float | None]], run: dict[str, Any], what: str) -> None:
    n = len(matrix)
    values = [[float("nan") if v is None else v for v in r] for r in matrix]
    ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
    names = [t["name"] for t in run["tasks"]]
    ax.set_xticks(range(n), names, fontsize="small", rotation=30)
    ax.set_yticks(range(n), names, fontsize="small")
    ax.set_xlabel("accuracy on task")
    ax.set_ylabel("after training task")
    for i, r in enumerate(matrix):
        for j, v in enumerate(r):
            if v is not None:
                ax.text(
                    j,
                    i,
                    f"{v:.0%}",
                    ha="center",
                    va="center",
                    fontsize="small",
                    color="black" if v > 0.5 else "white",
                )
    ax.set_title(f"accuracy: {what}", fontsize="medium")


def _memory(ax: Any, run: dict[str, Any]) -> None:
    m = run["memory"]
    labels = ["a copy per task", "a copy per task\nand checkpoint", "weightstore"]
    values = [m["naive_task_copies_bytes"], m["naive_all_copies_bytes"], m["stored_bytes"]]
    unit, scale = ("MiB", 1024**2) if max(values) >= 10 * 1024**2 else ("KiB", 1024)
    bars = ax.bar(labels, [v / scale for v in values], color=["C7", "C7", "C2"])
    ax.bar_label(bars, [f"{v / scale:.0f} {unit}" for v in values], fontsize="small")
    ax.set_ylabel(unit)
    ax.set_title(f"bytes: {m['snapshots']} snapshots, naive vs stored", fontsize="medium")


def _latency(ax: Any, run: dict[str, Any]) -> None:
    first = run["tasks"][0]["name"]
    every = run["latency"]["rows"]
    rows = [r for r in every if r["kind"] in LATENCY_KINDS and r["refs"] == first]
    rows += [r for r in every if r["kind"].startswith("pair")]  # only what differs moves
    rows += [r for r in every if r["kind"] == "forward pass"]
    labels = [_label(r) for r in rows]
    colors = ["C1" if r["kind"] == "forward pass" else "C0" for r in rows]
    ax.barh(range(len(rows)), [r["p50_ms"] for r in rows], color=colors)
    ax.set_yticks(range(len(rows)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms (p50, log scale)")
    ax.set_title(
        f"swap {first} in vs a forward pass ({run['latency']['device']})", fontsize="medium"
    )


def _label(row: dict[str, Any]) -> str:
    if row["kind"] == "forward pass":
        return f"forward, {row['refs']}"
    if row["kind"].startswith("pair"):
        return f"{row['refs'].replace(' -> ', ' to ')}\n({human(row['bytes'])} moved)"
    return str(row["kind"])
