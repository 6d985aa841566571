"""Retrieval metrics against hand-computed cases and a brute-force oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pairx.core.errors import InputError
from pairx.metrics.retrieval import retrieval_metrics, retrieval_per_query


def test_hand_computed_case() -> None:
    # identities a a b b c; similarity chosen by hand (symmetric, diagonal ignored)
    sim = np.array(
        [
            [9.0, 0.2, 0.9, 0.1, 0.5],  # q0 (a): ranks b(0.9) c(0.5) a(0.2) b(0.1) -> AP = 1/3
            [0.2, 9.0, 0.3, 0.4, 0.1],  # q1 (a): ranks b(0.4) b(0.3) a(0.2) c     -> AP = 1/3
            [0.9, 0.3, 9.0, 0.8, 0.0],  # q2 (b): ranks a(0.9) b(0.8) ...          -> AP = 1/2
            [0.1, 0.4, 0.8, 9.0, 0.3],  # q3 (b): ranks b(0.8) first               -> AP = 1
            [0.5, 0.1, 0.0, 0.3, 9.0],  # q4 (c): no other c -> skipped
        ]
    )
    valid, rank1, ap = retrieval_per_query(sim, ["a", "a", "b", "b", "c"])
    assert valid.tolist() == [True, True, True, True, False]
    assert rank1[:4].tolist() == [0.0, 0.0, 0.0, 1.0]
    np.testing.assert_allclose(ap[:4], [1 / 3, 1 / 3, 1 / 2, 1.0])
    assert math.isnan(ap[4])


def test_average_precision_with_several_positives() -> None:
    # query 0 with positives at ranks 1, 3 and 4 of 5 others: AP = (1/1 + 2/3 + 3/4) / 3
    sim = np.zeros((6, 6))
    sim[0, 1:] = [0.9, 0.8, 0.7, 0.6, 0.5]
    identities = ["x", "x", "y", "x", "x", "z"]
    _, rank1, ap = retrieval_per_query(sim, identities)
    assert rank1[0] == 1.0
    assert ap[0] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_groups_and_cosine() -> None:
    # two species; embeddings point exactly at identity directions except one confusion
    emb = torch.tensor(
        [[1.0, 0, 0], [2.0, 0, 0], [0, 1.0, 0], [0, 3.0, 0.1], [0.9, 0, 0.1], [0, 0, 1.0]]
    )
    ids = ["A", "A", "B", "B", "C", "C"]
    species = ["s1", "s1", "s1", "s1", "s2", "s2"]
    out = retrieval_metrics(emb, ids, species)
    # C0 = [0.9, 0, 0.1] is closest to A: its rank-1 fails; C1 = e3 ranks C0 first
    assert out["s1"]["n_queries"] == 4 and out["s1"]["rank1"] == 1.0
    assert out["s2"]["n_queries"] == 2 and out["s2"]["rank1"] == 0.5
    assert out["all"]["n_queries"] == 6 and out["all"]["rank1"] == pytest.approx(5 / 6)
    assert set(out) == {"s1", "s2", "all"}


def test_brute_force_oracle() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 4))
    ids = [str(i) for i in rng.integers(0, 8, 30)]
    out = retrieval_metrics(emb, ids)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit @ unit.T
    hits, aps = [], []
    for q in range(30):
        others = [j for j in range(30) if j != q]
        if not any(ids[j] == ids[q] for j in others):
            continue
        ranked = sorted(others, key=lambda j: -sims[q, j])
        rel = [ids[j] == ids[q] for j in ranked]
        hits.append(float(rel[0]))
        precisions = [sum(rel[: r + 1]) / (r + 1) for r in range(len(rel)) if rel[r]]
        aps.append(sum(precisions) / len(precisions))
    assert out["all"]["n_queries"] == len(hits)
    assert out["all"]["rank1"] == pytest.approx(np.mean(hits))
    assert out["all"]["mAP"] == pytest.approx(np.mean(aps))


def test_bad_shapes() -> None:
    with pytest.raises(InputError):
        retrieval_per_query(np.zeros((3, 2)), ["a", "b", "c"])
    with pytest.raises(InputError):
        retrieval_metrics(torch.zeros(3, 2), ["a", "b"])
