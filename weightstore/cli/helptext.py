"""Tidy ``--help``: flags show no ``<bool>`` type column, values are named for what they are
(``--step N``, ``REF``) rather than by Python type (``<int range>``, ``<str>``), and help text
has no stray breaks.

Typer labels every parameter with its Python type, flags included, which reads as if ``--yes``
took a value; and in its rich mode it keeps the line breaks of docstrings, so a paragraph
wrapped at 100 columns in the source breaks mid-sentence on the screen. All is fixed once, on
the whole command tree, before the command line is parsed (the help option is made here too,
as click caches it).
"""

from __future__ import annotations

import inspect
from typing import Any

# Option values named as git and pip name theirs; the rest by kind, or after their option.
_VALUES = {
    "store": "PATH|s3://...",
    "index_url": "URL",
    "parent": "REF",
    "message": "TEXT",
    "device": "DEVICE",
    "host": "ADDRESS",
    "port": "PORT",
    "repair": "FILE",
    "max_upload": "BYTES",
    "max_json": "BYTES",
}
_BY_TYPE = {"int": "N", "float": "X", "Path": "PATH"}


def tidy_help(command: Any, ctx: Any) -> None:
    """Blank the type label of every flag of ``command`` and its subcommands, name every
    other value, and join the lines of each help paragraph (a paragraph starting with
    ``\\b`` keeps its lines)."""
    params = [*command.params, command.get_help_option(ctx)]
    for param in params:
        if param is None or param.metavar is not None:
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.param_type_name == "argument":
            # Its name says what it is; typer would add a <str> beside it.
            param.metavar = str(param.name).upper() + ("..." if param.nargs != 1 else "")
            param.display_type_rich = lambda ctx: None
        else:
            kind = str(param.bare_type()).removeprefix("list[").removesuffix("]")
            named = max(param.opts, key=len).lstrip("-").replace("-", "_").upper()
            param.metavar = _VALUES.get(param.name) or _BY_TYPE.get(kind) or named
    if command.help:
        paragraphs = inspect.cleandoc(command.help).split("\n\n")
        command.help = "\n\n".join(
            p if p.startswith("\b") else " ".join(p.split("\n")) for p in paragraphs
        )
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub, ctx)
