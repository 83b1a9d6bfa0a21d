"""Tidy ``--help``: flags show no ``<bool>`` type column, and help text has no stray breaks.

Typer labels every option with its type, flags included, which reads as if ``--yes`` took a
value; and in its rich mode it keeps the line breaks of docstrings, so a paragraph wrapped at
100 columns in the source breaks mid-sentence on the screen. Both are fixed once, on the whole
command tree, before the command line is parsed (the help option is made here too, as click
caches it).
"""

from __future__ import annotations

import inspect
from typing import Any


def tidy_help(command: Any, ctx: Any) -> None:
    """Blank the type label of every flag of ``command`` and its subcommands, and join the
    lines of each help paragraph (a paragraph starting with ``\\b`` keeps its lines)."""
    params = [*command.params, command.get_help_option(ctx)]
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    if command.help:
        paragraphs = inspect.cleandoc(command.help).split("\n\n")
        command.help = "\n\n".join(
            p if p.startswith("\b") else " ".join(p.split("\n")) for p in paragraphs
        )
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub, ctx)
