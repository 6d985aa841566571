"""Splits and pair selection of the evaluation protocol (supplement B.4).

* :func:`split_dataset` gives a dataset without a split a deterministic one (within each
  identity, images sorted by ``image_id`` alternate train, test, train, ...);
  :func:`group_dataset` cuts it into evaluation groups (one per species);
  :func:`group_sides` names a group's train images, queries and gallery.
* :func:`select_pairs`: each query's top-``k`` gallery images by cosine similarity are the
  candidate pairs (:func:`candidate_pairs`), ``k`` raised from ``k_start`` until enough correct
  and incorrect candidates exist; then up to ``n_pairs / 2`` of each are sampled with the seed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pairx.core.errors import DatasetError, InputError
from pairx.data.datasets import ReIDDataset, Sample
from pairx.metrics.functional import MetricWarning

__all__ = [
    "MIN_PAIRS_PER_SIDE",
    "Pair",
    "Sides",
    "candidate_pairs",
    "group_dataset",
    "group_sides",
    "normalise",
    "select_pairs",
    "split_dataset",
    "unique_samples",
    "with_split",
]

#: Fewest correct (and incorrect) pairs a group needs to be evaluated.
MIN_PAIRS_PER_SIDE = 3


@dataclass(frozen=True)
class Pair:
    """One query-gallery pair of a group."""

    query: str
    gallery: str
    correct: bool
    similarity: float



def split_dataset(dataset: ReIDDataset) -> ReIDDataset:
    """Return the dataset with a train/test split, creating one where there is none.

    A dataset with any ``split`` value keeps it (``val`` images are ignored by the protocol).
    Otherwise, within each identity, images sorted by ``image_id`` alternate train, test,
    train, ... so every identity with at least two images is on both sides.
    """
    if any(s.split for s in dataset):
        return dataset
    by_id: dict[str, list[Sample]] = {}
    for s in dataset:
        by_id.setdefault(s.identity, []).append(s)
    out: list[Sample] = []
    for ident in sorted(by_id):
        for i, s in enumerate(sorted(by_id[ident], key=lambda x: x.image_id)):
            out.append(with_split(s, "train" if i % 2 == 0 else "test"))
    return ReIDDataset(dataset.root, out)


def with_split(s: Sample, split: str) -> Sample:
    """``s`` with its ``split`` replaced."""
    return Sample(s.image_id, s.identity, s.path, split, s.species, s.orientation, s.bbox)


def group_dataset(dataset: ReIDDataset, group_by: str) -> dict[str, ReIDDataset]:
    """Split a dataset into evaluation groups.

    Parameters
    ----------
    dataset
        The dataset.
    group_by
        ``"species"``: one group per annotated species when there are several; ``"none"``:
        one group named after the dataset folder.
    """
    if group_by not in ("species", "none"):
        raise InputError(f"group_by must be 'species' or 'none'; got {group_by!r}")
    species = [s for s in dataset.species if s]
    if group_by == "species" and len(species) > 1:
        return {sp: dataset.subset(species=[sp]) for sp in species}
    return {dataset.root.name or "dataset": dataset}


class Sides(NamedTuple):
    """A group's images by role: ``train`` (layer selection), ``queries`` and ``gallery``."""

    train: list[Sample]
    queries: list[Sample]
    gallery: list[Sample]


def group_sides(name: str, group: ReIDDataset) -> Sides:
    """The train images, queries and gallery of one group.

    Test-split images are the queries, train-split images the gallery. An identity-disjoint
    split (e.g. the synthetic benchmark) would give no query a correct match; then the unseen
    test individuals are evaluated, split within each identity into query and gallery halves
    (:func:`split_dataset`).

    Raises
    ------
    DatasetError
        The group has no test or no train images.
    """
    train = [s for s in group if s.split == "train"]
    test = [s for s in group if s.split == "test"]
    if not test:
        raise DatasetError(
            f"{name}: no test-split images to use as queries; the protocol needs a "
            "'split' column with train and test images"
        )
    if not train:
        raise DatasetError(f"{name}: no train-split images to use as the gallery")
    if {s.identity for s in test} & {s.identity for s in train}:
        return Sides(train, test, train)
    halves = split_dataset(ReIDDataset(group.root, [with_split(s, "") for s in test]))
    return Sides(train, [s for s in halves if s.split == "test"],
                 [s for s in halves if s.split == "train"])


