"""What a project reviews: its images, their embeddings, the queries and their candidates.

``pairx review init`` writes these tables (:func:`pairx.app.project.init_project`); the server
and the worker read images by database id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from pairx.app.store.schema import transaction

__all__ = ["candidate_ids", "candidate_images", "count_embedded", "count_queries",
           "embedded_images", "image_row", "image_rows", "images_to_embed", "mark_unreadable",
           "next_query", "replace_candidates", "store_embeddings", "upsert_image"]


def upsert_image(conn: sqlite3.Connection, *, image_id: str, identity: str, path: str,
                 split: str, species: str, location: str, captured_at: str, viewpoint: str,
                 sha256: str, status: str, problem: str, bbox: str) -> None:
    """Insert an image of the dataset, or update the row of the same ``image_id`` (its
    database id stays, so decisions and candidates keep pointing at it)."""
    conn.execute(
        "INSERT INTO images (image_id, identity, path, split, species, location, "
        "captured_at, viewpoint, sha256, status, problem, bbox) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(image_id) DO UPDATE SET identity=excluded.identity, "
        "path=excluded.path, split=excluded.split, species=excluded.species, "
        "location=excluded.location, captured_at=excluded.captured_at, "
        "viewpoint=excluded.viewpoint, sha256=excluded.sha256, status=excluded.status, "
        "problem=excluded.problem, bbox=excluded.bbox",
        (image_id, identity, path, split, species, location, captured_at, viewpoint, sha256,
         status, problem, bbox))


def mark_unreadable(conn: sqlite3.Connection, image_id: int, problem: str) -> None:
    """Mark image ``image_id`` (database id) unreadable, saying why (its own transaction)."""
    with transaction(conn):
        conn.execute("UPDATE images SET status='unreadable', problem=? WHERE id=?",
                     (problem, image_id))


def images_to_embed(conn: sqlite3.Connection, digest: str) -> list[sqlite3.Row]:
    """Readable images without an embedding of their current file by model ``digest``
    (``id``, ``image_id``, ``path``, ``sha256``), by id."""
    return conn.execute(
        "SELECT i.id, i.image_id, i.path, i.sha256 FROM images i LEFT JOIN embeddings e "
        "ON e.image = i.id AND e.sha256 = i.sha256 AND e.model_digest = ? "
        "WHERE i.status = 'ok' AND e.image IS NULL ORDER BY i.id", (digest,)).fetchall()


def count_embedded(conn: sqlite3.Connection, digest: str) -> int:
    """Images with an embedding of their current file by model ``digest``."""
    return int(conn.execute(
        "SELECT COUNT(*) FROM images i JOIN embeddings e ON e.image = i.id "
        "AND e.sha256 = i.sha256 AND e.model_digest = ?", (digest,)).fetchone()[0])


def store_embeddings(conn: sqlite3.Connection, digest: str,
                     rows: Iterable[tuple[int, str, bytes]]) -> None:
    """Store ``(image id, file sha256, float32 vector bytes)`` embeddings by model ``digest``
    in one transaction (replacing older ones)."""
    with transaction(conn):
        for image_id, sha256, vector in rows:
            conn.execute(
                "INSERT OR REPLACE INTO embeddings (image, sha256, model_digest, vector) "
                "VALUES (?, ?, ?, ?)", (image_id, sha256, digest, vector))


def embedded_images(conn: sqlite3.Connection, digest: str) -> list[sqlite3.Row]:
    """Readable images with their current embedding by model ``digest`` (``id``, ``split``,
    ``vector``), by id."""
    return conn.execute(
        "SELECT i.id, i.split, e.vector FROM images i JOIN embeddings e ON e.image = i.id "
        "AND e.sha256 = i.sha256 AND e.model_digest = ? WHERE i.status = 'ok' ORDER BY i.id",
        (digest,)).fetchall()


def replace_candidates(conn: sqlite3.Connection,
                       ranked: Iterable[tuple[int, Sequence[tuple[int, float]]]]) -> None:
    """Replace every query and candidate in one transaction.

    Parameters
    ----------
    ranked
        Per query in review order: its image id and its ``(candidate id, similarity)``, most
        similar first (rank 1). A query's ``top`` is its first similarity (``None``: none).
    """
    with transaction(conn):
        conn.execute("DELETE FROM candidates")
        conn.execute("DELETE FROM queries")
        for pos, (query, cands) in enumerate(ranked):
            conn.execute("INSERT INTO queries (image, position, top, n) VALUES (?, ?, ?, ?)",
                         (query, pos, cands[0][1] if len(cands) else None, len(cands)))
            conn.executemany(
                "INSERT INTO candidates (query, rank, candidate, similarity) VALUES (?,?,?,?)",
                [(query, rank + 1, c, s) for rank, (c, s) in enumerate(cands)])


def image_row(conn: sqlite3.Connection, image_id: int) -> sqlite3.Row | None:
    """The ``images`` row of database id ``image_id`` (``None``: no such image)."""
    row: sqlite3.Row | None = conn.execute("SELECT * FROM images WHERE id = ?",
                                           (image_id,)).fetchone()
    return row


def image_rows(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, sqlite3.Row]:
    """The ``images`` rows of database ids ``ids`` (by id; unknown ids left out)."""
    return {r["id"]: r for r in conn.execute(
        f"SELECT * FROM images WHERE id IN ({','.join('?' * len(ids))})", ids)}


def candidate_ids(conn: sqlite3.Connection, query: int) -> list[int]:
    """The candidates of ``query`` (image ids), best first."""
    return [r[0] for r in conn.execute(
        "SELECT candidate FROM candidates WHERE query = ? ORDER BY rank", (query,))]


def candidate_images(conn: sqlite3.Connection, query: int) -> dict[int, sqlite3.Row]:
    """The ``images`` rows of the candidates of ``query``, by id."""
    return {r["id"]: r for r in conn.execute(
        "SELECT i.* FROM candidates c JOIN images i ON i.id = c.candidate "
        "WHERE c.query = ?", (query,))}


def next_query(conn: sqlite3.Connection, query: int) -> int | None:
    """The image id of the query after ``query`` in review order (``None``: the last one)."""
    row = conn.execute(
        "SELECT q2.image FROM queries q1 JOIN queries q2 ON q2.position = q1.position + 1 "
        "WHERE q1.image = ?", (query,)).fetchone()
    return None if row is None else int(row[0])


def count_queries(conn: sqlite3.Connection) -> int:
    """How many queries the project has."""
    return int(conn.execute("SELECT COUNT(*) FROM queries").fetchone()[0])
