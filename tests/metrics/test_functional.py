"""Tests of the pure metric functions against slow float64 oracles and hand-computed cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairx.core.errors import InputError
from pairx.metrics.functional import (
    MetricWarning,
    binned_bhattacharyya,
    inverted_residual_mean,
    match_coverage,
    spearman_rho,
)

# ---------------------------------------------------------------- oracles (pure Python loops)


def oracle_residual(xy_a: np.ndarray, xy_b: np.ndarray, h: np.ndarray) -> float:
    total = 0.0
    for (x, y), (u, v) in zip(xy_a.tolist(), xy_b.tolist(), strict=True):
        px = h[0][0] * x + h[0][1] * y + h[0][2]
        py = h[1][0] * x + h[1][1] * y + h[1][2]
        pw = h[2][0] * x + h[2][1] * y + h[2][2]
        total += math.hypot(px / pw - u, py / pw - v)
    return len(xy_a) / total


def oracle_coverage(ra: np.ndarray, rb: np.ndarray, ga: np.ndarray, gb: np.ndarray) -> float:
    ka = {(int(c), int(r)) for c, r in ga.tolist()}
    kb = {(int(c), int(r)) for c, r in gb.tolist()}
    num = sum(float(ra[r][c]) for c, r in ka) + sum(float(rb[r][c]) for c, r in kb)
    den = 0.0
    for row in ra.tolist() + rb.tolist():
        for v in row:
            den += v
    return num / den


def oracle_percentile(values: list[float], q: float) -> float:
    """numpy's default 'linear' percentile, by hand."""
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def oracle_kde(data: list[float], points: list[float]) -> list[float]:
    """Gaussian KDE with Scott's bandwidth (scipy's default), written out."""
    n = len(data)
    mean = sum(data) / n
    var = sum((d - mean) ** 2 for d in data) / (n - 1)
    bw = math.sqrt(var) * n ** (-1.0 / 5.0)
    out = []
    for x in points:
        acc = 0.0
        for d in data:
            acc += math.exp(-0.5 * ((x - d) / bw) ** 2) / (bw * math.sqrt(2 * math.pi))
        out.append(acc / n)
    return out


def oracle_binned_bhattacharyya(
    metric: list[float], sim: list[float], correct: list[bool], n_bins: int = 10
) -> float:
    cs = [s for s, c in zip(sim, correct, strict=True) if c]
    ins = [s for s, c in zip(sim, correct, strict=True) if not c]
    left = max(oracle_percentile(cs, 2.5), oracle_percentile(ins, 2.5))
    right = min(oracle_percentile(cs, 97.5), oracle_percentile(ins, 97.5))
    size = (right - left) / n_bins
    wsum, counted = 0.0, 0
    for i in range(n_bins):
        start = left + i * size
        end = start + size
        cor = [m for m, s, c in zip(metric, sim, correct, strict=True) if c and start < s < end]
        inc = [m for m, s, c in zip(metric, sim, correct, strict=True) if not c and start < s < end]
        if len(cor) < 3 or len(inc) < 3:
            continue
        lo, hi = min(cor + inc), max(cor + inc)
        pts = [lo + (hi - lo) * k / 999 for k in range(1000)]
        p = oracle_kde(cor, pts)
        q = oracle_kde(inc, pts)
        sp, sq = sum(p), sum(q)
        bc = sum(math.sqrt(a / sp * b / sq) for a, b in zip(p, q, strict=True))
        bd = -math.log(bc)
        if sum(cor) / len(cor) < sum(inc) / len(inc):
            bd = -bd
        wsum += bd * (len(cor) + len(inc))
        counted += len(cor) + len(inc)
    return wsum / counted


def oracle_spearman(a: list[float], b: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0 + 1.0
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb)


# ---------------------------------------------------------------- inverted residual mean


def test_residual_identity_homography_is_inf() -> None:
    xy = np.array([[1.0, 2.0], [30.0, 4.5]])
    assert inverted_residual_mean(xy, xy, np.eye(3)) == math.inf


def test_residual_hand_computed() -> None:
    # Translation by (+3, +4): residual of each point to a B point equal to A is 5 px.
    h = np.array([[1.0, 0, 3], [0, 1.0, 4], [0, 0, 1.0]])
    xy = np.array([[0.0, 0.0], [10.0, 10.0]])
    assert inverted_residual_mean(xy, xy, h) == pytest.approx(1 / 5)
    # Scaled homography (same projective map) gives the same value.
    assert inverted_residual_mean(xy, xy, 7.0 * h) == pytest.approx(1 / 5)


def test_residual_matches_oracle() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        a = rng.uniform(0, 224, (n, 2))
        b = rng.uniform(0, 224, (n, 2))
        h = np.eye(3) + rng.normal(0, 0.05, (3, 3)) * np.array(
            [[1, 1, 100], [1, 1, 100], [1e-3, 1e-3, 0]]
        )
        assert inverted_residual_mean(a, b, h) == pytest.approx(oracle_residual(a, b, h), rel=1e-12)


