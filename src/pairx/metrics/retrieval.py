"""Retrieval figures: rank-1 and mean average precision from similarities or embeddings.

Pure functions of arrays: :func:`retrieval_per_query` ranks every item against all others,
:func:`ranked_average_precision` scores one ranked list, and :func:`retrieval_metrics` reports
rank-1 / mAP with cosine similarity per group and over all queries (the protocol of
``pairx retrieval``, :func:`pairx.training.retrieval.evaluate_retrieval`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from pairx.core.errors import InputError

__all__ = [
    "RetrievalScores",
    "ranked_average_precision",
    "retrieval_metrics",
    "retrieval_per_query",
]


class RetrievalScores(TypedDict):
    """Aggregated figures of one group of queries."""

    rank1: float
    mAP: float
    n_queries: int


def retrieval_per_query(
    similarity: np.ndarray, identities: Sequence[object]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-1 hit and average precision of every query against all other items.

    Parameters
    ----------
    similarity
        ``(N, N)`` similarity matrix (higher is more similar); the diagonal is ignored.
    identities
        ``(N,)`` identity of each item.

    Returns
    -------
    valid : np.ndarray
        ``(N,)`` bool, the item has at least one other item of its identity.
    rank1 : np.ndarray
        ``(N,)`` float, 1.0 when the most similar other item shares the identity. Ties are
        broken by item order (stable sort).
    ap : np.ndarray
        ``(N,)`` float average precision: mean over the true matches of the precision at
        their rank. ``nan`` where ``valid`` is false.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    n = len(identities)
    if sim.shape != (n, n):
        raise InputError(f"similarity must be ({n}, {n}); got {sim.shape}")
    ids = np.asarray([str(i) for i in identities])
    valid = np.zeros(n, dtype=bool)
    rank1 = np.zeros(n, dtype=np.float64)
    ap = np.full(n, np.nan, dtype=np.float64)
    for q in range(n):
        others = np.delete(np.arange(n), q)
        order = others[np.argsort(-sim[q, others], kind="stable")]
        hits = ids[order] == ids[q]
        if not hits.any():
            continue
        valid[q] = True
        rank1[q] = float(hits[0])
        ap[q] = ranked_average_precision(hits)
    return valid, rank1, ap


def ranked_average_precision(hits: np.ndarray) -> float:
    """Average precision of a ranked list: ``(N,)`` bool, ``True`` where the item at that rank
    is relevant; the mean over relevant items of the precision at their rank (``nan`` if none)."""
    ranks = np.flatnonzero(np.asarray(hits, bool)) + 1
    if ranks.size == 0:
        return float("nan")
    return float(np.mean(np.arange(1, ranks.size + 1) / ranks))


def retrieval_metrics(
    embeddings: torch.Tensor | np.ndarray,
    identities: Sequence[object],
    groups: Sequence[str] | None = None,
) -> dict[str, RetrievalScores]:
    """Rank-1 and mAP with cosine similarity, per group and over all queries.

    Parameters
    ----------
    embeddings
        ``(N, D)`` embeddings (normalised here).
    identities
        ``(N,)`` identity of each item.
    groups
        ``(N,)`` group (species) of each item; figures are also given per group of the query.

    Returns
    -------
    dict[str, RetrievalScores]
        ``{group: {"rank1", "mAP", "n_queries"}, ..., "all": {...}}``; groups whose queries are
        all skipped report ``nan`` figures and ``n_queries = 0``.
    """
    emb = torch.as_tensor(embeddings).double()
    if emb.dim() != 2 or emb.shape[0] != len(identities):
        raise InputError(
            f"embeddings must be (N, D) with N = {len(identities)}; got {tuple(emb.shape)}"
        )
    emb = F.normalize(emb, dim=1)
    valid, rank1, ap = retrieval_per_query((emb @ emb.T).numpy(), identities)
    group_of = np.asarray(groups if groups is not None else ["all"] * len(identities), dtype=str)
    out: dict[str, RetrievalScores] = {}
    for name in [*sorted(set(group_of.tolist()) - {"all"}), "all"]:
        mask = valid & ((group_of == name) if name != "all" else True)
        count = int(mask.sum())
        out[name] = RetrievalScores(
            rank1=float(rank1[mask].mean()) if count else float("nan"),
            mAP=float(ap[mask].mean()) if count else float("nan"),
            n_queries=count,
        )
    return out
