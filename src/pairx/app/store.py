"""The review project's database: SQLite in WAL mode, an append-only decision log.

One file, ``review.sqlite``, per project (:mod:`pairx.app.project`). Every connection runs in
WAL mode with ``synchronous=FULL``, so a decision whose ``INSERT`` has been committed (and
acknowledged to the browser) survives a ``kill -9`` of the server or a power cut. The schema
is versioned with ``PRAGMA user_version`` and brought up to date by :data:`MIGRATIONS`.

Decisions are events: a decision appends a row, an undo appends a *retraction* of an earlier
row. Triggers refuse ``UPDATE`` and ``DELETE`` on ``events``, so the audit log can only grow.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairx.core.errors import InputError, PairxError

__all__ = [
    "DECISIONS",
    "MIGRATIONS",
    "Decision",
    "StoreError",
    "add_user",
    "connect",
    "current_decisions",
    "record_decision",
    "reviewer_of_token",
    "undo_last",
]

DECISIONS = ("match", "no_match", "unsure")
"""What a reviewer can say of a candidate."""

_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    image_id TEXT NOT NULL UNIQUE,
    identity TEXT NOT NULL,
    path TEXT NOT NULL,
    split TEXT NOT NULL DEFAULT '',
    species TEXT NOT NULL DEFAULT '',
    location TEXT NOT NULL DEFAULT '',
    captured_at TEXT NOT NULL DEFAULT '',
    viewpoint TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'missing', 'unreadable')),
    problem TEXT NOT NULL DEFAULT '',
    bbox TEXT NOT NULL DEFAULT ''
);
CREATE TABLE embeddings (
    image INTEGER PRIMARY KEY REFERENCES images(id),
    sha256 TEXT NOT NULL,
    model_digest TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE queries (
    image INTEGER PRIMARY KEY REFERENCES images(id),
    position INTEGER NOT NULL UNIQUE,
    top REAL,
    n INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE candidates (
    query INTEGER NOT NULL REFERENCES images(id),
    rank INTEGER NOT NULL,
    candidate INTEGER NOT NULL REFERENCES images(id),
    similarity REAL NOT NULL,
    PRIMARY KEY (query, rank)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('decision', 'retraction')),
    query INTEGER NOT NULL REFERENCES images(id),
    candidate INTEGER NOT NULL REFERENCES images(id),
    decision TEXT CHECK (decision IS NULL OR decision IN ('match', 'no_match', 'unsure')),
    confidence REAL CHECK (confidence IS NULL OR (confidence >= 0 AND confidence <= 1)),
    tags TEXT NOT NULL DEFAULT '[]',
    notes TEXT NOT NULL DEFAULT '',
    model_digest TEXT NOT NULL,
    explanation TEXT NOT NULL DEFAULT '',
    blind INTEGER NOT NULL DEFAULT 0,
    retracts INTEGER REFERENCES events(id)
);
CREATE INDEX events_pair ON events (query, candidate);
CREATE INDEX events_retracts ON events (retracts);
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: undo appends a retraction'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: undo appends a retraction'); END;
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    query INTEGER NOT NULL REFERENCES images(id),
    layer TEXT NOT NULL,
    candidates TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed')),
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL,
    updated_at REAL
);
CREATE INDEX jobs_open ON jobs (status, priority, id);
CREATE TABLE explanations (
    query INTEGER NOT NULL,
    candidate INTEGER NOT NULL,
    layer TEXT NOT NULL,
    key TEXT NOT NULL,
    seconds REAL NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    PRIMARY KEY (query, candidate, layer)
);
"""

MIGRATIONS: tuple[str, ...] = (_V1,)
"""SQL scripts; script ``i`` brings a database from ``user_version`` ``i`` to ``i + 1``."""


class StoreError(PairxError):
    """The review database cannot be used (newer schema, not a pairx database...)."""


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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"


def connect(path: str | Path, *, create: bool = False) -> sqlite3.Connection:
    """Open (and migrate) a review database.

    Parameters
    ----------
    path
        The ``review.sqlite`` file.
    create
        Create it when absent (else a missing file is an error).

    Raises
    ------
    StoreError
        The file is missing (and ``create`` is false), is not SQLite, or was written by a newer
        pairx (its schema version is above :data:`MIGRATIONS`).
    """
    path = Path(path)
    if not create and not path.is_file():
        raise StoreError(f"{path}: no review database here")
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: not a pairx review database ({exc})") from exc
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing :data:`MIGRATIONS` (each in one transaction); the new version."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise StoreError(
            f"the review database has schema version {version}, newer than this pairx knows "
            f"({len(MIGRATIONS)}); upgrade pairx"
        )
    for i in range(version, len(MIGRATIONS)):
        with transaction(conn):
            for statement in _statements(MIGRATIONS[i]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {i + 1}")
    return len(MIGRATIONS)


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration script (``CREATE TRIGGER`` bodies kept whole)."""
    buf = ""
    for line in script.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip():
        raise StoreError(f"incomplete SQL statement in a migration: {buf.strip()[:60]}")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on an exception)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


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
            (_now(), reviewer, query, candidate, decision,
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
            (_now(), reviewer, row["query"], row["candidate"], model_digest, row["id"]),
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
            (name, hash_token(token), _now()))
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
