"""Explanations on demand: ``/api/explain`` queues them, the page polls their progress.

A POST queues the query's candidates not yet cached at one layer (or the AMD view) as a job of
the reviewer's priority, and the next query's candidates as a prefetch of priority 0; both
answer with the layer's status: the cached results by candidate and the progress of its jobs.
``/api/health`` says whether the worker runs.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from pairx.app.amd import AMD_VIEW
from pairx.app.limits import parse_id
from pairx.app.routes.bodies import ExplainBody, parse_body
from pairx.app.routes.common import AppState, State, bad_request, not_found
from pairx.app.store import (
    candidate_ids,
    candidate_images,
    count_queries,
    explanation_keys,
    forget_explanations,
    image_row,
    next_query,
)
from pairx.app.worker import cache_key, enqueue, job_progress, user_priority

__all__ = ["layer_status", "router"]

router = APIRouter()


def layer_status(st: AppState, query: int, layer: str) -> dict[str, Any]:
    """``layer``, the cached ``results`` of ``query`` (cache key by candidate id) and the
    progress of its jobs (:func:`pairx.app.worker.job_progress`)."""
    conn = st.db()
    done = {str(r["candidate"]): r["key"] for r in explanation_keys(conn, query, layer)
            if st.cache.has(r["key"], "json")}
    return {"layer": layer, "results": done, **job_progress(conn, query, layer)}


@router.post("/api/explain")
async def explain(request: Request, st: State) -> Any:
    """Queue the explanations of ``candidates`` (default: all) of ``query`` at ``layer``
    (default: the project's first), and prefetch the next query's unless ``prefetch`` is
    false; the layer's status."""
    b = await parse_body(request, ExplainBody)
    conn = st.db()
    proj = st.project
    try:
        query, layer = b.query, b.layer or proj.layers[0]
        q = image_row(conn, query)
        wanted = list(b.candidates or []) or candidate_ids(conn, query)
        if q is None or layer not in proj.views:
            raise ValueError(f"unknown query or layer {layer!r}" + (
                "" if layer != AMD_VIEW else " (this project has no AMD interpreter: "
                "re-run 'pairx review init' with --interpreter)"))
        rows = candidate_images(conn, query)
        todo = [c for c in wanted if c in rows and not st.cache.has(
            cache_key(proj, layer, q, rows[c]), "json")]
    except (KeyError, TypeError, ValueError) as exc:
        return bad_request(str(exc))
    if todo:  # results whose cache files were evicted are redone
        forget_explanations(conn, query, layer, todo)
        enqueue(conn, proj, query, layer, todo, priority=user_priority())
    nxt = next_query(conn, query)
    if nxt is not None and b.prefetch:
        enqueue(conn, proj, nxt, layer, candidate_ids(conn, nxt), priority=0)
    return layer_status(st, query, layer)


@router.get("/api/explain/{query}")
def explain_status(st: State, query: str, layer: str = "") -> Any:
    """The status of ``query`` at ``layer`` (default: the project's first)."""
    query_id = parse_id(query)
    if query_id is None:
        return not_found()
    return layer_status(st, query_id, layer or st.project.layers[0])


@router.get("/api/health")
def health(st: State) -> Any:
    """``ok``, whether the worker is alive, its process id, and the number of queries."""
    proc = st.worker
    return {"ok": True, "worker": bool(proc is not None and proc.is_alive()),
            "worker_pid": proc.pid if proc is not None else None,
            "queries": count_queries(st.db())}
