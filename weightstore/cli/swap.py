"""Rendering of ``weightstore report swap``: the table and the optional bar chart of the
figures measured by :func:`weightstore.loader.bench.measure_swaps`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from weightstore.cli.plot import save_png
from weightstore.cli.render import human_bytes


def swap_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"swap latency on {result['device']}")
    for col in ("measure", "refs", "bytes", "runs", "p50 ms", "p95 ms", "min ms", "GB/s"):
        table.add_column(col, justify="left" if col in ("measure", "refs") else "right")
    for r in result["rows"]:
        table.add_row(
            r["kind"],
            r["refs"],
            human_bytes(r["bytes"]),
            str(r["iterations"]),
            f"{r['p50_ms']:.2f}",
            f"{r['p95_ms']:.2f}",
            f"{r['min_ms']:.2f}",
            f"{r['gb_per_s']:.2f}",
        )
    if result["note"]:
        table.caption = result["note"]
    return table


def plot_swaps(result: dict[str, Any], out: Path) -> Path:
    """A horizontal bar per measured row: GB/s at the p50."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["rows"]
    fig = Figure(figsize=(9, 1.2 + 0.35 * len(rows)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels = [f"{r['kind']}: {r['refs']}" for r in rows]
    ax.barh(range(len(rows)), [r["gb_per_s"] for r in rows], color="C0")
    ax.set_yticks(range(len(rows)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("GB/s at p50 (bytes written into the target)")
    ax.set_title(f"weightstore swaps on {result['device']}")
    ax.grid(True, axis="x", alpha=0.3)
    return save_png(fig, out)
