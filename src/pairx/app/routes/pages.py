"""The review app's pages: the queue, one query's review, an identity's other images."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from pairx.app.amd import AMD_VIEW
from pairx.app.limits import parse_id
from pairx.app.routes.bodies import BadRequest
from pairx.app.routes.common import State, blind, not_found
from pairx.app.store import worker_error
from pairx.app.views import QueueFilter, identity_images, queue, review

__all__ = ["query_id", "queue_filter", "router"]

router = APIRouter()


def queue_filter(request: Request) -> QueueFilter:
    """The queue's filters from the query string (an unreadable number: no filter)."""
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


def query_id(request: Request, name: str) -> int | None:
    """The id in query parameter ``name`` (``None`` where absent or empty).

    Raises
    ------
    BadRequest
        A value that is not ASCII digits within SQLite's integer range.
    """
    text = request.query_params.get(name, "")
    if text == "":
        return None
    value = parse_id(text)
    if value is None:
        raise BadRequest(f"{name}: must be a non-negative integer (ASCII digits); got {text!r}")
    return value


@router.get("/", response_class=HTMLResponse)
def queue_page(request: Request, st: State) -> Any:
    """The queue (its rows only for an htmx request), one page from ``offset``."""
    f = queue_filter(request)
    data = queue(st.db(), f, offset=query_id(request, "offset") or 0)
    name = "queue_rows.html" if request.headers.get("hx-request") else "queue.html"
    keep = urlencode([(k, v) for k, v in request.query_params.items() if k != "offset"])
    return st.page(request, name, q=data, f=f, blind=blind(request), page_query=keep)


@router.get("/q/{position}", response_class=HTMLResponse)
def review_page(request: Request, st: State, position: str) -> Any:
    """The review of the query at ``position`` (0-based)."""
    index = parse_id(position)
    if index is None:
        return not_found()
    data = review(st.db(), index, blind=blind(request),
                  reviewer=request.state.reviewer)
    if data is None:
        return not_found("no query at this position")
    error = worker_error(st.db())
    return st.page(request, "review.html", r=data, layers=st.project.layers,
                   amd=st.project.interpreter, amd_view=AMD_VIEW,
                   worker_error=error if error is not None else "")


@router.get("/identity/{image}", response_class=HTMLResponse)
def identity(request: Request, st: State, image: str) -> Any:
    """The other images of ``image``'s identity (never ``query``, the query under review)."""
    image_id = parse_id(image)
    if image_id is None:
        return not_found()
    return st.page(request, "identity.html", images=identity_images(
        st.db(), image_id, query_id(request, "query")))
