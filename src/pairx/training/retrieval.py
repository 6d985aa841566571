"""Retrieval evaluation: rank-1 and mean average precision with cosine similarity.

Protocol (``pairx retrieval``): queries are the test sightings; the gallery of a query is every
other test sighting (all test identities, all species); a query whose identity has no other
sighting is skipped. Figures are reported per query species and over all queries.

The ranking functions live in :mod:`pairx.metrics.retrieval` and the batched embedding in
:mod:`pairx.models.embedding`; their names are re-exported here for the older import paths.
"""

from __future__ import annotations

from pairx.core.errors import DatasetError
from pairx.data.datasets import ReIDDataset
from pairx.metrics.retrieval import (
    RetrievalScores,
    ranked_average_precision,
    retrieval_metrics,
    retrieval_per_query,
)
from pairx.models.adapter import ReIDModel
from pairx.models.embedding import embed_samples

__all__ = [
    "RetrievalScores",
    "embed_samples",
    "evaluate_retrieval",
    "ranked_average_precision",
    "retrieval_metrics",
    "retrieval_per_query",
]


def evaluate_retrieval(
    model: ReIDModel,
    dataset: ReIDDataset,
    *,
    split: str | None = "test",
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, RetrievalScores]:
    """Rank-1 / mAP of ``model`` on the test sightings of ``dataset``.

    Parameters
    ----------
    model
        Embedding model.
    dataset
        Re-ID dataset; with ``split="test"`` only its test samples are used (a dataset without
        a split column is used whole).
    split
        Split to evaluate, or ``None`` for every sample.

    Returns
    -------
    dict[str, RetrievalScores]
        See :func:`retrieval_metrics`; groups are species (``"all"`` only when unannotated).
    """
    samples = list(dataset.samples)
    if split is not None and any(s.split for s in samples):
        samples = [s for s in samples if s.split == split]
    if not samples:
        raise DatasetError(f"dataset {dataset.root} has no {split!r} samples to evaluate")
    embeddings = embed_samples(model, samples, batch_size=batch_size, progress=progress)
    species = [s.species or "all" for s in samples]
    return retrieval_metrics(embeddings, [s.identity for s in samples], species)
