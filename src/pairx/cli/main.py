"""The ``pairx`` command: one typer app, one module per command group.

Each command module exposes ``register(app: typer.Typer) -> None``. Errors derived from
:class:`pairx.core.errors.PairxError` are printed as one clear line (exit code 2) instead of a
stack trace.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import Annotated, Any

import typer

from pairx import __version__
from pairx.core.allocator import tune_allocator
from pairx.core.errors import PairxError

# Modules that define commands; each has ``register(app)``.
COMMAND_MODULES: tuple[str, ...] = (
    "pairx.cli.demo",
    "pairx.cli.synth",
    "pairx.cli.merge",
    "pairx.cli.train",
    "pairx.cli.explain",
    "pairx.cli.compare",
    "pairx.cli.baselines",
    "pairx.cli.zhu",
    "pairx.cli.amd",
    "pairx.cli.parts",
    "pairx.cli.evaluate",
    "pairx.cli.batch",
    "pairx.cli.calibrate",
    "pairx.cli.review",
)

app = typer.Typer(
    name="pairx",
    help="Explain why a re-identification model says two images show the same individual.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: paragraphs as written, flags without placeholders
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pairx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True,
                     help="Print the pairx version and exit."),
    ] = False,
) -> None:
    """Explain why a re-identification model says two images show the same individual."""


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings as one ``pairx: warning:`` line each, without file names or code."""
    typer.secho(f"pairx: warning: {message}", err=True, fg=typer.colors.YELLOW)


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pairx`` console script."""
    tune_allocator()
    warnings.showwarning = _show_warning
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        app(args=argv, prog_name="pairx", standalone_mode=True)
    except PairxError as exc:
        typer.secho(f"pairx: error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
