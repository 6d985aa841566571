"""The reviewer's decisions: ``/api/decide`` appends one, ``/api/undo`` retracts the latest.

Both answer with the decisions now in force on the query (``{candidate id: decision}``).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi import APIRouter, Request

from pairx.app.routes.bodies import DecideBody, UndoBody, parse_body
from pairx.app.routes.common import State, bad_request, blind
from pairx.app.store import current_decisions, record_decision, undo_last

__all__ = ["decisions_of", "router"]

router = APIRouter()


def decisions_of(conn: sqlite3.Connection, query: int) -> dict[str, str]:
    """The decisions in force on ``query``'s candidates, by candidate id (a string)."""
    return {str(c): d.decision for (_, c), d in current_decisions(conn, query).items()}


@router.post("/api/decide")
async def decide(request: Request, st: State) -> Any:
    """Record a decision on one candidate (400 with the reason when it is not valid)."""
    b = await parse_body(request, DecideBody)
    try:
        event = record_decision(
            st.db(), query=b.query, candidate=b.candidate, decision=b.decision,
            reviewer=request.state.reviewer, model_digest=st.project.model_digest,
            confidence=b.confidence, tags=[t[:40] for t in b.tags][:20], notes=b.notes[:2000],
            explanation=(b.explanation or "")[:64], blind=blind(request))
    except ValueError as exc:
        return bad_request(str(exc))
    return {"event": event, "decisions": decisions_of(st.db(), b.query)}


@router.post("/api/undo")
async def undo(request: Request, st: State) -> Any:
    """Retract the reviewer's latest decision in force (within ``query`` when given)."""
    query = (await parse_body(request, UndoBody)).query
    row = undo_last(st.db(), reviewer=request.state.reviewer,
                    model_digest=st.project.model_digest, query=query)
    if row is None:
        return {"undone": None, "decisions": decisions_of(st.db(), query) if query else {}}
    return {"undone": {"event": row["id"], "query": row["query"],
                       "candidate": row["candidate"], "decision": row["decision"]},
            "decisions": decisions_of(st.db(), row["query"])}
