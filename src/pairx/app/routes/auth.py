"""Who may talk to the review app: the guard every request passes, and ``/login``.

The guard (an HTTP middleware, :func:`guard`) refuses an unexpected ``Host`` header (400), a
request without a valid reviewer token where the project has reviewers (401), and a POST from
another origin or without its session's CSRF token (403); it gives a new browser its session
cookie and every response the security headers (:mod:`pairx.app.security`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from pairx.app.routes.common import AppState, State
from pairx.app.security import (
    SECURITY_HEADERS,
    SESSION_COOKIE,
    TOKEN_COOKIE,
    csrf_ok,
    host_allowed,
    new_session,
    origin_allowed,
)
from pairx.app.store import has_users, reviewer_of_token

__all__ = ["guard", "router"]

router = APIRouter()

CallNext = Callable[[Request], Awaitable[Response]]


async def guard(request: Request, call_next: CallNext) -> Response:
    """The app's HTTP middleware: the Host header, then :func:`authorise`, then the security
    headers on whatever the answer is."""
    st: AppState = request.app.state.pairx
    if not host_allowed(request.headers.get("host"), st.hosts):
        resp: Response = JSONResponse(
            {"error": "Host: unexpected header; it must be exactly host[:port] naming this "
                      "server (open the address 'pairx serve' printed)"}, status_code=400)
    else:
        resp = await authorise(st, request, call_next)
    for k, v in SECURITY_HEADERS.items():
        resp.headers.setdefault(k, v)
    return resp


async def authorise(st: AppState, request: Request, call_next: CallNext) -> Response:
    """The reviewer (``request.state.reviewer``), the same-origin and CSRF checks of a POST,
    and the session (``request.state.session``, a cookie set on a browser's first request)."""
    path = request.url.path
    conn = st.db()
    reviewer = "local"
    if has_users(conn) and not path.startswith("/static/") and path != "/login":
        name = reviewer_of_token(conn, request.cookies.get(TOKEN_COOKIE))
        if name is None:
            return PlainTextResponse(
                "this project has reviewers: open the link 'pairx review users add' "
                "printed (/login?token=...)", status_code=401)
        reviewer = name
    request.state.reviewer = reviewer
    session = request.cookies.get(SESSION_COOKIE)
    if request.method not in ("GET", "HEAD"):
        if not origin_allowed(request.headers.get("origin"), request.headers.get("host")):
            return PlainTextResponse("cross-origin request refused", status_code=403)
        if not csrf_ok(st.secret, session, request.headers.get("x-csrf-token")):
            return PlainTextResponse("missing or invalid CSRF token; reload the page",
                                     status_code=403)
    fresh = session is None
    request.state.session = session or new_session()
    response = await call_next(request)
    if fresh:
        response.set_cookie(SESSION_COOKIE, request.state.session, httponly=True,
                            samesite="strict")
    return response


@router.get("/login")
def login(st: State, token: str = "") -> Any:
    """Log a reviewer in: their token becomes a cookie, then the queue (303)."""
    if reviewer_of_token(st.db(), token) is None:
        return PlainTextResponse("unknown token", status_code=401)
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
    return resp
