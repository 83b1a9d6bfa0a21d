"""The commands that remove: rm, prune and gc."""

from __future__ import annotations

from typing import Annotated

import typer

from weightstore.cli.app import (
    confirm,
    state,
    stdout,
)
from weightstore.cli.options import JsonFlag, RefArg, YesFlag, emit_json
from weightstore.cli.render import (
    deletion_text,
    human_bytes,
    log_table,
    ref_text,
    summary_of,
)
from weightstore.forms import (
    gc_json,
    snapshot_json,
)


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
        freeable = store.gc(grace_seconds=0, dry_run=True)
    if json_out:
        emit_json({"deleted": [snapshot_json(s) for s in deleted]})
        return
    out = stdout()
    if deleted:
        out.print(log_table([summary_of(s) for s in deleted], width=out.width, title="deleted"))
        if freeable.objects_removed:
            then = (
                f"run `weightstore gc` to free {freeable.objects_removed} object(s), "
                f"{human_bytes(freeable.bytes_freed)}"
            )
        else:
            then = (
                "this frees no storage: their objects are used by the snapshots kept, or kept "
                "as delta bases of them (`weightstore report storage` shows those)"
            )
        out.print(f"deleted {len(deleted)} snapshot(s) of {task}; {then}")
    else:
        kept = "" if include_tagged else " (tagged snapshots are kept: --include-tagged)"
        out.print(f"nothing to delete: {task} keeps its newest {keep_last} snapshot(s){kept}")


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
        emit_json(gc_json(result))
        return
    verb = "would remove" if result.dry_run else "removed"
    stdout().print(
        f"{verb} {result.objects_removed} object(s), {human_bytes(result.bytes_freed)}; "
        f"spared {result.objects_spared} recent unreferenced, kept {result.objects_kept}"
    )
