"""The exports: ``/export/decisions.csv|json``, ``/export/decisions_metrics.csv`` (joined with
the metrics of the explanation on screen) and ``/export/audit.jsonl`` (every event)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from pairx.app.routes.common import State, not_found
from pairx.app.views import (
    DECISION_FIELDS,
    METRIC_FIELDS,
    export_audit,
    export_decisions,
    to_csv,
)

__all__ = ["router"]

router = APIRouter()


@router.get("/export/{name}")
def export(st: State, name: str) -> Any:
    """Export ``name`` (404 for any other name)."""
    conn = st.db()
    if name == "decisions.csv":
        return PlainTextResponse(to_csv(export_decisions(conn), DECISION_FIELDS),
                                 media_type="text/csv")
    if name == "decisions.json":
        return JSONResponse(export_decisions(conn))
    if name == "decisions_metrics.csv":
        return PlainTextResponse(to_csv(export_decisions(conn, with_metrics=True),
                                        DECISION_FIELDS + METRIC_FIELDS),
                                 media_type="text/csv")
    if name == "audit.jsonl":  # streamed on a connection of its own
        return StreamingResponse(export_audit(st.project.db()), media_type="application/jsonl")
    return not_found()
