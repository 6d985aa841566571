"""The review database's schema and connections: SQLite in WAL mode, ``synchronous=FULL``.

One file, ``review.sqlite``, per project (:mod:`pairx.app.project`). Every connection runs in
WAL mode with ``synchronous=FULL``, so a decision whose ``INSERT`` has been committed (and
acknowledged to the browser) survives a ``kill -9`` of the server or a power cut. The schema
is versioned with ``PRAGMA user_version`` and brought up to date by :data:`MIGRATIONS`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pairx.core.errors import PairxError

__all__ = ["MIGRATIONS", "StoreError", "connect", "migrate", "timestamp", "transaction"]

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


def timestamp() -> str:
    """Now, UTC, ISO 8601 with nanoseconds (``2026-12-07T10:00:00.123456789Z``)."""
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