def test_residual_empty_warns_nan() -> None:
    with pytest.warns(MetricWarning):
        assert math.isnan(inverted_residual_mean(np.zeros((0, 2)), np.zeros((0, 2)), np.eye(3)))


@pytest.mark.parametrize(
    ("a", "b", "h"),
    [
        (np.array([[np.nan, 1.0]]), np.array([[0.0, 1.0]]), np.eye(3)),
        (np.zeros((2, 2)), np.zeros((3, 2)), np.eye(3)),
        (np.zeros((2, 3)), np.zeros((2, 3)), np.eye(3)),
        (np.zeros((2, 2)), np.zeros((2, 2)), np.eye(2)),
        (np.zeros((2, 2)), np.zeros((2, 2)), np.full((3, 3), np.nan)),
    ],
)
def test_residual_bad_input(a: np.ndarray, b: np.ndarray, h: np.ndarray) -> None:
    with pytest.raises(InputError):
        inverted_residual_mean(a, b, h)


# ---------------------------------------------------------------- match coverage


def test_coverage_hand_computed() -> None:
    ra = np.array([[1.0, 2.0], [3.0, 4.0]])
    rb = np.array([[0.0, 0.0, 10.0]])
    # (col, row): A cells (1,0)=2 and (0,1)=3 (the latter matched twice), B cell (2,0)=10.
    ga = np.array([[1, 0], [0, 1], [0, 1]])
    gb = np.array([[2, 0], [2, 0], [0, 0]])
    assert match_coverage(ra, rb, ga, gb) == pytest.approx((2 + 3 + 10 + 0) / 20)


def test_coverage_all_cells_is_one_and_none_is_zero() -> None:
    rng = np.random.default_rng(1)
    ra, rb = rng.random((3, 4)), rng.random((3, 4))
    cells = np.array([[c, r] for r in range(3) for c in range(4)])
    assert match_coverage(ra, rb, cells, cells[::-1]) == pytest.approx(1.0)
    assert match_coverage(ra, rb, np.zeros((0, 2), int), np.zeros((0, 2), int)) == 0.0


def test_coverage_matches_oracle() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        ra, rb = rng.random((h, w)), rng.random((h, w)) * 3
        n = int(rng.integers(1, 30))
        ga = np.stack([rng.integers(0, w, n), rng.integers(0, h, n)], 1)
        gb = np.stack([rng.integers(0, w, n), rng.integers(0, h, n)], 1)
        assert match_coverage(ra, rb, ga, gb) == pytest.approx(oracle_coverage(ra, rb, ga, gb))


def test_coverage_bad_input() -> None:
    r = np.ones((2, 2))
    with pytest.raises(InputError):
        match_coverage(r, r, np.array([[2, 0]]), np.array([[0, 0]]))  # col out of range
    with pytest.raises(InputError):
        match_coverage(-r, r, np.array([[0, 0]]), np.array([[0, 0]]))
    with pytest.raises(InputError):
        match_coverage(r, r, np.array([[0.5, 0]]), np.array([[0, 0]]))
    with pytest.warns(MetricWarning):
        assert math.isnan(match_coverage(0 * r, 0 * r, np.array([[0, 0]]), np.array([[0, 0]])))


# ---------------------------------------------------------------- spearman


def test_spearman_matches_oracle_and_drops_nan() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=50)
    b = a + rng.normal(size=50)
    a[[3, 9]] = np.nan
    keep = ~np.isnan(a)
    expected = oracle_spearman(a[keep].tolist(), b[keep].tolist())
    assert spearman_rho(a, b) == pytest.approx(expected, rel=1e-10)
    assert spearman_rho(np.arange(10.0), np.arange(10.0) ** 3) == pytest.approx(1.0)


def test_spearman_degenerate() -> None:
    with pytest.warns(MetricWarning):
        assert math.isnan(spearman_rho(np.ones(5), np.arange(5.0)))
    with pytest.warns(MetricWarning):
        assert math.isnan(spearman_rho([1.0, np.nan], [1.0, 2.0]))


# ---------------------------------------------------------------- binned Bhattacharyya


def _pairs(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, ...]:
    correct = np.arange(n) % 2 == 0
    sim = np.where(correct, rng.normal(0.6, 0.1, n), rng.normal(0.5, 0.1, n))
    metric = rng.normal(0, 1, n) + shift * correct
    return metric, sim, correct


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bhattacharyya_matches_oracle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    metric, sim, correct = _pairs(rng, 300, 0.7)
    got = binned_bhattacharyya(metric, sim, correct)
    want = oracle_binned_bhattacharyya(metric.tolist(), sim.tolist(), correct.tolist())
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_bhattacharyya_oracle_other_bin_count() -> None:
    rng = np.random.default_rng(7)
    metric, sim, correct = _pairs(rng, 200, -0.4)
    got = binned_bhattacharyya(metric, sim, correct, n_bins=4)
    want = oracle_binned_bhattacharyya(metric.tolist(), sim.tolist(), correct.tolist(), 4)
    assert got == pytest.approx(want, rel=1e-9)


