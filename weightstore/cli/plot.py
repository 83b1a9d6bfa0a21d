"""The storage chart of ``weightstore report storage --plot``: cumulative logical vs stored
bytes over snapshot commit order, one colour per task plus the total.

matplotlib is imported inside :func:`plot_storage` only, and the figure is drawn on an Agg
canvas created there: no GUI backend, no pyplot global state, nothing done at import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from weightstore.errors import InvalidInput, NotFound
from weightstore.types import SnapshotUsage

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def check_plot_path(out: Path) -> Path:
    """``out`` if a PNG may be written there, checked before the report runs: a file (new, or
    to replace) in a folder that exists. Folders are never made."""
    if str(out).endswith(("/", os.sep)) or out.is_dir():
        raise InvalidInput(
            f"{out} is a folder: give the PNG file to write, e.g. {out / 'plot.png'}"
        )
    if not out.parent.is_dir():
        raise NotFound(f"folder {out.parent} does not exist: create it first")
    return out


def save_png(fig: Any, out: Path) -> Path:
    """Write ``fig`` to ``out`` as PNG, by export's rules: whole or not at all."""
    from weightstore.files import open_destination

    with open_destination(check_plot_path(out)) as f:
        fig.savefig(f, format="png")
    return out


def byte_unit(largest: float) -> tuple[str, int]:
    """The binary unit to draw ``largest`` bytes in, and its size: ticks then fall on round
    numbers of that unit (0, 200, 400 MiB) rather than on odd byte counts."""
    power = 0
    while power < len(_UNITS) - 1 and largest >= 1024 ** (power + 1):
        power += 1
    return _UNITS[power], 1024**power


def cumulative(
    usages: Sequence[SnapshotUsage],
) -> dict[str | None, tuple[list[int], list[int], list[int]]]:
    """Per task (and ``None`` for the total): x = 1-based commit position of each of its
    snapshots, and the running sums of logical and stored bytes at those positions."""
    series: dict[str | None, tuple[list[int], list[int], list[int]]] = {}
    for i, u in enumerate(usages, start=1):
        for key in (u.task, None):
            xs, logical, stored = series.setdefault(key, ([], [], []))
            xs.append(i)
            logical.append((logical[-1] if logical else 0) + u.logical_bytes)
            stored.append((stored[-1] if stored else 0) + u.stored_bytes)
    return series


def plot_storage(usages: Sequence[SnapshotUsage], out: Path, title: str | None = None) -> Path:
    """Draw the chart to ``out`` as PNG and return the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 5.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, for this figure only
    ax = fig.add_subplot()
    series = cumulative(usages)
    largest = max((max(logical) for _, logical, _ in series.values()), default=0)
    unit, scale = byte_unit(largest)

    def scaled(values: list[int]) -> list[float]:
        return [v / scale for v in values]

    tasks = sorted(k for k in series if k is not None)
    colours = [f"C{i % 10}" for i in range(len(tasks))]
    for task, colour in zip(tasks, colours, strict=True):
        xs, logical, stored = series[task]
        ax.plot(
            xs, scaled(logical), color=colour, linestyle="--", marker=".", label=f"{task} logical"
        )
        ax.plot(xs, scaled(stored), color=colour, linestyle="-", marker=".", label=f"{task} stored")
    if None in series and len(tasks) != 1:
        xs, logical, stored = series[None]
        for values, style, what in ((logical, "--", "logical"), (stored, "-", "stored")):
            ax.plot(
                xs,
                scaled(values),
                color="black",
                linestyle=style,
                linewidth=2,
                zorder=1,
                label=f"total {what}",
            )
    ax.set_title(title or "weightstore: logical vs stored bytes (cumulative)")
    ax.set_xlabel("snapshot (commit order)")
    ax.set_ylabel(f"cumulative size ({unit})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(loc="upper left", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no snapshots", ha="center", va="center", transform=ax.transAxes)
    return save_png(fig, out)
