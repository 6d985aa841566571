"""``pairx serve``: the review web app (FastAPI, server-rendered Jinja2, vendored htmx).

:func:`create_app` builds the application for one project; :func:`serve` runs it with uvicorn
and the background explanation worker (:mod:`pairx.app.worker`). Pages: ``/`` (the queue),
``/q/{position}`` (one query's review: PAIR-X and, where the project has an interpreter, AMD's
attributes beside it). The browser talks JSON to ``/api/...`` (decisions,
undo, explanation jobs and their progress) and reads images by database id (``/img/{id}``)
and cached explanations by content key (``/expl/{key}.jpg|json``, immutable, ETag).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pairx.app.amd import AMD_VIEW
from pairx.app.cache import ExplanationCache
from pairx.app.project import Project
from pairx.app.security import (
    LOOPBACK_NAMES,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    TOKEN_COOKIE,
    check_bind,
    csrf_ok,
    csrf_token,
    host_allowed,
    new_session,
    origin_allowed,
)
from pairx.app.store import has_users, record_decision, reviewer_of_token, transaction, undo_last
from pairx.app.thumbs import Thumbnails
from pairx.app.views import (
    DECISION_FIELDS,
    METRIC_FIELDS,
    QueueFilter,
    export_audit,
    export_decisions,
    identity_images,
    queue,
    review,
    to_csv,
)
from pairx.app.worker import cache_key, enqueue, job_progress, user_priority
from pairx.core.optional import require

require("fastapi", "app", "the review app")
require("jinja2", "app", "the review app")
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import (  # noqa: E402
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles  # noqa: E402
from fastapi.templating import Jinja2Templates  # noqa: E402

__all__ = ["create_app", "serve"]

HERE = Path(__file__).parent
THUMB_SIDES = (160, 480, 1024)


def _secret(project: Project) -> str:
    conn = project.db()
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
        if row is None:
            from secrets import token_hex

            with transaction(conn):
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('secret', ?)",
                             (token_hex(32),))
            row = conn.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
        return str(row[0])
    finally:
        conn.close()


def create_app(project: Project | str | Path, *, allowed_hosts: set[str] | None = None,
               start_worker: bool = False) -> Any:
    """The FastAPI application of one project.

    Parameters
    ----------
    project
        The project (or its folder).
    allowed_hosts
        Host names served besides the loopback names.
    start_worker
        Start the explanation worker with the app (``pairx serve`` does; tests may not).
    """
    proj = project if isinstance(project, Project) else Project.open(project)
    secret = _secret(proj)
    hosts = frozenset(LOOPBACK_NAMES | {h.lower() for h in (allowed_hosts or set())})
    cache = ExplanationCache(proj.cache_dir, int(proj.settings.get("cache_limit_mb", 2048)) << 20)
    thumbs = Thumbnails()
    local = threading.local()
    state: dict[str, Any] = {"worker": None}

    def db() -> Any:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = proj.db()
        return conn

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        if start_worker:
            from pairx.app.worker import start_worker as start

            state["worker"] = start(proj)
        yield
        proc = state.get("worker")
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(5)

    app = FastAPI(title="pairx review", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.project = proj
    app.state.runtime = state
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if not host_allowed(request.headers.get("host"), hosts):
            resp: Any = PlainTextResponse("unexpected Host header", status_code=400)
        else:
            resp = await _authorised(request, call_next)
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    async def _authorised(request: Request, call_next: Any) -> Any:
        path = request.url.path
        conn = db()
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
            if not csrf_ok(secret, session, request.headers.get("x-csrf-token")):
                return PlainTextResponse("missing or invalid CSRF token; reload the page",
                                         status_code=403)
        fresh = session is None
        request.state.session = session or new_session()
        response = await call_next(request)
        if fresh:
            response.set_cookie(SESSION_COOKIE, request.state.session, httponly=True,
                                samesite="strict")
        return response

    def page(request: Request, name: str, **ctx: Any) -> Any:
        ctx.update(csrf=csrf_token(secret, request.state.session),
                   reviewer=request.state.reviewer, project=proj.settings,
                   root=proj.root.name)
        return templates.TemplateResponse(request, name, ctx)

    def not_found(what: str = "not found") -> Any:
        return PlainTextResponse(what, status_code=404)

    @app.exception_handler(404)
    async def _404(request: Request, exc: Any) -> Any:
        return not_found()

    @app.get("/login")
    def login(token: str = "") -> Any:
        if reviewer_of_token(db(), token) is None:
            return PlainTextResponse("unknown token", status_code=401)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return resp

    def _filter(request: Request) -> QueueFilter:
        p = request.query_params

        def num(name: str) -> float | None:
            try:
                return float(p[name]) if p.get(name) else None
            except ValueError:
                return None

        return QueueFilter(species=p.get("species", ""), location=p.get("location", ""),
                           date_from=p.get("date_from", ""), date_to=p.get("date_to", ""),
                           status=p.get("status", ""), min_similarity=num("min_similarity"),
                           max_similarity=num("max_similarity"))

    def _blind(request: Request) -> bool:
        return request.cookies.get("pairx_blind") == "1"

    @app.get("/", response_class=HTMLResponse)
    def queue_page(request: Request) -> Any:
        f = _filter(request)
        start = request.query_params.get("offset", "0")
        data = queue(db(), f, offset=int(start) if start.isdigit() else 0)
        name = "queue_rows.html" if request.headers.get("hx-request") else "queue.html"
        from urllib.parse import urlencode

        keep = urlencode([(k, v) for k, v in request.query_params.items() if k != "offset"])
        return page(request, name, q=data, f=f, blind=_blind(request), page_query=keep)

    @app.get("/q/{position}", response_class=HTMLResponse)
    def review_page(request: Request, position: str) -> Any:
        if not position.isdigit():
            return not_found()
        data = review(db(), int(position), blind=_blind(request),
                      reviewer=request.state.reviewer)
        if data is None:
            return not_found("no query at this position")
        error = db().execute("SELECT value FROM meta WHERE key = 'worker_error'").fetchone()
        return page(request, "review.html", r=data, layers=proj.layers,
                    amd=proj.interpreter, amd_view=AMD_VIEW,
                    worker_error=error[0] if error else "")

    @app.get("/identity/{image}", response_class=HTMLResponse)
    def identity(request: Request, image: str, query: str = "") -> Any:
        if not image.isdigit():
            return not_found()
        return page(request, "identity.html", images=identity_images(
            db(), int(image), int(query) if query.isdigit() else None))

    @app.get("/img/{image}")
    def image_file(request: Request, image: str, side: int = 480) -> Any:
        if not image.isdigit() or side not in THUMB_SIDES:
            return not_found()
        row = db().execute("SELECT * FROM images WHERE id = ?", (int(image),)).fetchone()
        if row is None or row["status"] == "missing":
            return not_found("no such image")
        etag = f'"{row["sha256"][:32]}-{side}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        try:
            data = thumbs.get(row, side)
        except (OSError, ValueError) as exc:
            return PlainTextResponse(f"image {row['image_id']} cannot be decoded: {exc}",
                                     status_code=415)
        return Response(data, media_type="image/jpeg",
                        headers={"ETag": etag, "Cache-Control": "private, no-cache"})

    @app.get("/expl/{name}")
    def explanation_file(request: Request, name: str) -> Any:
        key, _, ext = name.partition(".")
        if ext not in ("jpg", "json"):
            return not_found()
        etag = f'"{key}"'
        if request.headers.get("if-none-match") == etag and cache.has(key, ext):
            return Response(status_code=304, headers={"ETag": etag})
        data = cache.read(key, ext)
        if data is None:
            return not_found("not cached")
        return Response(data, media_type="image/jpeg" if ext == "jpg" else "application/json",
                        headers={"ETag": etag, "Cache-Control": "private, no-cache"})

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def bad(message: str) -> Any:
        return JSONResponse({"error": message}, status_code=400)

    def _decisions(query: int) -> dict[str, str]:
        from pairx.app.store import current_decisions

        return {str(c): d.decision for (_, c), d in current_decisions(db(), query).items()}

    @app.post("/api/decide")
    async def decide(request: Request) -> Any:
        b = await body(request)
        try:
            query, cand = int(b["query"]), int(b["candidate"])
            conf = None if b.get("confidence") in (None, "") else float(b["confidence"])
            tags = [str(t)[:40] for t in b.get("tags", [])][:20]
            event = record_decision(
                db(), query=query, candidate=cand, decision=str(b.get("decision")),
                reviewer=request.state.reviewer, model_digest=proj.model_digest,
                confidence=conf, tags=tags, notes=str(b.get("notes", ""))[:2000],
                explanation=str(b.get("explanation", ""))[:64], blind=_blind(request))
        except (KeyError, TypeError, ValueError) as exc:
            return bad(str(exc).strip("'\"") or "bad request")
        return {"event": event, "decisions": _decisions(query)}

    @app.post("/api/undo")
    async def undo(request: Request) -> Any:
        b = await body(request)
        query = int(b["query"]) if str(b.get("query", "")).isdigit() else None
        row = undo_last(db(), reviewer=request.state.reviewer, model_digest=proj.model_digest,
                        query=query)
        if row is None:
            return {"undone": None, "decisions": _decisions(query) if query else {}}
        return {"undone": {"event": row["id"], "query": row["query"],
                           "candidate": row["candidate"], "decision": row["decision"]},
                "decisions": _decisions(row["query"])}

    def _status(query: int, layer: str) -> dict[str, Any]:
        conn = db()
        done = {str(r["candidate"]): r["key"] for r in conn.execute(
            "SELECT candidate, key FROM explanations WHERE query = ? AND layer = ?",
            (query, layer)) if cache.has(r["key"], "json")}
        return {"layer": layer, "results": done, **job_progress(conn, query, layer)}

    @app.post("/api/explain")
    async def explain(request: Request) -> Any:
        b = await body(request)
        conn = db()
        try:
            query, layer = int(b["query"]), str(b.get("layer") or proj.layers[0])
            q = conn.execute("SELECT * FROM images WHERE id = ?", (query,)).fetchone()
            wanted = [int(c) for c in b.get("candidates") or []] or [
                r[0] for r in conn.execute(
                    "SELECT candidate FROM candidates WHERE query = ? ORDER BY rank", (query,))]
            if q is None or layer not in proj.views:
                raise ValueError(f"unknown query or layer {layer!r}" + (
                    "" if layer != AMD_VIEW else " (this project has no AMD interpreter: "
                    "re-run 'pairx review init' with --interpreter)"))
            rows = {r["id"]: r for r in conn.execute(
                "SELECT i.* FROM candidates c JOIN images i ON i.id = c.candidate "
                "WHERE c.query = ?", (query,))}
            todo = [c for c in wanted if c in rows and not cache.has(
                cache_key(proj, layer, q, rows[c]), "json")]
        except (KeyError, TypeError, ValueError) as exc:
            return bad(str(exc))
        if todo:
            with transaction(conn):  # results whose cache files were evicted are redone
                conn.executemany("DELETE FROM explanations WHERE query = ? AND candidate = ? "
                                 "AND layer = ?", [(query, c, layer) for c in todo])
            enqueue(conn, proj, query, layer, todo, priority=user_priority())
        nxt = conn.execute(
            "SELECT q2.image FROM queries q1 JOIN queries q2 ON q2.position = q1.position + 1 "
            "WHERE q1.image = ?", (query,)).fetchone()
        if nxt is not None and b.get("prefetch", True):
            enqueue(conn, proj, nxt[0], layer, [r[0] for r in conn.execute(
                "SELECT candidate FROM candidates WHERE query = ? ORDER BY rank", (nxt[0],))],
                priority=0)
        return _status(query, layer)

    @app.get("/api/explain/{query}")
    def explain_status(query: str, layer: str = "") -> Any:
        if not query.isdigit():
            return not_found()
        return _status(int(query), layer or proj.layers[0])

    @app.get("/export/{name}")
    def export(name: str) -> Any:
        conn = db()
        if name == "decisions.csv":
            return PlainTextResponse(to_csv(export_decisions(conn), DECISION_FIELDS),
                                     media_type="text/csv")
        if name == "decisions.json":
            return JSONResponse(export_decisions(conn))
        if name == "decisions_metrics.csv":
            return PlainTextResponse(to_csv(export_decisions(conn, with_metrics=True),
                                            DECISION_FIELDS + METRIC_FIELDS),
                                     media_type="text/csv")
        if name == "audit.jsonl":
            return StreamingResponse(export_audit(proj.db()), media_type="application/jsonl")
        return not_found()

    @app.get("/api/health")
    def health() -> Any:
        proc = state.get("worker")
        return {"ok": True, "worker": bool(proc is not None and proc.is_alive()),
                "worker_pid": proc.pid if proc is not None else None,
                "queries": db().execute("SELECT COUNT(*) FROM queries").fetchone()[0]}

    return app


def serve(root: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          allowed_hosts: set[str] | None = None, worker: bool = True) -> None:
    """Run the review app (blocks); see :func:`create_app`.

    Raises
    ------
    PermissionError
        A non-loopback host and a project without reviewers.
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
    app = create_app(proj, allowed_hosts=extra, start_worker=worker)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
