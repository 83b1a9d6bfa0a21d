"""The ``weightstore`` command: one thin typer command per :class:`WeightStore` method.

Commands hold no storage logic: they parse arguments, call the facade, and render the result
(``render``), as tables for people or as JSON with ``--json`` for scripts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from weightstore.cli import service
from weightstore.cli.app import (
    EXIT_INTERRUPTED,
    ErrorMappingGroup,
    State,
    confirm,
    print_error,
    state,
    stderr,
    stdout,
)
from weightstore.cli.info import info
from weightstore.cli.progress import ByteProgress, estimate_bytes
from weightstore.cli.render import (
    deletion_text,
    diff_summary,
    diff_table,
    dump_json,
    human_bytes,
    log_table,
    metadata_table,
    ref_text,
    result_table,
    snapshot_table,
    storage_table,
    summary_of,
    tasks_table,
    tensor_table,
    verify_table,
)
from weightstore.demo.command import demo as demo_command
from weightstore.errors import CorruptObject, InterruptedAfterCommit, InvalidInput
from weightstore.forms import (
    diff_json,
    gc_json,
    snapshot_json,
    stats_json,
    tasks_json,
    verify_json,
)

REFS_HELP = (
    "A REF names a snapshot: TASK (its latest), TASK@STEP, TASK:TAG, or a unique prefix of a "
    "snapshot id (at least 4 hex digits)."
)

app = typer.Typer(
    cls=ErrorMappingGroup,
    name="weightstore",
    help=(
        "Versioned, content-addressed, delta-compressed snapshots of neural-network weights, "
        f"per task.\n\n{REFS_HELP}\n\n"
        "Exit codes: 1 error, 2 invalid input, 3 not found, 4 conflict, 5 corrupt or "
        "storage failure, 6 schema outdated, 7 lock held, 8 refused by a service, 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the index database schema.", no_args_is_help=True)
report_app = typer.Typer(help="Reports about the store.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(report_app, name="report")
app.add_typer(service.token_app, name="token")
for _command in (service.serve, service.push, service.pull, service.clone):
    app.command()(_command)
app.command()(info)

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON, alone on stdout.")
]
YesFlag = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
RefArg = Annotated[str, typer.Argument(help="Snapshot ref: TASK, TASK@STEP, TASK:TAG or id.")]


def _emit_json(value: Any) -> None:
    typer.echo(dump_json(value))


@app.callback()
def _root(
    ctx: typer.Context,
    store: Annotated[
        str,
        typer.Option(
            "--store",
            envvar="WEIGHTSTORE_PATH",
            help="Store folder, or s3://bucket/prefix (then --index-url is required; endpoint "
            "and credentials come from the AWS_* environment variables).",
            show_default="./weightstore",
        ),
    ] = "weightstore",
    index_url: Annotated[
        str | None,
        typer.Option(
            "--index-url",
            envvar="WEIGHTSTORE_INDEX_URL",
            help="SQLAlchemy URL of an index database outside the store folder (e.g. "
            "postgresql+psycopg://user@host/db); remembered by the store once given.",
        ),
    ] = None,
) -> None:
    """Global options."""
    st = State(store, index_url)
    ctx.obj = st
    ctx.call_on_close(st.close)


# ------------------------------------------------------------------------------------ writing


@app.command()
def init(
    ctx: typer.Context,
    path: Annotated[
        str | None, typer.Argument(help="Store folder (default: --store).", show_default=False)
    ] = None,
) -> None:
    """Create a store (an existing one is left as it is).

    Example: weightstore init runs/store
    """
    st = state(ctx)
    if path is not None:
        st.path = path
    st.store(create=True)
    where = st.path if "://" in st.path else Path(st.path).resolve()
    stdout().print(f"weightstore ready at {where}")


def _json_or_str(value: str) -> Any:
    def reject(constant: str) -> Any:
        raise ValueError(constant)

    try:
        return json.loads(value, parse_constant=reject)
    except ValueError:
        return value
    except RecursionError:
        raise InvalidInput(f"--meta value is nested too deeply: {value[:40]}...") from None


def parse_meta(items: list[str]) -> dict[str, Any]:
    """``["lr=0.001", "note=hi"]`` -> ``{"lr": 0.001, "note": "hi"}``: values that parse as
    JSON (numbers, booleans, null, lists, objects, quoted strings) are kept as such."""
    meta: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--meta")
        meta[key] = _json_or_str(value)
    return meta


@app.command()
def save(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="Task the snapshot belongs to.")],
    file: Annotated[
        Path,
        typer.Argument(
            help="A .safetensors file, a folder of sharded safetensors with "
            "model.safetensors.index.json, or a torch state_dict file.",
        ),
    ],
    step: Annotated[
        int | None, typer.Option("--step", min=0, help="Training step (unique per task).")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="Tag to set on it (repeatable).")
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option("--parent", help="Snapshot to delta against (default: the task's latest)."),
    ] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Free-text message.")] = "",
    meta: Annotated[
        list[str] | None,
        typer.Option(
            "--meta",
            metavar="KEY=VALUE",
            help="Metadata entry (repeatable); the value is parsed as JSON when it parses, "
            "else kept as a string.",
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="Entry of a torch checkpoint that holds the weights (a/b for deeper nesting); "
            "state_dict, model_state_dict, model and module are found without it.",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Save a weights file as a new snapshot of TASK.

    Tensors already stored are not stored again; tensors that changed since the parent
    snapshot are stored as compressed deltas when that is smaller.

    Example: weightstore save sentiment model.safetensors --step 1200 --tag best
    """
    metadata = parse_meta(meta or [])
    store = state(ctx).store()
    try:
        with ByteProgress(f"saving {task}", estimate_bytes(file)) as bar:
            snap = store.import_file(
                task,
                file,
                step=step,
                tags=tag or [],
                metadata=metadata,
                parent=parent,
                message=message,
                progress=bar,
                key=key,
            )
    except InterruptedAfterCommit as e:
        stderr().print(f"{e}: it is saved")
        snap = store.show(e.snapshot_id)
    if json_out:
        _emit_json(snapshot_json(snap))
        return
    stdout().print(
        result_table(
            [
                ("saved", snap.short_id),
                ("task", snap.task),
                ("step", "-" if snap.step is None else str(snap.step)),
                ("tags", ", ".join(snap.tags) or "-"),
                ("tensors", str(len(snap.tensors))),
                ("size", human_bytes(snap.logical_bytes)),
                ("added to storage", human_bytes(snap.added_bytes)),
            ]
        )
    )


