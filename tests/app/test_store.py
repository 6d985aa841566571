"""The review database: migrations, WAL durability settings, the append-only event log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pairx.app.project import Project
from pairx.app.store import (
    MIGRATIONS,
    StoreError,
    add_user,
    connect,
    current_decisions,
    record_decision,
    reviewer_of_token,
    undo_last,
)
from pairx.core.errors import InputError


def _pair(conn: sqlite3.Connection) -> tuple[int, int, int]:
    rows = conn.execute("SELECT query, candidate FROM candidates ORDER BY query, rank").fetchall()
    return rows[0][0], rows[0][1], rows[1][1]


def test_fresh_database_is_migrated_in_wal_with_full_sync(tmp_path: Path) -> None:
    conn = connect(tmp_path / "r.sqlite", create=True)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    conn.close()
    connect(tmp_path / "r.sqlite").close()  # reopening migrates nothing and keeps the data


def test_newer_schema_and_non_databases_are_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "r.sqlite", create=True)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this pairx"):
        connect(tmp_path / "r.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not a pairx review database"):
        connect(tmp_path / "junk.sqlite")
    with pytest.raises(StoreError, match="no review database"):
        connect(tmp_path / "absent.sqlite")


def test_events_are_append_only(fresh_project: Path) -> None:
    conn = Project.open(fresh_project).db()
    q, c, _ = _pair(conn)
    record_decision(conn, query=q, candidate=c, decision="match", reviewer="ann",
                    model_digest="d")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE events SET decision = 'no_match'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM events")
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1


def test_undo_appends_retractions_and_is_unlimited(fresh_project: Path) -> None:
    conn = Project.open(fresh_project).db()
    q, c1, c2 = _pair(conn)
    kw = {"reviewer": "ann", "model_digest": "d"}
    record_decision(conn, query=q, candidate=c1, decision="no_match", **kw)
    record_decision(conn, query=q, candidate=c1, decision="match", confidence=0.75,
                    tags=["scar", " scar ", ""], **kw)
    record_decision(conn, query=q, candidate=c2, decision="unsure", **kw)
    now = current_decisions(conn, q)
    assert now[(q, c1)].decision == "match" and now[(q, c1)].tags == ("scar",)
    assert now[(q, c2)].decision == "unsure"
    assert undo_last(conn, query=q, **kw)["candidate"] == c2
    assert (q, c2) not in current_decisions(conn, q)
    assert undo_last(conn, query=q, **kw)["decision"] == "match"
    assert current_decisions(conn, q)[(q, c1)].decision == "no_match"  # the older one again
    assert undo_last(conn, query=q, **kw)["decision"] == "no_match"
    assert undo_last(conn, query=q, **kw) is None
    assert current_decisions(conn, q) == {}
    kinds = [r[0] for r in conn.execute("SELECT kind FROM events ORDER BY id")]
    assert kinds == ["decision"] * 3 + ["retraction"] * 3
    # another reviewer's decisions are not theirs to undo
    record_decision(conn, query=q, candidate=c1, decision="match", reviewer="bob",
                    model_digest="d")
    assert undo_last(conn, query=q, **kw) is None


def test_bad_decisions_are_refused(fresh_project: Path) -> None:
    conn = Project.open(fresh_project).db()
    q, c, _ = _pair(conn)
    with pytest.raises(InputError, match="decision must be one of"):
        record_decision(conn, query=q, candidate=c, decision="yes", reviewer="a",
                        model_digest="d")
    with pytest.raises(InputError, match="confidence"):
        record_decision(conn, query=q, candidate=c, decision="match", reviewer="a",
                        model_digest="d", confidence=1.5)
    with pytest.raises(InputError, match="not a candidate"):
        record_decision(conn, query=q, candidate=q, decision="match", reviewer="a",
                        model_digest="d")
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_reviewer_tokens_are_stored_hashed(fresh_project: Path) -> None:
    conn = Project.open(fresh_project).db()
    token = add_user(conn, "Ann Smith")
    assert reviewer_of_token(conn, token) == "Ann Smith"
    assert reviewer_of_token(conn, token + "x") is None
    assert token not in str(conn.execute("SELECT * FROM users").fetchall()[0][:])
    renewed = add_user(conn, "Ann Smith")
    assert reviewer_of_token(conn, token) is None and reviewer_of_token(conn, renewed)
    with pytest.raises(InputError, match="reviewer names"):
        add_user(conn, "<script>")
