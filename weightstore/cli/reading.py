"""The commands that read a store: log, show, diff, verify and tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from weightstore.cli.app import (
    print_error,
    state,
    stderr,
    stdout,
)
from weightstore.cli.options import JsonFlag, RefArg, emit_json
from weightstore.cli.progress import ByteProgress
from weightstore.cli.render import (
    diff_summary,
    diff_table,
    file_table,
    human_bytes,
    log_table,
    metadata_table,
    snapshot_table,
    tasks_table,
    tensor_table,
    training_table,
    verify_table,
)
from weightstore.errors import CorruptObject
from weightstore.folders import FOLDER_KEY, folder_files
from weightstore.forms import (
    diff_json,
    snapshot_json,
    tasks_json,
    verify_json,
)
from weightstore.types import TRAINING_KEY


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
        emit_json([snapshot_json(s) for s in snaps])
        return
    out = stdout()
    if not snaps:
        out.print("no snapshots")
        return
    out.print(log_table(snaps, width=out.width))


def show(ctx: typer.Context, ref: RefArg, json_out: JsonFlag = False) -> None:
    """Show a snapshot: details, metadata, its files (if saved from a folder) and tensors.

    Example: weightstore show sentiment:best
    """
    snap = state(ctx).catalog().show(ref)
    if json_out:
        emit_json(snapshot_json(snap, tensors=True))
        return
    out = stdout()
    out.print(snapshot_table(snap))
    metadata = {k: v for k, v in snap.metadata.items() if k not in (FOLDER_KEY, TRAINING_KEY)}
    if metadata:
        out.print(metadata_table(metadata))
    files = folder_files(snap.metadata)
    if files:
        out.print(file_table(files, width=out.width))
    training = training_table(snap)
    if training is not None:
        out.print(training)
    out.print(tensor_table(snap.weights, width=out.width))


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
    d = state(ctx).catalog().diff(ref_a, ref_b)
    if json_out:
        emit_json(diff_json(d))
        return
    out = stdout()
    if d.added or d.removed or d.changed:
        out.print(diff_table(d, width=out.width))
    out.print(diff_summary(d))


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
        result = store.verify(ref, progress=bar, total=bar.set_total)
    if repair and not result.ok:
        outcome = store.repair(repair)
        fixed = sum(1 for v in outcome.values() if v == "repaired")
        for digest, why in sorted(outcome.items()):
            if why != "repaired":
                print_error(f"{digest[:12]}: {why}")
        stderr().print(f"repaired {fixed} of {len(result.problems)} damaged object(s)")
        with ByteProgress("verifying again", None) as bar:
            result = store.verify(ref, progress=bar, total=bar.set_total)
    if json_out:
        emit_json(verify_json(result))
    elif result.ok:
        stdout().print(
            f"ok: {result.objects_checked} object(s) verified: "
            f"{human_bytes(result.stored_bytes_checked)} read, decoded to "
            f"{human_bytes(result.bytes_checked)} of tensors"
            + (
                f"; recorded {result.device_checksums_recorded} missing or wrong device checksum(s)"
                if result.device_checksums_recorded
                else ""
            )
        )
    else:
        stdout().print(verify_table(result))
        print_error(
            f"{len(result.problems)} of {result.objects_checked} object(s) failed verification"
        )
    if not result.ok:
        raise typer.Exit(CorruptObject.exit_code)


def tasks(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """List tasks with their snapshot count and latest snapshot.

    Example: weightstore tasks --json
    """
    rows = state(ctx).catalog().tasks()
    if json_out:
        emit_json(tasks_json(rows))
        return
    out = stdout()
    if not rows:
        out.print("no tasks")
        return
    out.print(tasks_table(rows, width=out.width))