@app.command()
def export(
    ctx: typer.Context,
    ref: RefArg,
    # A str, not a Path: Path drops the trailing "/" that marks a folder, which is refused.
    out: Annotated[
        str,
        typer.Argument(
            help="Safetensors file to write (replaced atomically), or a pipe or character "
            "device to stream into; never a folder or a path inside the store."
        ),
    ],
) -> None:
    """Write a snapshot as a standard safetensors file.

    Example: weightstore export sentiment:best best.safetensors
    """
    store = state(ctx).store(read_only=True)
    snap = store.show(ref)
    with ByteProgress(f"exporting {snap.short_id}", snap.logical_bytes) as bar:
        store.export(snap.id, out, progress=bar)
    stdout().print(
        f"exported {snap.short_id} ({ref_text(snap)}) to {out}: {len(snap.tensors)} tensors, "
        f"{human_bytes(snap.logical_bytes)}"
    )


@app.command()
def tag(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(metavar="REF", help="Snapshot ref (TASK with --delete).")
    ],
    name: Annotated[str, typer.Argument(help="Tag name.")],
    delete: Annotated[
        bool, typer.Option("--delete", "-d", help="Delete tag NAME of task REF instead.")
    ] = False,
) -> None:
    """Point tag NAME of the snapshot's task at it (moving the tag if it exists).

    Example: weightstore tag sentiment@1200 best

    Example: weightstore tag --delete sentiment best
    """
    if delete:
        _untag(ctx, target, name)
        return
    snap = state(ctx).store().tag(target, name)
    stdout().print(f"tagged {snap.short_id} ({ref_text(snap)}) as {snap.task}:{name}")


def _untag(ctx: typer.Context, task: str, name: str) -> None:
    state(ctx).store().untag(task, name)
    stdout().print(f"deleted tag {task}:{name}")