def unique_samples(samples: Sequence[Sample]) -> list[Sample]:
    """``samples`` without repeated ``image_id`` (first occurrence kept, order kept)."""
    seen: dict[str, Sample] = {}
    for s in samples:
        seen.setdefault(s.image_id, s)
    return list(seen.values())


def normalise(emb: np.ndarray) -> np.ndarray:
    """``(N, D)`` embeddings scaled to unit length (cosine similarity by dot product)."""
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    return np.asarray(emb / np.maximum(norm, 1e-12))


def candidate_pairs(
    sim: np.ndarray,
    query_ids: Sequence[str],
    gallery_ids: Sequence[str],
    query_identity: Sequence[str],
    gallery_identity: Sequence[str],
    k: int,
) -> list[Pair]:
    """Top-``k`` gallery images of every query.

    Parameters
    ----------
    sim
        ``(Q, G)`` cosine similarities; entries set to ``-inf`` are never selected (used to
        exclude a query from its own gallery).
    query_ids, gallery_ids
        ``Q`` and ``G`` image ids.
    query_identity, gallery_identity
        Their identities.
    k
        Gallery images per query.

    Returns
    -------
    list[Pair]
        ``Q * min(k, G)`` pairs (minus excluded entries), query by query, best first.
    """
    out: list[Pair] = []
    kk = min(k, sim.shape[1])
    if kk == 0:
        return out
    order = np.argsort(-sim, axis=1, kind="stable")[:, :kk]
    for qi, row in enumerate(order):
        for gi in row:
            s = float(sim[qi, gi])
            if not math.isfinite(s):
                continue
            out.append(
                Pair(
                    query_ids[qi],
                    gallery_ids[gi],
                    query_identity[qi] == gallery_identity[gi],
                    s,
                )
            )
    return out


def select_pairs(
    sim: np.ndarray,
    query: Sequence[Sample],
    gallery: Sequence[Sample],
    n_pairs: int,
    *,
    seed: int,
    k_start: int = 5,
    k_max: int = 20,
    where: str = "",
) -> list[Pair]:
    """The paper's pair selection: top-k with k raised until enough pairs, then sampling.

    Parameters
    ----------
    sim
        ``(Q, G)`` cosine similarities of queries and gallery (``-inf`` = excluded).
    query, gallery
        The samples.
    n_pairs
        Requested pairs: up to ``n_pairs // 2`` correct and ``n_pairs - n_pairs // 2``
        incorrect.
    seed
        Sampling seed.
    k_start, k_max
        Range of k.
    where
        Group name for messages.

    Returns
    -------
    list[Pair]
        Sampled pairs, correct ones first, each side in candidate order.

    Raises
    ------
    DatasetError
        Fewer than 3 correct or 3 incorrect candidate pairs even at ``k_max``.
    """
    if n_pairs < 2 * MIN_PAIRS_PER_SIDE:
        raise InputError(f"n_pairs must be at least {2 * MIN_PAIRS_PER_SIDE}; got {n_pairs}")
    n_cor, n_inc = n_pairs // 2, n_pairs - n_pairs // 2
    args = (
        [s.image_id for s in query],
        [s.image_id for s in gallery],
        [s.identity for s in query],
        [s.identity for s in gallery],
    )
    cands: list[Pair] = []
    for k in range(k_start, k_max + 1):
        cands = candidate_pairs(sim, *args, k=k)
        if sum(p.correct for p in cands) >= n_cor and sum(not p.correct for p in cands) >= n_inc:
            break
    cor = [p for p in cands if p.correct]
    inc = [p for p in cands if not p.correct]
    if len(cor) < MIN_PAIRS_PER_SIDE or len(inc) < MIN_PAIRS_PER_SIDE:
        raise DatasetError(
            f"{where}: too few pairs to evaluate: {len(cor)} correct and {len(inc)} incorrect "
            f"among the top-{k_max} gallery images of {len(query)} queries (need at least "
            f"{MIN_PAIRS_PER_SIDE} of each); the dataset needs more images per identity and "
            "more identities"
        )
    if len(cor) < n_cor or len(inc) < n_inc:
        warnings.warn(
            f"{where}: only {len(cor)} correct and {len(inc)} incorrect pairs at k={k_max}; "
            "using a smaller sample, as the paper does for small datasets",
            MetricWarning,
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    pick_c = np.sort(rng.choice(len(cor), size=min(n_cor, len(cor)), replace=False))
    pick_i = np.sort(rng.choice(len(inc), size=min(n_inc, len(inc)), replace=False))
    return [cor[i] for i in pick_c] + [inc[i] for i in pick_i]
