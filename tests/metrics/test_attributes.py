"""AMD metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from pairx.core.errors import InputError
from pairx.metrics.attributes import (
    adre,
    argmax_in_region,
    average_precision,
    retrieval_from_distances,
    x_map,
)


def test_adre() -> None:
    assert adre(np.array([1.0, 2.0, 0.0]), np.array([1.1, 1.0, 5.0])) == pytest.approx(0.3)
    with pytest.raises(InputError):
        adre(np.zeros(2), np.ones(2))


def test_average_precision_and_x_map() -> None:
    assert average_precision(np.array([3.0, 2.0, 1.0]), np.array([True, False, True])) == (
        pytest.approx((1 + 2 / 3) / 2))
    assert np.isnan(average_precision(np.array([1.0]), np.array([False])))
    d_k = np.array([[0.5, 0.1, 0.3], [0.2, 0.2, 0.2], [0.1, 0.4, 0.2]])
    ex = np.array([[True, False, False], [False, False, False], [True, False, False]])
    xe, xc, n = x_map(d_k, ex)  # pair 2 has no exclusive attribute: skipped
    assert n == 2
    assert xe == pytest.approx((1.0 + 1 / 3) / 2)
    # common ranked by increasing distance: pair 1 -> ranks 1, 2 (AP 1); pair 3 -> 0.1 (the
    # exclusive one) first, so the common ones at ranks 2, 3 (AP (1/2 + 2/3) / 2)
    assert xc == pytest.approx((1.0 + (1 / 2 + 2 / 3) / 2) / 2)
    with pytest.raises(InputError):
        x_map(d_k, ex[:, :2])


def test_retrieval_from_distances() -> None:
    d = np.array([[0, 1, 5, 6], [1, 0, 4, 2], [5, 4, 0, 3], [6, 2, 3, 0]], float)
    r1, m = retrieval_from_distances(d, ["a", "a", "b", "b"])
    # queries 0, 2, 3 hit at rank 1; query 1's match is second (after item 3)
    assert r1 == pytest.approx(0.75) and m == pytest.approx((1 + 0.5 + 1 + 1) / 4)


def test_argmax_in_region() -> None:
    att = np.zeros((20, 20))
    att[5, 5] = 1.0
    region = np.zeros((20, 20), bool)
    region[5, 8] = True
    assert argmax_in_region(att, region, 0) == (False, pytest.approx(1 / 400))
    hit, chance = argmax_in_region(att, region, 3)
    assert hit and chance > 1 / 400
    with pytest.raises(InputError):
        argmax_in_region(att, region[:5], 1)
