"""The review project's database: SQLite in WAL mode, an append-only decision log.

Every SQL statement of the app outside the read-only page queries of :mod:`pairx.app.views`
lives in this package, as a named function:

* :mod:`~pairx.app.store.schema`: connections (WAL, ``synchronous=FULL``), the versioned
  schema and its migrations, transactions;
* :mod:`~pairx.app.store.decisions`: the append-only decision log (decide, undo, the
  decisions in force) and the reviewers' tokens;
* :mod:`~pairx.app.store.catalogue`: images, embeddings, queries and their candidates;
* :mod:`~pairx.app.store.jobs`: the explanation job queue and the explanations done;
* :mod:`~pairx.app.store.meta`: the project's secret, model digest and worker error.

Decisions are events: a decision appends a row, an undo appends a *retraction* of an earlier
row. Triggers refuse ``UPDATE`` and ``DELETE`` on ``events``, so the audit log can only grow.
Every name is importable from ``pairx.app.store`` itself.
"""

from __future__ import annotations

from pairx.app.store.catalogue import (
    candidate_ids,
    candidate_images,
    count_embedded,
    count_queries,
    embedded_images,
    image_row,
    image_rows,
    images_to_embed,
    mark_unreadable,
    next_query,
    replace_candidates,
    store_embeddings,
    upsert_image,
)
from pairx.app.store.decisions import (
    DECISIONS,
    Decision,
    add_user,
    current_decisions,
    has_users,
    hash_token,
    record_decision,
    reviewer_of_token,
    reviewers,
    undo_last,
)
from pairx.app.store.jobs import (
    add_job,
    explained_candidates,
    explanation_keys,
    finish_job,
    forget_explanations,
    has_more_urgent_job,
    jobs_of,
    next_pending_job,
    recent_seconds,
    record_explanation,
    requeue_running_jobs,
    start_job,
)
from pairx.app.store.meta import (
    project_secret,
    record_model_digest,
    set_worker_error,
    worker_error,
)
from pairx.app.store.schema import (
    MIGRATIONS,
    StoreError,
    connect,
    migrate,
    timestamp,
    transaction,
)

__all__ = [
    "DECISIONS",
    "MIGRATIONS",
    "Decision",
    "StoreError",
    "add_job",
    "add_user",
    "candidate_ids",
    "candidate_images",
    "connect",
    "count_embedded",
    "count_queries",
    "current_decisions",
    "embedded_images",
    "explained_candidates",
    "explanation_keys",
    "finish_job",
    "forget_explanations",
    "has_more_urgent_job",
    "has_users",
    "hash_token",
    "image_row",
    "image_rows",
    "images_to_embed",
    "jobs_of",
    "mark_unreadable",
    "migrate",
    "next_pending_job",
    "next_query",
    "project_secret",
    "recent_seconds",
    "record_decision",
    "record_explanation",
    "record_model_digest",
    "replace_candidates",
    "requeue_running_jobs",
    "reviewer_of_token",
    "reviewers",
    "set_worker_error",
    "start_job",
    "store_embeddings",
    "timestamp",
    "transaction",
    "undo_last",
    "upsert_image",
    "worker_error",
]
