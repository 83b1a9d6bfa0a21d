"""``python -m weightstore.demo``: the same command as ``weightstore demo``."""

import sys

import typer

from weightstore.demo.command import demo
from weightstore.errors import WeightstoreError


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(demo)
    try:
        app(prog_name="python -m weightstore.demo")
    except WeightstoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
