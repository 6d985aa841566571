"""``pairx serve``: the review web app (FastAPI, server-rendered Jinja2, vendored htmx).

:func:`create_app` builds the application for one project; :func:`serve` runs it with uvicorn
and the background explanation worker (:mod:`pairx.app.worker`). Pages: ``/`` (the queue),
``/q/{position}`` (one query's review: PAIR-X and, where the project has an interpreter, AMD's
attributes beside it). The browser talks JSON to ``/api/...`` (decisions,
undo, explanation jobs and their progress) and reads images by database id (``/img/{id}``)
and cached explanations by content key (``/expl/{key}.jpg|json``, immutable, ETag). The
routes live in :mod:`pairx.app.routes`, one router per concern; this module assembles them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pairx.app.project import Project
from pairx.app.security import check_bind
from pairx.app.store import has_users
from pairx.core.locks import hold_folder
from pairx.core.optional import require

require("fastapi", "app", "the review app")
require("jinja2", "app", "the review app")
from fastapi import FastAPI  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.staticfiles import StaticFiles  # noqa: E402

from pairx.app.limits import MAX_BODY_BYTES, BodyLimit  # noqa: E402
from pairx.app.routes import auth, decisions, explain, exports, files, pages  # noqa: E402
from pairx.app.routes.bodies import BadRequest  # noqa: E402
from pairx.app.routes.common import (  # noqa: E402
    APP_DIR,
    AppState,
    bad_request_handler,
    not_found_handler,
    validation_handler,
)
from pairx.app.worker import start_worker as start_worker_process  # noqa: E402

__all__ = ["ROUTERS", "create_app", "serve"]

ROUTERS = (auth.router, pages.router, files.router, decisions.router, explain.router,
           exports.router)
"""The app's routers, in the order their routes are matched."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the explanation worker with the app (where asked) and stop it with the app."""
    st: AppState = app.state.pairx
    if st.start_worker:
        st.worker = start_worker_process(st.project)
    yield
    proc = st.worker
    if proc is not None and proc.is_alive():
        proc.terminate()
        proc.join(5)


def create_app(project: Project | str | Path, *, allowed_hosts: set[str] | None = None,
               start_worker: bool = False, max_body_bytes: int = MAX_BODY_BYTES) -> Any:
    """The FastAPI application of one project.

    Parameters
    ----------
    project
        The project (or its folder).
    allowed_hosts
        Host names served besides the loopback names.
    start_worker
        Start the explanation worker with the app (``pairx serve`` does; tests may not).
    max_body_bytes
        The largest request body accepted (a larger one is a 413 before it is parsed).
    """
    proj = project if isinstance(project, Project) else Project.open(project)
    state = AppState.create(proj, allowed_hosts=allowed_hosts, start_worker=start_worker)
    app = FastAPI(title="pairx review", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.pairx = state
    app.state.project = proj
    app.mount("/static", StaticFiles(directory=str(APP_DIR / "static")), name="static")
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # inside the guard: it runs first
    app.middleware("http")(auth.guard)
    app.add_exception_handler(404, not_found_handler)
    app.add_exception_handler(BadRequest, bad_request_handler)
    app.add_exception_handler(RequestValidationError, validation_handler)
    for router in ROUTERS:
        app.include_router(router)
    return app


def serve(root: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          allowed_hosts: set[str] | None = None, worker: bool = True) -> None:
    """Run the review app (blocks); see :func:`create_app`.

    Raises
    ------
    PermissionError
        A non-loopback host and a project without reviewers.
    BusyError
        Another pairx process writes the project (a ``review init`` or another server).
    """
    require("uvicorn", "app")
    import uvicorn

    proj = Project.open(root)
    conn = proj.db()
    try:
        check_bind(host, has_users(conn))
    finally:
        conn.close()
    extra = set(allowed_hosts or set()) | ({host} if host not in ("0.0.0.0", "::") else set())
    with hold_folder(proj.root, "review project"):  # one writer: not beside a review init
        app = create_app(proj, allowed_hosts=extra, start_worker=worker)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
