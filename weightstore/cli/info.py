"""``weightstore info``: the decode paths in use (compiled kernel or numpy fallback, libzstd,
nvCOMP, CUDA devices, threads), so a user can see why a restore or swap is slow."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from weightstore.cli.app import stdout
from weightstore.cli.render import dump_json
from weightstore.settings import StoreSettings

_HINTS = {
    "numpy+libzstd": "the compiled decoder is not built: reinstall with a C compiler present",
    "numpy+python-zstandard": "no system libzstd found: install libzstd (libzstd1)",
}


def info(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON, alone on stdout.")
    ] = False,
) -> None:
    """Show which decode paths are active and why a restore may be slow.

    Example: weightstore info --json
    """
    # Imported here: it loads torch, which the CLI's other commands must not pay for at start.
    from weightstore.torchcodec.info import decode_info

    found = decode_info(StoreSettings().worker_count())
    if json_out:
        typer.echo(dump_json(found.as_json()))
        return
    table = Table("", "", show_header=False, box=None)
    rows = {
        "CPU decoder": found.decoder + (f" (forced by {found.forced})" if found.forced else ""),
        "compiled kernel": found.extension or "not built",
        "libzstd": found.libzstd or "not found",
        "python-zstandard": found.python_zstandard,
        "nvCOMP": found.nvcomp or "not installed (pip install 'weightstore[gpu]')",
        "CUDA devices": ", ".join(found.cuda_devices) or "none",
        "GPU decoding": "yes" if found.gpu_decode else "no",
        "threads": f"{found.threads} of {found.cpu_count} cores",
        "torch": found.torch,
    }
    for key, value in rows.items():
        table.add_row(key, Text(value))  # the console reads no markup: print as is
    out = stdout()
    out.print(table)
    if found.decoder in _HINTS and not found.forced:
        out.print(f"hint: {_HINTS[found.decoder]}")
