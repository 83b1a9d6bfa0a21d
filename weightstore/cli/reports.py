"""``weightstore report`` (storage, swap) and ``weightstore db`` (schema, locks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from weightstore.cli.app import (
    state,
    stderr,
    stdout,
)
from weightstore.cli.options import REFS_HELP, JsonFlag, emit_json
from weightstore.cli.plot import check_plot_path
from weightstore.cli.render import (
    storage_table,
)
from weightstore.forms import (
    stats_json,
)

report_app = typer.Typer(help="Reports about the store.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the index database schema.", no_args_is_help=True)


@report_app.command("storage")
def report_storage(
    ctx: typer.Context,
    json_out: JsonFlag = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="OUT.png",
            help="Also draw cumulative logical vs stored bytes per snapshot to this PNG.",
        ),
    ] = None,
) -> None:
    """Storage used per task and in total.

    Logical bytes (full safetensors copies) vs stored bytes, their ratio, and what dedup,
    deltas and compression saved.

    Example: weightstore report storage --plot storage.png
    """
    if plot is not None:
        check_plot_path(plot)
    st = state(ctx)
    stats = st.store(read_only=True).stats()
    if json_out:
        emit_json(stats_json(stats))
    else:
        out = stdout()
        out.print(storage_table(stats, width=out.width))
    if plot is not None:
        from weightstore.cli.plot import plot_storage

        path = plot_storage(stats.snapshots, plot, title=f"weightstore storage: {st.path}")
        (stderr() if json_out else stdout()).print(f"plot written to {path}")


@report_app.command("swap")
def report_swap(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(help="Snapshots to swap between. " + REFS_HELP)],
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    iterations: Annotated[int, typer.Option("--iterations", "-n", min=1)] = 5,
    json_out: JsonFlag = False,
    plot: Annotated[Path | None, typer.Option("--plot", metavar="OUT.png")] = None,
) -> None:
    """Swap latency per tier and per pair of REFs.

    Tiers: GPU cache, host cache, store; beside safetensors' load_file and a raw copy. Without
    a GPU, the CPU tiers only.

    Example: weightstore report swap base sentiment:prod --device cuda --plot swap.png
    """
    if plot is not None:
        check_plot_path(plot)
    from weightstore.cli.progress import StepProgress
    from weightstore.cli.swap import plot_swaps, swap_table
    from weightstore.loader.bench import measure_swaps, phase_count

    store = state(ctx).store()
    total = phase_count(len(refs), device.startswith("cuda"))
    with StepProgress("measuring swaps", total) as phase:
        result = measure_swaps(store, refs, device, iterations, on_phase=phase)
    if json_out:
        emit_json(result)
    else:
        out = stdout()
        out.print(swap_table(result, width=out.width))
    if plot is not None:
        (stderr() if json_out else stdout()).print(f"plot written to {plot_swaps(result, plot)}")


# ------------------------------------------------------------------------------------ demo


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Migrate the store's index to the newest schema (back up the index first).

    Example: weightstore --store runs/store db upgrade
    """
    from weightstore.store import WeightStore

    st = state(ctx)
    old, new = WeightStore.upgrade_schema(st.path, index_url=st.index_url)
    if old == new:
        stdout().print(f"index schema already at revision {new}")
    else:
        stdout().print(f"index schema upgraded: {old or '(empty)'} -> {new}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the index's schema revision and the one this weightstore needs.

    Example: weightstore --store runs/store db current
    """
    from weightstore.store import WeightStore

    st = state(ctx)
    current, head = WeightStore.schema_revision(st.path, index_url=st.index_url)
    note = "up to date" if current == head else "run `weightstore db upgrade`"
    stdout().print(f"index schema at revision {current or '(empty)'}; needed {head}: {note}")


@db_app.command("unlock")
def db_unlock(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Lock name, e.g. gc.")] = "gc",
) -> None:
    """Remove a lock left by a process that died (for example a killed gc).

    Example: weightstore db unlock gc
    """
    holder = state(ctx).store().break_lock(name)
    stdout().print(f"removed {name} lock held by {holder}" if holder else f"no {name} lock held")
