"""Decisions and reviewers: the append-only decision log and the reviewers' tokens.

Decisions are events: a decision appends a row, an undo appends a *retraction* of an earlier
row. Triggers refuse ``UPDATE`` and ``DELETE`` on ``events``, so the audit log can only grow.
Reviewer tokens are stored as their SHA-256 only.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pairx.app.store.schema import timestamp, transaction
from pairx.core.errors import InputError

__all__ = ["DECISIONS", "Decision", "add_user", "current_decisions", "has_users", "hash_token",
           "record_decision", "reviewer_of_token", "reviewers", "undo_last"]

DECISIONS = ("match", "no_match", "unsure")
"""What a reviewer can say of a candidate."""


@dataclass(frozen=True)
class Decision:
    """The decision in force on one (query, candidate) pair: the latest unretracted one."""

    event: int
    query: int
    candidate: int
    decision: str
    confidence: float | None
    tags: tuple[str, ...]
    notes: str
    reviewer: str
    created_at: str


def record_decision(
    conn: sqlite3.Connection,
    *,
    query: int,
    candidate: int,
    decision: str,
    reviewer: str,
    model_digest: str,
    confidence: float | None = None,
    tags: Sequence[str] = (),
    notes: str = "",
    explanation: str = "",
    blind: bool = False,
) -> int:
    """Append a decision event (committed and synced when this returns); its id.

    Raises
    ------
    InputError
        Unknown decision, a confidence outside ``[0, 1]``, or a pair that is not a candidate of
        the query.
    """
    if decision not in DECISIONS:
        raise InputError(f"decision must be one of {', '.join(DECISIONS)}; got {decision!r}")
    if confidence is not None and not 0.0 <= float(confidence) <= 1.0:
        raise InputError(f"confidence must lie in [0, 1]; got {confidence}")
    row = conn.execute("SELECT 1 FROM candidates WHERE query = ? AND candidate = ?",
                       (query, candidate)).fetchone()
    if row is None:
        raise InputError(f"image {candidate} is not a candidate of query {query}")
    clean_tags = sorted({t.strip() for t in tags if t.strip()})
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO events (created_at, reviewer, kind, query, candidate, decision, "
            "confidence, tags, notes, model_digest, explanation, blind) "
            "VALUES (?, ?, 'decision', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (timestamp(), reviewer, query, candidate, decision,
             None if confidence is None else float(confidence), json.dumps(clean_tags),
             notes, model_digest, explanation, int(blind)),
        )
    return int(cur.lastrowid or 0)


def undo_last(
    conn: sqlite3.Connection, *, reviewer: str, model_digest: str, query: int | None = None
) -> sqlite3.Row | None:
    """Retract the reviewer's latest decision still in force (optionally within one query).

    Undo is unlimited: each call retracts the next older decision. Returns the retracted event
    (``None``: nothing left to undo).
    """
    where = "AND e.query = ?" if query is not None else ""
    args: tuple[Any, ...] = (reviewer, query) if query is not None else (reviewer,)
    with transaction(conn):
        row = conn.execute(
            "SELECT e.* FROM events e WHERE e.kind = 'decision' AND e.reviewer = ? "
            f"{where} AND NOT EXISTS (SELECT 1 FROM events r WHERE r.retracts = e.id) "
            "ORDER BY e.id DESC LIMIT 1", args).fetchone()
        if row is None:
            return None
        conn.execute(
            "INSERT INTO events (created_at, reviewer, kind, query, candidate, model_digest, "
            "retracts) VALUES (?, ?, 'retraction', ?, ?, ?, ?)",
            (timestamp(), reviewer, row["query"], row["candidate"], model_digest, row["id"]),
        )
    return row


_IN_FORCE = (
    "SELECT e.* FROM events e WHERE e.kind = 'decision' "
    "AND NOT EXISTS (SELECT 1 FROM events r WHERE r.retracts = e.id) "
    "AND e.id = (SELECT MAX(e2.id) FROM events e2 WHERE e2.kind = 'decision' "
    "AND e2.query = e.query AND e2.candidate = e.candidate "
    "AND NOT EXISTS (SELECT 1 FROM events r2 WHERE r2.retracts = e2.id))"
)


def current_decisions(
    conn: sqlite3.Connection, query: int | None = None
) -> dict[tuple[int, int], Decision]:
    """The decision in force per ``(query, candidate)`` (latest unretracted event)."""
    sql = _IN_FORCE + (" AND e.query = ?" if query is not None else "")
    rows = conn.execute(sql, (query,) if query is not None else ()).fetchall()
    return {
        (r["query"], r["candidate"]): Decision(
            event=r["id"], query=r["query"], candidate=r["candidate"], decision=r["decision"],
            confidence=r["confidence"], tags=tuple(json.loads(r["tags"] or "[]")),
            notes=r["notes"], reviewer=r["reviewer"], created_at=r["created_at"])
        for r in rows
    }


def hash_token(token: str) -> str:
    """SHA-256 of a reviewer token (only the hash is stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(conn: sqlite3.Connection, name: str) -> str:
    """Add a reviewer (or give an existing one a new token); the new token, shown once."""
    name = name.strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._- " for c in name):
        raise InputError(f"reviewer names are 1-64 letters, digits, '.', '_', '-' or spaces; "
                         f"got {name!r}")
    token = secrets.token_urlsafe(24)
    with transaction(conn):
        conn.execute(
            "INSERT INTO users (name, token_sha256, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET token_sha256 = excluded.token_sha256",
            (name, hash_token(token), timestamp()))
    return token


def reviewer_of_token(conn: sqlite3.Connection, token: str | None) -> str | None:
    """The reviewer a token belongs to (``None``: unknown token)."""
    if not token:
        return None
    row = conn.execute("SELECT name FROM users WHERE token_sha256 = ?",
                       (hash_token(token),)).fetchone()
    return None if row is None else str(row["name"])


def has_users(conn: sqlite3.Connection) -> bool:
    """Whether the project has reviewers with tokens (then every request needs one)."""
    return conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None


def reviewers(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """The reviewers (``name``, ``created_at``), by name."""
    return conn.execute("SELECT name, created_at FROM users ORDER BY name").fetchall()