@app.command()
def untag(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="Task the tag belongs to.")],
    name: Annotated[str, typer.Argument(help="Tag name.")],
) -> None:
    """Delete tag NAME of TASK (the snapshot stays).

    Example: weightstore untag sentiment best
    """
    _untag(ctx, task, name)


@app.command()
def rm(ctx: typer.Context, ref: RefArg, yes: YesFlag = False) -> None:
    """Delete one snapshot; its objects stay until gc finds them unreferenced.

    Example: weightstore rm sentiment@1000 --yes
    """
    store = state(ctx).store()
    snap = store.show(ref)
    tags = f", tags {', '.join(snap.tags)}" if snap.tags else ""
    effect = store.deletion_effect(snap.id)
    confirm(f"Delete snapshot {snap.short_id} ({ref_text(snap)}{tags})?", yes=yes)
    store.delete(snap.id)
    stdout().print(f"deleted {snap.short_id} ({ref_text(snap)}); {deletion_text(effect)}")


@app.command()
def prune(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="Task to prune.")],
    keep_last: Annotated[
        int, typer.Option("--keep-last", min=0, help="How many newest snapshots to keep.")
    ],
    include_tagged: Annotated[
        bool, typer.Option("--include-tagged", help="Delete tagged snapshots too.")
    ] = False,
    yes: YesFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Delete all but the newest snapshots of TASK (tagged ones are kept by default).

    Example: weightstore prune sentiment --keep-last 5 --yes
    """
    store = state(ctx).store()
    # One plan: what the prompt names is exactly what is deleted.
    deleted = store.prune(task, keep_last=keep_last, keep_tagged=not include_tagged, dry_run=True)
    if deleted:
        count = store.count_snapshots(task)
        tagged = "" if include_tagged else " and the tagged ones"
        confirm(
            f"Delete {len(deleted)} of the {count} snapshots of {task} "
            f"({', '.join(s.short_id for s in deleted[:5])}"
            f"{', ...' if len(deleted) > 5 else ''}), keeping the newest {keep_last}{tagged}?",
            yes=yes,
        )
        for s in deleted:
            store.delete(s.id)
    if json_out:
        _emit_json({"deleted": [snapshot_json(s) for s in deleted]})
        return
    out = stdout()
    if deleted:
        out.print(log_table([summary_of(s) for s in deleted], width=out.width, title="deleted"))
        out.print(
            f"deleted {len(deleted)} snapshot(s) of {task}; run `weightstore gc` to free "
            "the objects no other snapshot needs"
        )
    else:
        kept = "" if include_tagged else " (tagged snapshots are kept: --include-tagged)"
        out.print(f"nothing to delete: {task} keeps its newest {keep_last} snapshot(s){kept}")


@app.command()
def gc(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Only report what would be removed.")
    ] = False,
    grace: Annotated[
        float | None,
        typer.Option(
            "--grace",
            metavar="SECONDS",
            help="Spare unreferenced objects used more recently than this many seconds "
            "(default: the store setting, 3600). Grace protects saves running now: an object "
            "a save has written or reused but not yet committed is unreferenced, and is "
            "dated when the save pins it, so keep grace above your longest save's "
            "write-to-commit time.",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Remove stored objects that no snapshot needs any more.

    Safe to run while other processes save.

    Example: weightstore gc --dry-run --grace 0
    """
    result = state(ctx).store().gc(grace_seconds=grace, dry_run=dry_run)
    if json_out:
        _emit_json(gc_json(result))
        return
    verb = "would remove" if result.dry_run else "removed"
    stdout().print(
        f"{verb} {result.objects_removed} object(s), {human_bytes(result.bytes_freed)}; "
        f"spared {result.objects_spared} recent unreferenced, kept {result.objects_kept}"
    )


# ------------------------------------------------------------------------------------ reading


