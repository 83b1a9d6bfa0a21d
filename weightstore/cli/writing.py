"""The commands that add to a store: init, save, export, tag and untag."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from weightstore.cli.app import (
    state,
    stderr,
    stdout,
)
from weightstore.cli.options import JsonFlag, RefArg, emit_json
from weightstore.cli.progress import ByteProgress, estimate_bytes
from weightstore.cli.render import (
    human_bytes,
    ref_text,
    result_table,
)
from weightstore.errors import InterruptedAfterCommit, InvalidInput, InvalidRef, RefNotFound
from weightstore.folders import folder_files
from weightstore.forms import (
    snapshot_json,
)


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


def save(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="Task the snapshot belongs to.")],
    file: Annotated[
        Path,
        typer.Argument(
            help="A .safetensors file, a torch state_dict file, or a model folder (config, "
            "tokenizer, single or sharded safetensors: every file is kept).",
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
    """Save a weights file or a whole model folder as a new snapshot of TASK.

    Tensors already stored are not stored again; tensors that changed since the parent
    snapshot are stored as compressed deltas when that is smaller. A folder keeps every
    file (config, tokenizer, README, subfolders) byte for byte; export gives it back whole.

    \b
    Examples:
      weightstore save sentiment model.safetensors --step 1200 --tag best
      weightstore save team/minilm ./all-MiniLM-L6-v2 --step 0 --tag base
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
        emit_json(snapshot_json(snap))
        return
    stdout().print(
        result_table(
            [
                ("saved", snap.short_id),
                ("task", snap.task),
                ("step", "-" if snap.step is None else str(snap.step)),
                ("tags", ", ".join(snap.tags) or "-"),
                ("tensors", str(len(snap.weights))),
                ("size", human_bytes(snap.logical_bytes)),
                ("added to storage", human_bytes(snap.added_bytes)),
            ]
        )
    )
    if snap.step is None:
        # Without a step it can be named only as the task's latest, by a tag or by its id.
        stderr().print(
            f"note: saved without --step: refer to it as {snap.task} (while it is the latest), "
            f"by a tag, or as {snap.short_id}; pass --step N to name it {snap.task}@N",
            soft_wrap=True,
        )


def export(
    ctx: typer.Context,
    ref: RefArg,
    # A str, not a Path: Path drops the trailing "/" that marks a folder, which is refused.
    out: Annotated[
        str,
        typer.Argument(
            help="Safetensors file to write, or a pipe or character device to stream into; "
            "for a snapshot saved from a folder, the new (or empty) folder to write. Never a "
            "path inside the store."
        ),
    ],
    force: Annotated[
        bool,
        typer.Option("--force", "-f", help="Replace an existing file (atomically)."),
    ] = False,
) -> None:
    """Write a snapshot as a standard safetensors file, or as the folder it was saved from.

    Example: weightstore export sentiment:best best.safetensors
    Example: weightstore export team/minilm:best ./minilm-best
    """
    store = state(ctx).store(read_only=True)
    snap = store.show(ref)
    with ByteProgress(f"exporting {snap.short_id}", snap.logical_bytes) as bar:
        store.export(snap.id, out, progress=bar, overwrite=force)
    files = folder_files(snap.metadata)
    what = f"{len(files)} files, " if files else ""
    stdout().print(
        f"exported {snap.short_id} ({ref_text(snap)}) to {out}: {what}{len(snap.weights)} "
        f"tensors, {human_bytes(snap.logical_bytes)}"
    )


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
    store = state(ctx).store()
    task = store.show(target).task
    try:
        before: str | None = store.resolve(f"{task}:{name}")
    except (RefNotFound, InvalidRef):
        before = None
    snap = store.tag(target, name)
    moved = f" (moved from {before[:12]})" if before and before != snap.id else ""
    stdout().print(f"tagged {snap.short_id} ({ref_text(snap)}) as {snap.task}:{name}{moved}")


def _untag(ctx: typer.Context, task: str, name: str) -> None:
    state(ctx).store().untag(task, name)
    stdout().print(f"deleted tag {task}:{name}")


def untag(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="Task the tag belongs to.")],
    name: Annotated[str, typer.Argument(help="Tag name.")],
) -> None:
    """Delete tag NAME of TASK (the snapshot stays).

    Example: weightstore untag sentiment best
    """
    _untag(ctx, task, name)
