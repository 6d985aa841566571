"""The ``meta`` table: the project's secret, its model digest and the worker's start error."""

from __future__ import annotations

import sqlite3
from secrets import token_hex

from pairx.app.store.schema import transaction

__all__ = ["project_secret", "record_model_digest", "set_worker_error", "worker_error"]


def project_secret(conn: sqlite3.Connection) -> str:
    """The project's secret (the key of its CSRF tokens), created on first use (64 hex)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
    if row is None:
        with transaction(conn):
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('secret', ?)",
                         (token_hex(32),))
        row = conn.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
    return str(row[0])


def record_model_digest(conn: sqlite3.Connection, digest: str) -> None:
    """Store the weight digest of the model the project was last embedded with."""
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('model_digest', ?)",
                 (digest,))


def worker_error(conn: sqlite3.Connection) -> str | None:
    """Why the explanation worker could not start (``None``: it started, or has not run)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'worker_error'").fetchone()
    return None if row is None else str(row[0])


def set_worker_error(conn: sqlite3.Connection, message: str | None) -> None:
    """Record why the worker cannot start (``None``: it started; forget an earlier error)."""
    with transaction(conn):
        if message is None:
            conn.execute("DELETE FROM meta WHERE key = 'worker_error'")
        else:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('worker_error', ?)",
                         (message,))
