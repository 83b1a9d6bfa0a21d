"""Tidy ``--help``: flags show no ``<bool>`` type column.

Typer labels every option with its type, flags included, which reads as if ``--yes`` took a
value. A flag's metavar is set to an empty string once, on the whole command tree, before
the command line is parsed (the help option is made here too, as click caches it).
"""

from __future__ import annotations

from typing import Any


def quiet_flags(command: Any, ctx: Any) -> None:
    """Blank the type label of every flag of ``command`` and its subcommands."""
    params = [*command.params, command.get_help_option(ctx)]
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        quiet_flags(sub, ctx)
