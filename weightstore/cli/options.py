"""Options and arguments the commands share, and the JSON printer behind ``--json``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from weightstore.cli.render import dump_json

REFS_HELP = (
    "A REF names a snapshot: TASK (its latest), TASK@STEP, TASK:TAG, or a unique prefix of a "
    "snapshot id (at least 4 hex digits)."
)

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON, alone on stdout.")
]
YesFlag = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
RefArg = Annotated[str, typer.Argument(help="Snapshot ref: TASK, TASK@STEP, TASK:TAG or id.")]


def emit_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout."""
    typer.echo(dump_json(value))
