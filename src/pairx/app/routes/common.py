"""What the review app's routers share: the app's state, its dependency, response helpers."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.templating import Jinja2Templates

from pairx.app.cache import ExplanationCache
from pairx.app.project import Project
from pairx.app.security import LOOPBACK_NAMES, csrf_token
from pairx.app.store import project_secret
from pairx.app.thumbs import Thumbnails

__all__ = ["APP_DIR", "AppState", "State", "bad_request", "bad_request_handler", "blind",
           "get_state", "not_found", "not_found_handler", "validation_handler"]

APP_DIR = Path(__file__).parent.parent
"""The app's package folder (``templates/``, ``static/``)."""


@dataclass
class AppState:
    """Everything the routes of one app share (``app.state.pairx``).

    Attributes
    ----------
    project
        The project served.
    secret
        The project's secret, the key of the CSRF tokens.
    hosts
        Host header names served (the loopback names and the allowed hosts).
    cache
        The explanation cache.
    thumbs
        Image thumbnails, in memory.
    templates
        The page templates.
    start_worker
        Whether the app starts the explanation worker when it starts.
    worker
        The worker process once started (``None``: none).
    """

    project: Project
    secret: str
    hosts: frozenset[str]
    cache: ExplanationCache
    thumbs: Thumbnails
    templates: Jinja2Templates
    start_worker: bool = False
    worker: BaseProcess | None = None
    local: threading.local = field(default_factory=threading.local, repr=False)

    @classmethod
    def create(cls, project: Project, *, allowed_hosts: set[str] | None = None,
               start_worker: bool = False) -> AppState:
        """The state of an app serving ``project`` (its secret is created on first use)."""
        conn = project.db()
        try:
            secret = project_secret(conn)
        finally:
            conn.close()
        names = {h.lower() for h in (allowed_hosts or set())}
        hosts = frozenset(LOOPBACK_NAMES | names  # an IPv6 address is bracketed in Host
                          | {f"[{h}]" for h in names if ":" in h and not h.startswith("[")})
        cache = ExplanationCache(project.cache_dir,
                                 int(project.settings.get("cache_limit_mb", 2048)) << 20)
        return cls(project=project, secret=secret, hosts=hosts, cache=cache,
                   thumbs=Thumbnails(),
                   templates=Jinja2Templates(directory=str(APP_DIR / "templates")),
                   start_worker=start_worker)

    def db(self) -> sqlite3.Connection:
        """This thread's connection to the project's database (opened on first use)."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = self.project.db()
        return conn

    def page(self, request: Request, name: str, **ctx: Any) -> Any:
        """Template ``name`` rendered with ``ctx`` and what every page shows (the CSRF
        token of the browser's session, the reviewer, the project)."""
        ctx.update(csrf=csrf_token(self.secret, request.state.session),
                   reviewer=request.state.reviewer, project=self.project.settings,
                   root=self.project.root.name)
        return self.templates.TemplateResponse(request, name, ctx)


async def get_state(request: Request) -> AppState:
    """The app's :class:`AppState` (a FastAPI dependency; see :data:`State`)."""
    state: AppState = request.app.state.pairx
    return state


State = Annotated[AppState, Depends(get_state)]
"""A route's parameter ``st: State`` receives the app's :class:`AppState`."""


def not_found(what: str = "not found") -> PlainTextResponse:
    """A plain-text 404 saying ``what``."""
    return PlainTextResponse(what, status_code=404)


async def not_found_handler(request: Request, exc: Any) -> PlainTextResponse:
    """Every 404 (unknown paths too) as a plain ``not found``."""
    return not_found()


def bad_request(message: str) -> JSONResponse:
    """A 400 with ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=400)


async def bad_request_handler(request: Request, exc: Exception) -> JSONResponse:
    """A :class:`~pairx.app.routes.bodies.BadRequest` as a 400 ``{"error": message}``."""
    return bad_request(str(getattr(exc, "message", exc)))


async def validation_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own parameter checks as a 400 that names the parameter and the problem
    (instead of a 422 with pydantic's error list)."""
    parts = []
    for err in getattr(exc, "errors", list)():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body")]
        parts.append(f"{'.'.join(loc) or 'request'}: {str(err.get('msg', 'invalid')).lower()}")
    return bad_request("; ".join(parts) or "bad request")


def blind(request: Request) -> bool:
    """Whether the browser is in blind mode (scores and ranks hidden)."""
    return request.cookies.get("pairx_blind") == "1"
