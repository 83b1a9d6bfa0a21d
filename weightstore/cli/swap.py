"""Rendering of ``weightstore report swap``: the table and the optional bar chart of the
figures measured by :func:`weightstore.loader.bench.measure_swaps`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from weightstore.cli.columns import Column, fitted_table
from weightstore.cli.plot import save_png
from weightstore.cli.render import human_bytes

# Refs are never cut (two refs must never look alike): they fold after a separator instead.
_FOLD = 24


def _tier(kind: str) -> str:
    if kind == "pair (delta in place)":
        return kind
    return "pair" if kind.startswith("pair") else kind.removesuffix(" + clone")


def _is_baseline(kind: str) -> bool:
    from weightstore.loader.bench import BASELINES

    return kind in BASELINES


def swap_table(result: dict[str, Any], *, width: int = 160) -> Table:
    from weightstore.loader.bench import TIERS

    rows = result["rows"]
    measure = [
        Text(f"{r['kind']} (baseline)", style="dim") if _is_baseline(r["kind"]) else r["kind"]
        for r in rows
    ]
    cols = [
        Column("measure", measure, fold_to=_FOLD),
        Column("refs", [Text(r["refs"]) for r in rows], fold_to=_FOLD),
        Column(
            "p50 ms",
            [f"{r['p50_ms']:.2f}" for r in rows],
            priority=0,
            justify="right",
            essential=True,
        ),
        Column(
            "GB/s",
            [f"{r['gb_per_s']:.2f}" for r in rows],
            priority=1,
            justify="right",
            essential=True,
        ),
        Column("bytes", [human_bytes(r["bytes"]) for r in rows], priority=2, justify="right"),
        Column(
            "read",
            [human_bytes(r["read_bytes"]) if r.get("read_bytes") else "-" for r in rows],
            priority=2,
            justify="right",
        ),
        Column("p95 ms", [f"{r['p95_ms']:.2f}" for r in rows], priority=3, justify="right"),
        Column("min ms", [f"{r['min_ms']:.2f}" for r in rows], priority=4, justify="right"),
        Column("runs", [str(r["iterations"]) for r in rows], priority=5, justify="right"),
    ]
    seen = list(dict.fromkeys(_tier(r["kind"]) for r in rows))
    lines = [f"{t}: {TIERS[t]}" for t in seen if t in TIERS]
    if result["note"]:
        lines.append(result["note"])
    return fitted_table(
        cols, width, title=f"swap latency on {result['device']}", caption="\n".join(lines)
    )


def plot_swaps(result: dict[str, Any], out: Path) -> Path:
    """A horizontal bar per measured row: GB/s at the p50, coloured by tier, labelled with its
    p50 in ms; baselines grey and hatched, so that they read as what weightstore is compared
    with, not as one of its tiers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = result["rows"]
    fig = Figure(figsize=(10, 1.6 + 0.38 * len(rows)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    tiers = list(dict.fromkeys(_tier(r["kind"]) for r in rows if not _is_baseline(r["kind"])))
    colour = {t: f"C{i}" for i, t in enumerate(tiers)}
    speeds = [r["gb_per_s"] for r in rows]
    for i, r in enumerate(rows):
        base = _is_baseline(r["kind"])
        ax.barh(
            i,
            speeds[i],
            color="0.8" if base else colour[_tier(r["kind"])],
            hatch="//" if base else None,
            edgecolor="0.45" if base else None,
        )
        ax.text(speeds[i], i, f" {r['p50_ms']:.3g} ms", va="center", fontsize="small")
    labels = [
        f"{r['kind']}{' (baseline)' if _is_baseline(r['kind']) else ''}: {r['refs']}" for r in rows
    ]
    ax.set_yticks(range(len(rows)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, max(speeds, default=1) * 1.25 or 1)
    ax.set_xlabel("GB/s at p50 (bytes written into the target); label: p50 latency")
    ax.set_title(f"weightstore swaps on {result['device']}")
    ax.grid(True, axis="x", alpha=0.3)
    handles = [Patch(color=colour[t], label=t) for t in tiers]
    handles.append(Patch(facecolor="0.8", hatch="//", edgecolor="0.45", label="baseline"))
    ax.legend(handles=handles, loc="lower right", fontsize="small")
    return save_png(fig, out)
