"""The ``weightstore`` command: one thin typer command per :class:`WeightStore` method.

Commands hold no storage logic: they parse arguments, call the facade, and render the result
(``render``), as tables for people or as JSON with ``--json`` for scripts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from weightstore.cli import deleting, reading, service, writing
from weightstore.cli.app import EXIT_INTERRUPTED, ErrorMappingGroup, State, print_error, stdout
from weightstore.cli.info import info
from weightstore.cli.options import REFS_HELP
from weightstore.cli.reports import db_app, report_app
from weightstore.demo.command import demo as demo_command

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


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        stdout().print(f"weightstore {version('weightstore')}")
        raise typer.Exit()


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
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print weightstore's version and exit.",
        ),
    ] = False,
) -> None:
    """Global options."""
    st = State(store, index_url)
    ctx.obj = st
    ctx.call_on_close(st.close)


# In the order a newcomer meets them (--help lists them so): make and fill a store, look at
# it, get weights out, tidy up, share, then the rest.
_commands: tuple[Callable[..., None], ...] = (
    *(writing.init, writing.save, reading.log, reading.show, reading.diff, reading.tasks),
    *(writing.export, writing.tag, writing.untag),
    *(deleting.rm, deleting.prune, deleting.gc, reading.verify),
    *(service.push, service.pull, service.clone, service.serve, info),
)
for _command in _commands:
    app.command()(_command)
app.command("demo")(demo_command)
app.add_typer(report_app, name="report")
app.add_typer(service.token_app, name="token")
app.add_typer(db_app, name="db")


def main() -> None:
    """Console-script entry point."""
    # numpy's OpenBLAS starts a thread per core when numpy is imported, a tenth of a CPU-second
    # per command; weightstore's numpy work is elementwise and never calls BLAS.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        app(prog_name="weightstore")
    except KeyboardInterrupt:  # outside a command, e.g. while closing the store
        print_error("interrupted")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