@app.command()
def log(
    ctx: typer.Context,
    task: Annotated[str | None, typer.Argument(help="Only this task.")] = None,
    max_count: Annotated[
        int | None, typer.Option("--max-count", "-n", min=1, help="Show at most N snapshots.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """List snapshots, newest first.

    Example: weightstore log sentiment -n 20
    """
    snaps = state(ctx).catalog().log(task, limit=max_count)
    if json_out:
        _emit_json([snapshot_json(s) for s in snaps])
        return
    out = stdout()
    if not snaps:
        out.print("no snapshots")
        return
    out.print(log_table(snaps, width=out.width))


@app.command()
def show(ctx: typer.Context, ref: RefArg, json_out: JsonFlag = False) -> None:
    """Show a snapshot: details, metadata and its tensors.

    Example: weightstore show sentiment:best
    """
    snap = state(ctx).catalog().show(ref)
    if json_out:
        _emit_json(snapshot_json(snap, tensors=True))
        return
    out = stdout()
    out.print(snapshot_table(snap))
    if snap.metadata:
        out.print(metadata_table(snap.metadata))
    out.print(tensor_table(snap.tensors))


@app.command()
def diff(
    ctx: typer.Context,
    ref_a: Annotated[str, typer.Argument(metavar="REF_A", help="Old snapshot ref.")],
    ref_b: Annotated[str, typer.Argument(metavar="REF_B", help="New snapshot ref.")],
    json_out: JsonFlag = False,
) -> None:
    """Compare two snapshots tensor by tensor.

    Lists added, removed and changed tensors (dtype and shape changes noted) and how much is
    unchanged.

    Example: weightstore diff sentiment@1000 sentiment@1200
    """
    d = state(ctx).store(read_only=True).diff(ref_a, ref_b)
    if json_out:
        _emit_json(diff_json(d))
        return
    out = stdout()
    if d.added or d.removed or d.changed:
        out.print(diff_table(d))
    out.print(diff_summary(d))


@app.command()
def verify(
    ctx: typer.Context,
    ref: Annotated[
        str | None, typer.Argument(help="Only this snapshot's objects (default: all).")
    ] = None,
    repair: Annotated[
        list[Path] | None,
        typer.Option(
            "--repair",
            help="Weights file or folder holding the damaged tensors' content: damaged objects "
            "found in it are rewritten, then checked again (repeat for several files).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Re-read stored objects and check their digests.

    Exit status 5 if any is missing or corrupt, naming the snapshots it breaks.

    Example: weightstore verify sentiment:best --repair checkpoints/epoch3.safetensors
    """
    store = state(ctx).store()
    with ByteProgress("verifying", None) as bar:
        result = store.verify(ref, progress=bar)
    if repair and not result.ok:
        outcome = store.repair(repair)
        fixed = sum(1 for v in outcome.values() if v == "repaired")
        for digest, why in sorted(outcome.items()):
            if why != "repaired":
                print_error(f"{digest[:12]}: {why}")
        stderr().print(f"repaired {fixed} of {len(result.problems)} damaged object(s)")
        with ByteProgress("verifying again", None) as bar:
            result = store.verify(ref, progress=bar)
    if json_out:
        _emit_json(verify_json(result))
    elif result.ok:
        stdout().print(
            f"ok: {result.objects_checked} object(s), {human_bytes(result.bytes_checked)} verified"
        )
    else:
        stdout().print(verify_table(result))
        print_error(
            f"{len(result.problems)} of {result.objects_checked} object(s) failed verification"
        )
    if not result.ok:
        raise typer.Exit(CorruptObject.exit_code)


@app.command()
def tasks(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """List tasks with their snapshot count and latest snapshot.

    Example: weightstore tasks --json
    """
    rows = state(ctx).catalog().tasks()
    if json_out:
        _emit_json(tasks_json(rows))
        return
    out = stdout()
    if not rows:
        out.print("no tasks")
        return
    out.print(tasks_table(rows, width=out.width))


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
    st = state(ctx)
    stats = st.store(read_only=True).stats()
    if json_out:
        _emit_json(stats_json(stats))
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
    from weightstore.cli.swap import plot_swaps, swap_table
    from weightstore.loader.bench import measure_swaps

    result = measure_swaps(state(ctx).store(), refs, device, iterations)
    if json_out:
        _emit_json(result)
    else:
        stdout().print(swap_table(result))
    if plot is not None:
        (stderr() if json_out else stdout()).print(f"plot written to {plot_swaps(result, plot)}")


# ------------------------------------------------------------------------------------ demo

app.command("demo")(demo_command)


# ------------------------------------------------------------------------------------ schema


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


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="weightstore")
    except KeyboardInterrupt:  # outside a command, e.g. while closing the store
        print_error("interrupted")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
