"""What the pages show, read from the project database (no web framework here).

A query's review status: ``done`` when one of its candidates is decided a match or every
candidate is decided, ``started`` when some are, ``todo`` otherwise.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pairx.app.store import current_decisions

__all__ = [
    "DECISION_FIELDS",
    "FORMULA_LEADS",
    "METRIC_FIELDS",
    "STATUSES",
    "QueueFilter",
    "export_audit",
    "export_decisions",
    "identity_images",
    "neutralise_cell",
    "queue",
    "review",
    "to_csv",
]

STATUSES = ("todo", "started", "done")


@dataclass(frozen=True)
class QueueFilter:
    """Filters of the queue page (empty: no filter)."""

    species: str = ""
    location: str = ""
    date_from: str = ""
    date_to: str = ""
    status: str = ""
    min_similarity: float | None = None
    max_similarity: float | None = None


def _image(row: sqlite3.Row) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "image_id", "identity", "species", "location",
                                "captured_at", "viewpoint", "split", "status", "problem")}


def _status(n_candidates: int, decided: list[str]) -> str:
    if "match" in decided or (n_candidates and len(decided) >= n_candidates):
        return "done"
    return "started" if decided else "todo"


def queue(conn: sqlite3.Connection, f: QueueFilter = QueueFilter(), *, offset: int = 0,
          limit: int = 200) -> dict[str, Any]:
    """The queue: every query in order with its top similarity and status, filtered.

    Returns
    -------
    dict
        ``rows`` (one page of the filtered queries: ``limit`` from ``offset``), ``matched``
        (filtered queries in all), ``offset``, ``limit``, ``reviewed`` and ``total`` (over all
        queries, unfiltered), ``species`` and ``locations`` (choices for the filters).
    """
    where: list[str] = ["1"]
    args: list[Any] = []
    if f.species:
        where.append("i.species = ?")
        args.append(f.species)
    if f.location:
        where.append("instr(lower(i.location), ?) > 0")
        args.append(f.location.lower())
    if f.date_from:
        where.append("i.captured_at != '' AND substr(i.captured_at, 1, 10) >= ?")
        args.append(f.date_from)
    if f.date_to:
        where.append("i.captured_at != '' AND substr(i.captured_at, 1, 10) <= ?")
        args.append(f.date_to)
    if f.min_similarity is not None:
        where.append("q.top >= ?")
        args.append(f.min_similarity)
    if f.max_similarity is not None:
        where.append("q.top <= ?")
        args.append(f.max_similarity)
    n_of = dict(conn.execute("SELECT image, n FROM queries").fetchall())
    decided: dict[int, list[str]] = {}
    for (query, _), d in current_decisions(conn).items():
        decided.setdefault(query, []).append(d.decision)
    status_of = {q: _status(n_of.get(q, 0), ds) for q, ds in decided.items()}
    reviewed = sum(s == "done" for s in status_of.values())
    ids = [r[0] for r in conn.execute(
        "SELECT q.image FROM queries q JOIN images i ON i.id = q.image "
        f"WHERE {' AND '.join(where)} ORDER BY q.position", args)]
    if f.status:
        ids = [q for q in ids if status_of.get(q, "todo") == f.status]
    offset = max(0, int(offset))
    page = ids[offset:offset + limit]
    out = []
    if page:
        found = {r["id"]: r for r in conn.execute(
            "SELECT q.position, q.top, q.n, i.* FROM queries q JOIN images i ON i.id = q.image "
            f"WHERE q.image IN ({','.join('?' * len(page))})", page)}
        for q in page:
            r = found[q]
            out.append({**_image(r), "position": r["position"], "top": r["top"], "n": r["n"],
                        "status": status_of.get(q, "todo"), "decided": len(decided.get(q, []))})
    species = [r[0] for r in conn.execute(
        "SELECT DISTINCT i.species FROM queries q JOIN images i ON i.id = q.image "
        "WHERE i.species != '' ORDER BY 1")]
    locations = [r[0] for r in conn.execute(
        "SELECT DISTINCT i.location FROM queries q JOIN images i ON i.id = q.image "
        "WHERE i.location != '' ORDER BY 1")]
    return {"rows": out, "matched": len(ids), "offset": offset,
            "limit": limit, "reviewed": reviewed, "total": len(n_of), "species": species,
            "locations": locations}


def _shuffle_seed(query: int, reviewer: str) -> int:
    return int(hashlib.sha256(f"{query}:{reviewer}".encode()).hexdigest()[:12], 16)


def review(conn: sqlite3.Connection, position: int, *, blind: bool = False,
           reviewer: str = "") -> dict[str, Any] | None:
    """One query's review: the query, its candidates (grouped by identity) and decisions.

    In blind mode similarities and ranks are left out and the order is shuffled (the same
    order for the same reviewer and query, so undo and reload keep the screen stable).
    ``None``: no query at that position.
    """
    q = conn.execute("SELECT i.* FROM queries q JOIN images i ON i.id = q.image "
                     "WHERE q.position = ?", (position,)).fetchone()
    if q is None:
        return None
    total = int(conn.execute("SELECT COUNT(*) FROM queries").fetchone()[0])
    decisions = current_decisions(conn, q["id"])
    cands = []
    for r in conn.execute(
            "SELECT c.rank, c.similarity, i.*, (SELECT COUNT(*) FROM images o WHERE "
            "o.identity = i.identity AND o.id != i.id AND o.id != c.query "
            "AND o.status = 'ok') AS others "
            "FROM candidates c JOIN images i ON i.id = c.candidate WHERE c.query = ? "
            "ORDER BY c.rank", (q["id"],)):
        d = decisions.get((q["id"], r["id"]))
        cands.append({**_image(r), "rank": r["rank"], "similarity": r["similarity"],
                      "others": r["others"], "decision": d.decision if d else "",
                      "confidence": d.confidence if d else None,
                      "tags": list(d.tags) if d else [], "notes": d.notes if d else ""})
    if blind:
        random.Random(_shuffle_seed(q["id"], reviewer)).shuffle(cands)
        for c in cands:
            c["rank"], c["similarity"] = None, None
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in cands:
        groups.setdefault(c["identity"], []).append(c)
    ordered = [c for g in groups.values() for c in g]
    for i, c in enumerate(ordered):
        c["index"] = i
    query = _image(q)
    query.pop("identity")  # what the reviewer is deciding: never shown
    return {"query": query, "position": position, "total": total,
            "groups": [{"identity": k, "candidates": v} for k, v in groups.items()],
            "candidates": ordered, "blind": blind,
            "status": _status(len(cands), [d.decision for d in decisions.values()])}


def identity_images(conn: sqlite3.Connection, image: int, query: int | None = None
                    ) -> list[dict[str, Any]]:
    """The other images of ``image``'s identity, never the query under review (in a
    leave-one-out project it is a gallery image too, and showing it would give away the
    answer)."""
    return [_image(r) for r in conn.execute(
        "SELECT o.* FROM images i JOIN images o ON o.identity = i.identity AND o.id != i.id "
        "WHERE i.id = ? AND o.id != ? AND o.status = 'ok' ORDER BY o.captured_at, o.image_id",
        (image, -1 if query is None else query))]


DECISION_FIELDS = ("query_image", "candidate_image", "candidate_identity", "rank",
                   "similarity", "decision", "confidence", "tags", "notes", "reviewer",
                   "decided_at", "model_digest", "explanation", "blind", "event")
METRIC_FIELDS = ("layer", "match_coverage", "self_consistency_irm", "n_matches")


def export_decisions(conn: sqlite3.Connection, *, with_metrics: bool = False
                     ) -> list[dict[str, Any]]:
    """Decisions in force, one row per (query, candidate); optionally joined with the PAIR-X
    metrics of the explanation that was on screen when the decision was made."""
    decisions = current_decisions(conn)
    if not decisions:
        return []
    events = {r["id"]: r for r in conn.execute(
        f"SELECT * FROM events WHERE id IN ({','.join(str(d.event) for d in decisions.values())})")}
    out = []
    for (query, cand), d in sorted(decisions.items(), key=lambda kv: kv[1].event):
        e = events[d.event]
        c = conn.execute(
            "SELECT c.rank, c.similarity, q.image_id AS qid, i.image_id AS cid, i.identity "
            "FROM candidates c JOIN images q ON q.id = c.query JOIN images i ON "
            "i.id = c.candidate WHERE c.query = ? AND c.candidate = ?", (query, cand)).fetchone()
        row = {"query_image": c["qid"] if c else query, "candidate_image": c["cid"] if c else cand,
               "candidate_identity": c["identity"] if c else "",
               "rank": c["rank"] if c else None, "similarity": c["similarity"] if c else None,
               "decision": d.decision, "confidence": d.confidence, "tags": ";".join(d.tags),
               "notes": d.notes, "reviewer": d.reviewer, "decided_at": d.created_at,
               "model_digest": e["model_digest"], "explanation": e["explanation"],
               "blind": bool(e["blind"]), "event": d.event}
        if with_metrics:
            m = conn.execute("SELECT layer, metrics FROM explanations WHERE key = ?",
                             (e["explanation"],)).fetchone() if e["explanation"] else None
            values = json.loads(m["metrics"]) if m else {}
            row.update({"layer": m["layer"] if m else "",
                        **{k: values.get(k) for k in METRIC_FIELDS[1:]}})
        out.append(row)
    return out


FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
"""The first characters that make a spreadsheet read a cell as a formula (OWASP, CSV
injection)."""


def neutralise_cell(value: Any) -> Any:
    """A text cell that starts with one of :data:`FORMULA_LEADS` prefixed with ``'`` (OWASP's
    advice), so a spreadsheet shows it as text instead of running it; numbers (negative ones
    too) and other texts unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_LEADS):
        return "'" + value
    return value


def to_csv(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    """``rows`` as CSV text with a header of ``fields`` (``None`` as an empty cell; text cells
    neutralised against formula injection, :func:`neutralise_cell`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else neutralise_cell(r.get(k))) for k in fields})
    return buf.getvalue()


def export_audit(conn: sqlite3.Connection) -> Iterator[str]:
    """The whole event log, oldest first, as JSON lines."""
    for r in conn.execute("SELECT e.*, q.image_id AS query_image, c.image_id AS "
                          "candidate_image FROM events e JOIN images q ON q.id = e.query "
                          "JOIN images c ON c.id = e.candidate ORDER BY e.id"):
        rec = {k: r[k] for k in r.keys()}
        rec["tags"] = json.loads(rec["tags"] or "[]")
        yield json.dumps(rec, sort_keys=True) + "\n"
