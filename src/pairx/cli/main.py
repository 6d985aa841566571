"""The ``pairx`` command: one typer app, one module per command group.

Each command module exposes ``register(app: typer.Typer) -> None``. :func:`main` is the one
error path: a usage error (a bad option value, a missing argument), an error derived from
:class:`pairx.core.errors.PairxError` and any other exception are each printed as one
``pairx: error: <cause>; <what to do>`` line with exit code 2, never a stack trace (``--debug``
or ``PAIRX_DEBUG=1`` shows it). Ctrl-C exits with 130 and one line; the resumable commands say
that rerunning the same command resumes.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import warnings
from typing import Annotated, Any

import typer

from pairx import __version__
from pairx.core.allocator import tune_allocator
from pairx.core.errors import PairxError
from pairx.core.images import set_max_pixels

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

def _click_class(name: str) -> type[Exception]:
    """click's exception class ``name``, as the typer in use has it (typer may bundle click)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


UsageError = _click_class("UsageError")
ClickException = _click_class("ClickException")

RESUMABLE = frozenset({"explain-batch", "evaluate", "baselines", "train", "amd train",
                       "review init", "synth"})
"""Commands whose rerun, with the same arguments, continues where an interrupted run stopped."""

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
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the Python traceback of an error (also "
                                     "PAIRX_DEBUG=1)."),
    ] = False,
) -> None:
    """Explain why a re-identification model says two images show the same individual."""


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings as one ``pairx: warning:`` line each, without file names or code."""
    typer.secho(f"pairx: warning: {message}", err=True, fg=typer.colors.YELLOW)


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def _command_of(argv: list[str]) -> str:
    """The (first) command name of a command line: its first word that is not an option."""
    return next((a for a in argv if not a.startswith("-")), "")


def _resumable(argv: list[str]) -> bool:
    """Whether the command of ``argv`` (one word, or a group and its command) is resumable."""
    words = [a for a in argv if not a.startswith("-")][:2]
    return bool(words) and (words[0] in RESUMABLE or " ".join(words) in RESUMABLE)


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"pairx: error: {message}", err=True, fg=typer.colors.RED)
    sys.exit(code)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _usage_message(exc: Exception) -> str:
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "pairx"
    text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return f"{_one_line(text).rstrip('.')}; see '{path} --help'"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pairx`` console script (the one error path, see the module)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args[: args.index(_command_of(args))] if _command_of(args) else (
        "--debug" in args)
    debug = debug or os.environ.get("PAIRX_DEBUG", "") not in ("", "0")
    tune_allocator()
    set_max_pixels(None)  # each command line starts from the default (--max-pixels sets it)
    warnings.showwarning = _show_warning
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        code = app(args=args, prog_name="pairx", standalone_mode=False)
    except UsageError as exc:
        _fail(_usage_message(exc))
    except (typer.Abort, KeyboardInterrupt, EOFError):
        code = 130
    except ClickException as exc:
        _fail(f"{_usage_message(exc)}")
    except PairxError as exc:
        if debug:
            traceback.print_exc()
        _fail(_one_line(str(exc)))
    except OSError as exc:  # a file or folder the checks could not foresee (a full disk...)
        if debug:
            traceback.print_exc()
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{_one_line(exc.strerror or str(exc))}{where}; check that the path exists, that "
              "you may read or write it and that the disk has room, then rerun")
    except Exception as exc:  # the last resort: one line, never a traceback
        if debug:
            traceback.print_exc()
        _fail(f"unexpected {type(exc).__name__}: {_one_line(str(exc)) or 'no details'}; this "
              "is a pairx bug or an input it does not expect: rerun with --debug (or "
              "PAIRX_DEBUG=1) for the traceback and report it")
    if code == 130:
        again = "; rerun the same command to resume where it stopped" if _resumable(args) else ""
        typer.secho(f"pairx: interrupted{again}", err=True, fg=typer.colors.YELLOW)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
