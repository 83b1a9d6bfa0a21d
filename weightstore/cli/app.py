"""The CLI's plumbing: error mapping, the store's lifetime, consoles and confirmation.

:class:`ErrorMappingGroup` wraps every command of the app: a :class:`WeightstoreError` becomes
``error: <message>`` in red on stderr and exit status ``exc.exit_code``; Ctrl-C becomes
status 130. Anything else propagates with its traceback. The store is opened on first use by a
command and closed when the root context closes, whatever happened.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from weightstore.cli.helptext import tidy_help
from weightstore.errors import InvalidInput, WeightstoreError

if TYPE_CHECKING:  # imported when a command opens the store: it brings torch and the codec
    from weightstore.catalog import Catalog
    from weightstore.store import WeightStore

EXIT_INTERRUPTED = 130


# Output piped away from any terminal (logs, CI) gets wide tables instead of rich's 80-column
# default.
_PIPE_WIDTH = 160


# markup=False: messages carry paths, names and metadata, and "[/x]" in a path must print as
# itself, not be read as a closing tag (a MarkupError after the work was done).
def stdout() -> Console:
    console = Console(highlight=False, markup=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, markup=False, width=_piped_width())
    return console


def _piped_width() -> int:
    """For ``| less`` or ``| grep`` in a terminal: that terminal's width (stderr still shows
    it); with no terminal anywhere, a wide log line."""
    for stream in (sys.stderr, sys.stdin):
        try:
            if stream.isatty():
                return os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            continue
    return _PIPE_WIDTH


def stderr() -> Console:
    return Console(stderr=True, highlight=False, markup=False)


def print_error(message: str) -> None:
    stderr().print(Text(f"error: {message}", style="red"), soft_wrap=True)


class ErrorMappingGroup(TyperGroup):
    """A typer group that maps weightstore errors and Ctrl-C to messages and exit codes."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        # Before parsing: ``--help`` is answered while the arguments are parsed.
        tidy_help(self, self.context_class(self, info_name=info_name, parent=parent, **extra))
        return super().make_context(info_name, args, parent, **extra)

    # ``ctx`` is typer's (vendored) click Context; typed Any so as not to import a private module.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except WeightstoreError as exc:
            print_error(str(exc) or type(exc).__name__)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print_error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None


@dataclass
class State:
    """What the app callback learned (where the store is); the open store, once opened."""

    path: str  # as given: a folder, or a URL that open() refuses by name
    index_url: str | None
    _store: WeightStore | None = field(default=None, repr=False)
    _catalog: Catalog | None = field(default=None, repr=False)

    def store(self, *, create: bool = False, read_only: bool = False) -> WeightStore:
        """The store at ``path``; without ``create`` a missing store is an error, so a typo
        in ``--store`` does not leave an empty store behind. ``read_only``: for commands that
        only read, which then work on read-only media and write nothing."""
        if self._store is None:
            from weightstore.store import WeightStore

            self._store = WeightStore.open(
                self.path, index_url=self.index_url, create=create, read_only=read_only
            )
        return self._store

    def catalog(self) -> Catalog:
        """A read-only view of the store's index for listing commands: opens in a fraction of
        a second, without torch (see :mod:`weightstore.catalog`)."""
        if self._catalog is None:
            from weightstore.catalog import Catalog  # SQLAlchemy: only where a query runs

            self._catalog = Catalog.open(self.path, index_url=self.index_url)
        return self._catalog

    def close(self) -> None:
        store, self._store = self._store, None
        catalog, self._catalog = self._catalog, None
        try:
            if store is not None:
                store.close()
        finally:
            if catalog is not None:
                catalog.close()


def state(ctx: typer.Context) -> State:
    found = ctx.find_object(State)
    if found is None:  # pragma: no cover - the app callback always sets it
        raise RuntimeError("weightstore CLI state missing: invoke through the app")
    return found


def is_interactive() -> bool:
    """Whether a person can answer a prompt (stdin is a terminal)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def confirm(question: str, *, yes: bool) -> None:
    """Go on if ``yes`` or the user agrees; refuse without a terminal to ask on (exit 2), stop
    with status 1 if the user declines."""
    if yes:
        return
    if not is_interactive():
        raise InvalidInput(
            f"{question.rstrip('?')}: refusing without confirmation because "
            "stdin is not a terminal; pass --yes to go ahead"
        )
    if not typer.confirm(question, default=False, err=True):
        stderr().print("aborted: nothing was changed")
        raise typer.Exit(1)