def test_bhattacharyya_perfect_separation_and_sign_flip() -> None:
    rng = np.random.default_rng(4)
    n = 400
    correct = np.arange(n) % 2 == 0
    sim = rng.uniform(0.4, 0.6, n)  # same similarity distribution for both sides
    metric = np.where(correct, rng.uniform(10, 11, n), rng.uniform(0, 1, n))
    delta = binned_bhattacharyya(metric, sim, correct)
    assert delta > 5.0
    # Swapping labels flips the sign exactly (the distance is symmetric).
    assert binned_bhattacharyya(metric, sim, ~correct) == pytest.approx(-delta)


def test_bhattacharyya_identical_distributions_near_zero() -> None:
    rng = np.random.default_rng(5)
    n = 2000
    correct = rng.random(n) < 0.5
    sim = rng.uniform(0, 1, n)
    metric = rng.normal(0, 1, n)
    assert abs(binned_bhattacharyya(metric, sim, correct)) < 0.05


def test_bhattacharyya_open_bounds_exclude_edges() -> None:
    # Similarities on a coarse lattice put many pairs exactly on bin edges (0, 0.25, 0.5, ...),
    # where open bounds must exclude them: the oracle uses strict comparisons too, and a
    # closed-bound variant (edges shifted outwards) must give a different answer.
    rng = np.random.default_rng(6)
    n = 400
    correct = np.arange(n) % 2 == 0
    sim = rng.integers(0, 9, n) / 8.0
    metric = rng.normal(0, 1, n) + 0.8 * correct
    got = binned_bhattacharyya(metric, sim, correct, n_bins=4)
    want = oracle_binned_bhattacharyya(metric.tolist(), sim.tolist(), correct.tolist(), 4)
    assert got == pytest.approx(want, rel=1e-9)
    on_edge = np.isin(sim, [0.0, 0.25, 0.5, 0.75, 1.0])
    assert on_edge.sum() > 100  # the case really exercises the bounds


def test_bhattacharyya_degenerate_cases_give_nan() -> None:
    rng = np.random.default_rng(8)
    n = 100
    correct = np.arange(n) % 2 == 0
    # No overlap of the similarity windows.
    sim = np.where(correct, rng.uniform(0.8, 0.9, n), rng.uniform(0.1, 0.2, n))
    with pytest.warns(MetricWarning, match="overlap"):
        assert math.isnan(binned_bhattacharyya(rng.normal(size=n), sim, correct))
    # Zero-variance side.
    sim = rng.uniform(0.4, 0.6, n)
    metric = np.where(correct, 1.0, rng.normal(size=n))
    with pytest.warns(MetricWarning, match="zero-variance"):
        assert math.isnan(binned_bhattacharyya(metric, sim, correct))
    # Only one side.
    with pytest.warns(MetricWarning):
        assert math.isnan(binned_bhattacharyya(rng.normal(size=n), sim, np.ones(n, bool)))
    # Too few points per bin.
    with pytest.warns(MetricWarning, match="no bin"):
        assert math.isnan(
            binned_bhattacharyya(rng.normal(size=8), rng.uniform(size=8), correct[:8])
        )


def test_bhattacharyya_drops_infinite_metric_with_warning() -> None:
    rng = np.random.default_rng(9)
    metric, sim, correct = _pairs(rng, 300, 0.7)
    with_inf = metric.copy()
    with_inf[[0, 5]] = np.inf
    keep = np.isfinite(with_inf)
    with pytest.warns(MetricWarning, match="non-finite"):
        got = binned_bhattacharyya(with_inf, sim, correct)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        want = binned_bhattacharyya(metric[keep], sim[keep], correct[keep])
    assert got == want


def test_bhattacharyya_bad_shapes() -> None:
    with pytest.raises(InputError):
        binned_bhattacharyya(np.zeros(3), np.zeros(4), np.zeros(3, bool))
    with pytest.raises(InputError):
        binned_bhattacharyya(np.zeros((3, 1)), np.zeros(3), np.zeros(3, bool))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shift=st.floats(-2, 2),
    scale=st.floats(0.1, 100),
)
def test_bhattacharyya_properties(seed: int, shift: float, scale: float) -> None:
    """Invariant to positive affine maps of the metric; sign flips with swapped labels."""
    rng = np.random.default_rng(seed)
    metric, sim, correct = _pairs(rng, 120, shift)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        d = binned_bhattacharyya(metric, sim, correct)
        d_affine = binned_bhattacharyya(metric * scale + 3.0, sim, correct)
        d_swap = binned_bhattacharyya(metric, sim, ~correct)
    if math.isnan(d):
        assert math.isnan(d_affine)
        return
    assert d_affine == pytest.approx(d, rel=1e-6, abs=1e-9)
    assert d_swap == pytest.approx(-d, rel=1e-9, abs=1e-12)
