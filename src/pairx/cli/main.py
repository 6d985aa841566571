"""The ``pairx`` command: one typer app, one module per command group.

Each command module exposes ``register(app: typer.Typer) -> None``. Errors derived from
:class:`pairx.core.errors.PairxError` are printed as one clear line (exit code 2) instead of a
stack trace.
"""

from __future__ import annotations

import importlib
import sys

import typer

from pairx.core.errors import PairxError

# Modules that define commands; each has ``register(app)``.
COMMAND_MODULES: tuple[str, ...] = (
    "pairx.cli.demo",
    "pairx.cli.synth",
    "pairx.cli.merge",
    "pairx.cli.train",
    "pairx.cli.explain",
    "pairx.cli.evaluate",
)

app = typer.Typer(
    name="pairx",
    help="Explain why a re-identification model says two images show the same individual.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """Explain why a re-identification model says two images show the same individual."""


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pairx`` console script."""
    try:
        app(args=argv, prog_name="pairx", standalone_mode=True)
    except PairxError as exc:
        typer.secho(f"pairx: error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
