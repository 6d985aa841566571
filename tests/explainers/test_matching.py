"""Cross-checked brute-force matching against a float64 double-loop oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pairx.core.errors import InputError
from pairx.explainers.matching import (
    feature_descriptors,
    grid_centres,
    mutual_nearest_neighbours,
)


def oracle(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int, float]]:
    """Explicit loops over all pairs, float64; first index wins ties (OpenCV semantics)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)

    def dist(i: int, j: int) -> float:
        return math.sqrt(sum((float(a[i, k]) - float(b[j, k])) ** 2 for k in range(a.shape[1])))

    d = [[dist(i, j) for j in range(len(b))] for i in range(len(a))]
    out = []
    for i in range(len(a)):
        j = min(range(len(b)), key=lambda jj: (d[i][jj], jj))
        back = min(range(len(a)), key=lambda ii: (d[ii][j], ii))
        if back == i:
            out.append((i, j, d[i][j]))
    return out


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 12),
    m=st.integers(1, 12),
    d=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    quantise=st.booleans(),
)
def test_matches_equal_oracle(n: int, m: int, d: int, seed: int, quantise: bool) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)).astype(np.float32)
    b = rng.normal(size=(m, d)).astype(np.float32)
    if quantise:  # coarse values create exact ties
        a, b = np.round(a), np.round(b)
    idx_a, idx_b, dist = mutual_nearest_neighbours(torch.from_numpy(a), torch.from_numpy(b))
    expected = oracle(a, b)
    assert idx_a.tolist() == [e[0] for e in expected]
    assert idx_b.tolist() == [e[1] for e in expected]
    np.testing.assert_allclose(dist.numpy(), [e[2] for e in expected], rtol=1e-9, atol=1e-9)


def test_matches_are_mutual_and_unique() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(200, 32), torch.randn(150, 32)
    idx_a, idx_b, _ = mutual_nearest_neighbours(a, b)
    assert len(set(idx_a.tolist())) == len(idx_a) and len(set(idx_b.tolist())) == len(idx_b)
    full = torch.cdist(a.double(), b.double())
    assert torch.equal(full.argmin(1)[idx_a], idx_b)
    assert torch.equal(full.argmin(0)[idx_b], idx_a)


def test_identical_sets_match_everything() -> None:
    a = torch.randn(30, 8)
    idx_a, idx_b, dist = mutual_nearest_neighbours(a, a.clone())
    assert torch.equal(idx_a, torch.arange(30)) and torch.equal(idx_b, torch.arange(30))
    assert float(dist.abs().max()) < 1e-6


def test_empty_and_bad_inputs() -> None:
    idx_a, idx_b, dist = mutual_nearest_neighbours(torch.zeros(0, 4), torch.randn(3, 4))
    assert idx_a.numel() == idx_b.numel() == dist.numel() == 0
    with pytest.raises(InputError):
        mutual_nearest_neighbours(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(InputError, match="NaN"):
        mutual_nearest_neighbours(torch.full((2, 3), float("nan")), torch.randn(3, 3))


def test_descriptors_and_grid_centres_row_major() -> None:
    fmap = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    desc = feature_descriptors(fmap)
    assert desc.shape == (12, 2)
    # position index = row * w + col
    assert desc[1 * 4 + 2].tolist() == [fmap[0, 0, 1, 2].item(), fmap[0, 1, 1, 2].item()]
    xy = grid_centres((3, 4), (30, 80))
    assert xy.shape == (12, 2)
    assert xy[1 * 4 + 2].tolist() == [(2 + 0.5) * 20.0, (1 + 0.5) * 10.0]
