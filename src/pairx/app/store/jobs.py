"""The explanation job queue and the index of explanations done.

A job is one query, one layer (or AMD view) and the candidates to explain; the worker takes the
pending job of highest priority (then the oldest) and records each explanation as it is done
(its cache key, seconds and metrics), bumping the job's progress in the same transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence

from pairx.app.store.schema import transaction

__all__ = ["add_job", "explained_candidates", "explanation_keys", "finish_job",
           "forget_explanations", "has_more_urgent_job", "jobs_of", "next_pending_job",
           "recent_seconds", "record_explanation", "requeue_running_jobs", "start_job"]


def add_job(conn: sqlite3.Connection, query: int, layer: str, candidates: Sequence[int], *,
            priority: int = 0) -> int | None:
    """Queue the candidates of ``query`` at ``layer`` not yet explained or queued (one
    transaction); the new job's id.

    ``None`` when nothing is left to do (every candidate explained or already in an open job).
    An open job of the same query and layer is raised to ``priority`` if that is higher.
    """
    with transaction(conn):
        done = {r[0] for r in conn.execute(
            "SELECT candidate FROM explanations WHERE query = ? AND layer = ?", (query, layer))}
        open_jobs = conn.execute(
            "SELECT id, candidates, priority FROM jobs WHERE query = ? AND layer = ? AND status "
            "IN ('pending', 'running')", (query, layer)).fetchall()
        queued = {c for j in open_jobs for c in json.loads(j["candidates"])}
        for j in open_jobs:
            if j["priority"] < priority:
                conn.execute("UPDATE jobs SET priority = ? WHERE id = ? AND status = 'pending'",
                             (priority, j["id"]))
        todo = [int(c) for c in dict.fromkeys(candidates) if c not in done and c not in queued]
        if not todo:
            return None
        cur = conn.execute(
            "INSERT INTO jobs (query, layer, candidates, priority, total, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (query, layer, json.dumps(todo), priority, len(todo), time.time()))
        return int(cur.lastrowid or 0)


def jobs_of(conn: sqlite3.Connection, query: int, layer: str) -> list[sqlite3.Row]:
    """Every job of one query and layer, oldest first."""
    return conn.execute(
        "SELECT * FROM jobs WHERE query = ? AND layer = ? ORDER BY id", (query, layer)).fetchall()


def recent_seconds(conn: sqlite3.Connection) -> list[float]:
    """Seconds of the 20 explanations recorded last (newest first)."""
    return [r[0] for r in conn.execute(
        "SELECT seconds FROM explanations ORDER BY created_at DESC LIMIT 20")]


def requeue_running_jobs(conn: sqlite3.Connection) -> int:
    """Put every ``running`` job back to ``pending`` (one transaction); how many."""
    with transaction(conn):
        cur = conn.execute("UPDATE jobs SET status = 'pending' WHERE status = 'running'")
    return int(cur.rowcount)


def next_pending_job(conn: sqlite3.Connection) -> sqlite3.Row | None:
    """The pending job to run next: highest priority, then the oldest (``None``: none)."""
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM jobs WHERE status = 'pending' ORDER BY priority DESC, id LIMIT 1"
    ).fetchone()
    return row


def has_more_urgent_job(conn: sqlite3.Connection, priority: int) -> bool:
    """Whether a pending job has a priority above ``priority``."""
    return conn.execute("SELECT 1 FROM jobs WHERE status = 'pending' AND priority > ? "
                        "LIMIT 1", (priority,)).fetchone() is not None


def start_job(conn: sqlite3.Connection, job: int) -> None:
    """Mark job ``job`` running (one transaction)."""
    with transaction(conn):
        conn.execute("UPDATE jobs SET status = 'running', started_at = ?, updated_at = ? "
                     "WHERE id = ?", (time.time(), time.time(), job))


def finish_job(conn: sqlite3.Connection, job: int, status: str, error: str) -> None:
    """Set job ``job``'s status (``done``, ``failed`` or back to ``pending``) and error
    (one transaction)."""
    with transaction(conn):
        conn.execute("UPDATE jobs SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                     (status, error, time.time(), job))


def explained_candidates(conn: sqlite3.Connection, query: int, layer: str) -> set[int]:
    """The candidates of ``query`` explained at ``layer``."""
    return {r[0] for r in conn.execute(
        "SELECT candidate FROM explanations WHERE query = ? AND layer = ?", (query, layer))}


def explanation_keys(conn: sqlite3.Connection, query: int, layer: str) -> list[sqlite3.Row]:
    """``candidate`` and cache ``key`` of every explanation of ``query`` at ``layer``."""
    return conn.execute("SELECT candidate, key FROM explanations WHERE query = ? AND layer = ?",
                        (query, layer)).fetchall()


def forget_explanations(conn: sqlite3.Connection, query: int, layer: str,
                        candidates: Sequence[int]) -> None:
    """Drop the explanations of ``candidates`` of ``query`` at ``layer`` (one transaction)."""
    with transaction(conn):
        conn.executemany("DELETE FROM explanations WHERE query = ? AND candidate = ? "
                         "AND layer = ?", [(query, c, layer) for c in candidates])


def record_explanation(conn: sqlite3.Connection, *, job: int, query: int, candidate: int,
                       layer: str, key: str, seconds: float,
                       metrics: Mapping[str, float]) -> None:
    """Record one explanation of job ``job`` and count it done (one transaction).

    ``metrics`` are stored as JSON, NaN as ``null``.
    """
    with transaction(conn):
        conn.execute(
            "INSERT OR REPLACE INTO explanations (query, candidate, layer, key, seconds, "
            "metrics, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (query, candidate, layer, key, seconds,
             json.dumps({k: (None if v != v else v) for k, v in metrics.items()}),
             time.time()))
        conn.execute("UPDATE jobs SET done = done + 1, updated_at = ? WHERE id = ?",
                     (time.time(), job))
