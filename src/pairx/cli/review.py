"""``pairx review init|users`` and ``pairx serve``: the review app's projects and server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pairx.cli.common import (
    InputSizeOpt,
    MaxPixelsOpt,
    MeanOpt,
    ModelOpt,
    StdOpt,
    WeightsOpt,
    check_output_folder,
    preprocessing_options,
)

review_app = typer.Typer(help="Review projects: the candidates experts verify in pairx serve.",
                         no_args_is_help=True, add_completion=False, rich_markup_mode=None)
users_app = typer.Typer(help="Reviewers with tokens.", no_args_is_help=True,
                        add_completion=False, rich_markup_mode=None)
review_app.add_typer(users_app, name="users")

ProjArg = Annotated[Path, typer.Argument(help="Project folder.", metavar="PROJ")]


@review_app.command("init")
def init_command(
    proj: ProjArg,
    data: Annotated[Path, typer.Option("--data", help="Dataset folder with metadata.csv.",
                                       metavar="DIR")],
    model: ModelOpt = "default",
    weights: WeightsOpt = None,
    size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    layer: Annotated[list[str] | None, typer.Option(
        "--layer", help="PAIR-X layer(s) the app offers (repeatable); default: the model's.",
        metavar="NAME")] = None,
    k: Annotated[int, typer.Option("--k", help="Candidates stored per query.",
                                   min=1, max=10_000)] = 10,
    queries: Annotated[str, typer.Option(
        help="Split whose images are the queries, or 'all' (leave-one-out).")] = "test",
    gallery: Annotated[str, typer.Option(
        help="'rest' (everything that is not a query), 'all', or a split name.")] = "rest",
    replace_model: Annotated[bool, typer.Option(
        "--replace-model", help="Accept a model whose weights differ from the project's.")
    ] = False,
    interpreter: Annotated[str, typer.Option(
        help="AMD interpreter shown beside PAIR-X: 'auto' (the project's, else the shipped one "
             "where it fits the model), 'default', a 'pairx amd train' run folder, or 'none'.")
    ] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Create or update PROJ: embed every image of DIR once, store each query's exact top-k.

    Re-running is incremental (new or changed images only) and resumes an interrupted run.
    """
    check_output_folder(proj, "PROJ")
    from pairx.app.project import init_project
    from pairx.models.loaders import load_model
    from pairx.models.provenance import require_trained

    def load(spec: str, weights: Path | None = None, **options: Any) -> object:
        net = load_model(spec, weights=weights, **options)
        require_trained(net, allow=False, hint="Review projects need a trained model: pass "
                        "--weights FILE or a trained model file as --model.")
        return net

    s = init_project(proj, data=data, model=model, weights=weights, layers=layer or None, k=k,
                     queries=queries, gallery=gallery, replace_model=replace_model,
                     progress=not quiet, load=load,
                     model_options=preprocessing_options(size, mean, std),
                     interpreter=interpreter)
    for problem in s.problems:
        typer.secho(f"pairx: warning: skipped {problem}", err=True, fg=typer.colors.YELLOW)
    rate = f" ({s.images_per_second:.1f} images/s)" if s.embedded else ""
    typer.echo(f"{proj}: {s.images} images, {s.embedded} embedded{rate}, {s.reused} reused; "
               f"{s.queries} queries x top-{k} of {s.gallery} gallery images "
               f"(exact search {s.seconds_search:.2f} s)")
    amd = s.interpreter
    typer.echo("AMD attributes beside PAIR-X: " + (
        f"interpreter {amd['spec']} ({len(amd['attributes'])} attributes)" if amd else
        "none (no interpreter for this model; train one with 'pairx amd train')"))
    typer.echo(f"open it with: pairx serve {proj}")


@users_app.command("add")
def users_add(proj: ProjArg,
              name: Annotated[str, typer.Argument(help="Reviewer name.", metavar="NAME")]
              ) -> None:
    """Add reviewer NAME (or renew their token); prints the login token once."""
    from pairx.app.project import Project
    from pairx.app.store import add_user

    p = Project.open(proj)
    conn = p.db()
    try:
        token = add_user(conn, name)
    finally:
        conn.close()
    typer.echo(f"reviewer {name!r}: open http://HOST:PORT/login?token={token}")
    typer.echo("(the token is shown only now; every request of the app now needs a token)")


@users_app.command("list")
def users_list(proj: ProjArg) -> None:
    """List the reviewers."""
    from pairx.app.project import Project

    conn = Project.open(proj).db()
    try:
        for row in conn.execute("SELECT name, created_at FROM users ORDER BY name"):
            typer.echo(f"{row['name']}\t{row['created_at']}")
    finally:
        conn.close()


def serve_command(
    proj: ProjArg,
    host: Annotated[str, typer.Option(help="Interface to bind (default: this machine only).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.",
                                      min=1, max=65535)] = 8000,
    allow_host: Annotated[list[str] | None, typer.Option(
        "--allow-host", help="Extra Host header name to accept (a reverse proxy's name).",
        metavar="NAME")] = None,
    no_worker: Annotated[bool, typer.Option(
        "--no-worker", help="Decisions only: start no PAIR-X worker (no explanations).")
    ] = False,
) -> None:
    """Serve the review app of PROJ (http://HOST:PORT), with PAIR-X on demand."""
    from pairx.app.project import Project
    from pairx.app.security import check_bind
    from pairx.app.server import serve
    from pairx.app.store import has_users
    from pairx.core.errors import InputError

    conn = Project.open(proj).db()
    try:
        check_bind(host, has_users(conn))  # refused before the URL is printed
    except PermissionError as exc:
        raise InputError(str(exc)) from None
    finally:
        conn.close()
    _check_port_free(host, port)
    try:
        typer.echo(f"pairx review: http://{host}:{port}/  (Ctrl-C stops)")
        serve(proj, host=host, port=port, allowed_hosts=set(allow_host or []),
              worker=not no_worker)
    except PermissionError as exc:
        raise InputError(str(exc)) from exc


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another program listens on, or a host this machine has no address for."""
    import socket

    from pairx.core.errors import InputError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise InputError(f"--host {host!r} is not an address of this machine ({exc}); use "
                         "127.0.0.1, or 0.0.0.0 for every interface") from None
    family, kind, _, _, address = infos[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); stop the "
                             "program using that port or pass another --port") from None


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
    app.command("serve")(serve_command)
