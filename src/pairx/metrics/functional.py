"""Pure PAIR-X metric functions (paper section 3.3, supplement B.3, Algorithm 1).

Every function takes plain numpy arrays (anything ``np.asarray`` accepts) and returns a Python
``float``. Invalid input (wrong shapes, NaN coordinates) raises :class:`~pairx.core.errors.
InputError`; statistically degenerate data (an empty match set, no overlap between correct and
incorrect similarities, a zero-variance side) gives ``nan`` together with a
:class:`MetricWarning`, never an exception, so that one bad dataset cannot stop an evaluation.

Conventions
-----------
* Pixel coordinates are ``(x, y)`` = ``(column, row)`` floats, shape ``(N, 2)``.
* Grid coordinates are ``(col, row)`` integers on an ``(h, w)`` feature map, shape ``(N, 2)``.
* A homography is a ``(3, 3)`` matrix mapping homogeneous pixels of image A to image B.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

from pairx.core.errors import InputError

__all__ = [
    "MetricWarning",
    "bhattacharyya_distance",
    "binned_bhattacharyya",
    "inverted_residual_mean",
    "match_coverage",
    "project_points",
    "spearman_rho",
]

#: Points evaluated per KDE in Algorithm 1.
KDE_POINTS = 1000
#: Minimum number of correct and of incorrect pairs a bin needs to be used (Algorithm 1).
MIN_PER_BIN = 3


class MetricWarning(UserWarning):
    """A metric is undefined for the given data and was returned as ``nan`` (or data dropped)."""


def _warn(message: str) -> None:
    warnings.warn(message, MetricWarning, stacklevel=3)


def _points(xy: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"{name} must have shape (N, 2) of (x, y) pixels; got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite coordinates")
    return arr


def _homography(h: ArrayLike) -> np.ndarray:
    mat = np.asarray(h, dtype=np.float64)
    if mat.shape != (3, 3):
        raise InputError(f"homography must be a (3, 3) matrix; got shape {mat.shape}")
    if not np.isfinite(mat).all():
        raise InputError("homography contains NaN or infinite entries")
    return mat


def project_points(xy: ArrayLike, homography: ArrayLike) -> np.ndarray:
    """Apply a homography to pixel points (Eq. 3).

    Parameters
    ----------
    xy
        ``(N, 2)`` pixel ``(x, y)`` points of image A.
    homography
        ``(3, 3)`` matrix mapping homogeneous A pixels to B pixels.

    Returns
    -------
    np.ndarray
        ``(N, 2)`` float64 projected points in image B. Points that map to infinity
        (``w' == 0``) are returned as ``inf``.
    """
    pts = _points(xy, "xy")
    mat = _homography(homography)
    hom = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ mat.T
    w = hom[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = hom[:, :2] / w
    out[(w[:, 0] == 0)] = np.inf
    return out


def inverted_residual_mean(xy_a: ArrayLike, xy_b: ArrayLike, homography: ArrayLike) -> float:
    """Inverted residual mean ``S_1`` of a set of matches (paper Eq. 3-4).

    Each matched point of image A is projected into image B with ``homography``; the score is
    the number of matches divided by the sum of the Euclidean distances between the projected
    points and their matched points in B, i.e. the reciprocal of the mean residual.

    Parameters
    ----------
    xy_a, xy_b
        ``(N, 2)`` pixel ``(x, y)`` positions of the N matches in image A and image B (all
        matches, before any relevance filtering).
    homography
        ``(3, 3)`` matrix mapping pixels of A to pixels of B.

    Returns
    -------
    float
        ``N / sum ||H(p_a) - p_b||``. ``inf`` when every residual is exactly zero (the matches
        follow the homography perfectly); ``0.0`` when a point maps to infinity; ``nan`` with a
        :class:`MetricWarning` when there are no matches.

    Raises
    ------
    InputError
        Shapes are not ``(N, 2)``/``(3, 3)``, the two point sets differ in length, or a
        coordinate is NaN/inf.
    """
    a = _points(xy_a, "xy_a")
    b = _points(xy_b, "xy_b")
    if len(a) != len(b):
        raise InputError(f"xy_a and xy_b must have the same length; got {len(a)} and {len(b)}")
    mat = _homography(homography)
    if len(a) == 0:
        _warn("inverted_residual_mean of an empty match set is undefined; returning nan")
        return math.nan
    projected = project_points(a, mat)
    residuals = np.linalg.norm(projected - b, axis=1)
    total = float(residuals.sum())
    if total == 0.0:
        return math.inf
    return float(len(a) / total)


def _grid(grid: ArrayLike, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(grid)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"{name} must have shape (N, 2) of (col, row) cells; got {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise InputError(f"{name} must hold integer (col, row) grid cells")
    arr = arr.astype(np.int64)
    h, w = shape
    if arr.size and (
        arr[:, 0].min() < 0 or arr[:, 0].max() >= w or arr[:, 1].min() < 0 or arr[:, 1].max() >= h
    ):
        raise InputError(
            f"{name} has cells outside the {h}x{w} relevance map (cols < {w}, rows < {h})"
        )
    return arr


def _relevance(rel: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(rel, dtype=np.float64)
    if arr.ndim != 2:
        raise InputError(f"{name} must be an (h, w) relevance map; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    if (arr < 0).any():
        raise InputError(
            f"{name} has negative values; match coverage needs non-negative relevance maps "
            "(PAIR-X uses the absolute relevance summed over channels)"
        )
    return arr


def match_coverage(
    relevance_a: ArrayLike, relevance_b: ArrayLike, grid_a: ArrayLike, grid_b: ArrayLike
) -> float:
    """Relevance-weighted match coverage (paper Eq. 5).

    Parameters
    ----------
    relevance_a, relevance_b
        ``(h_a, w_a)`` and ``(h_b, w_b)`` non-negative intermediate relevance maps.
    grid_a, grid_b
        ``(N, 2)`` integer ``(col, row)`` cells of the matches (all cross-checked matches,
        before relevance filtering). A cell matched several times is counted once (the sets
        ``K_1`` and ``K_2`` of Eq. 5).

    Returns
    -------
    float
        ``(sum_{K_1} R^1 + sum_{K_2} R^2) / (sum R^1 + sum R^2)`` in ``[0, 1]``; ``0.0`` for no
        matches; ``nan`` with a :class:`MetricWarning` when both maps are all zero.

    Raises
    ------
    InputError
        Wrong shapes, negative or non-finite relevance, non-integer or out-of-range cells.
    """
    ra = _relevance(relevance_a, "relevance_a")
    rb = _relevance(relevance_b, "relevance_b")
    ga = _grid(grid_a, ra.shape, "grid_a")
    gb = _grid(grid_b, rb.shape, "grid_b")
    if len(ga) != len(gb):
        raise InputError(
            f"grid_a and grid_b must have the same length; got {len(ga)} and {len(gb)}"
        )
    total = float(ra.sum() + rb.sum())
    if total == 0.0:
        _warn("match_coverage is undefined when both relevance maps are zero; returning nan")
        return math.nan
    ua = np.unique(ga, axis=0) if len(ga) else ga
    ub = np.unique(gb, axis=0) if len(gb) else gb
    covered = float(ra[ua[:, 1], ua[:, 0]].sum() + rb[ub[:, 1], ub[:, 0]].sum())
    return covered / total


def _vector(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D array; got shape {arr.shape}")
    return arr


def spearman_rho(metric: ArrayLike, similarity: ArrayLike) -> float:
    """Spearman rank correlation of a PAIR-X metric with the model similarity.

    Pairs where either value is NaN are dropped (``+inf`` metric values are kept: they rank
    highest). Fewer than 3 remaining pairs or a constant input gives ``nan`` with a warning.

    Parameters
    ----------
    metric, similarity
        ``(P,)`` per-pair metric values and cosine similarities.

    Returns
    -------
    float
        Spearman's rho in ``[-1, 1]`` or ``nan``.
    """
    m = _vector(metric, "metric")
    s = _vector(similarity, "similarity")
    if m.shape != s.shape:
        raise InputError(
            f"metric and similarity must have the same length; got {m.shape}, {s.shape}"
        )
    keep = ~(np.isnan(m) | np.isnan(s))
    m, s = m[keep], s[keep]
    if len(m) < 3:
        _warn(f"spearman_rho needs at least 3 pairs without NaN; got {len(m)}; returning nan")
        return math.nan
    if np.all(m == m[0]) or np.all(s == s[0]):
        _warn("spearman_rho of a constant input is undefined; returning nan")
        return math.nan
    result = stats.spearmanr(m, s)
    return float(result.statistic)


def bhattacharyya_distance(p: ArrayLike, q: ArrayLike) -> float:
    """Bhattacharyya distance ``-ln sum_i sqrt(p_i q_i)`` of two discrete distributions.

    Parameters
    ----------
    p, q
        ``(K,)`` non-negative weights, each summing to 1.

    Returns
    -------
    float
        The distance (``inf`` when the supports are disjoint).
    """
    pa, qa = _vector(p, "p"), _vector(q, "q")
    coefficient = float(np.sum(np.sqrt(pa * qa)))
    if coefficient <= 0.0:
        return math.inf
    return float(-math.log(min(coefficient, 1.0)))


def _log_kde_on_grid(values: np.ndarray, grid: np.ndarray) -> np.ndarray | None:
    """Log of a scipy Gaussian KDE (default Scott bandwidth) on ``grid``, normalised to sum to 1.

    Working in log space keeps far-apart distributions finite: their densities underflow to
    zero in float64, but the log-densities (``gaussian_kde.logpdf``) do not. Returns ``None``
    for a zero-variance (singular) sample.
    """
    if len(values) < 2 or np.all(values == values[0]):
        return None
    try:
        log_density = stats.gaussian_kde(values).logpdf(grid)
    except np.linalg.LinAlgError:
        return None
    log_total = float(special.logsumexp(log_density))
    if not np.isfinite(log_total):
        return None
    return np.asarray(log_density - log_total, dtype=np.float64)


def binned_bhattacharyya(
    metric: ArrayLike, similarity: ArrayLike, correct: ArrayLike, n_bins: int = 10
) -> float:
    """Binned Bhattacharyya separability ``Delta`` of correct and incorrect pairs (Algorithm 1).

    The *hard* window is the overlap of the middle 95 % (``np.percentile`` 2.5 and 97.5) of the
    correct and of the incorrect similarities. It is split into ``n_bins`` equal bins with open
    bounds (``start < s < end``). Bins with fewer than 3 correct or 3 incorrect pairs are
    skipped. In each bin, a ``scipy.stats.gaussian_kde`` (default bandwidth) of each side's
    metric values is evaluated on 1000 evenly spaced points over the bin's ``[min, max]``
    metric range and normalised to sum to 1; the bin distance is ``-ln sum sqrt(p q)``,
    negated when the correct mean is below the incorrect mean. The result is the average of
    the bin distances weighted by the bin's pair counts.

    Non-finite metric values (``+inf`` inverted residual means of matches that follow the
    homography exactly, or ``nan`` metrics of pairs without matches) cannot be placed on a
    KDE: those pairs are dropped before anything else (percentiles included), with a
    :class:`MetricWarning` giving their number. Pairs with a non-finite similarity are dropped
    the same way.

    Parameters
    ----------
    metric
        ``(P,)`` per-pair PAIR-X metric (e.g. inverted residual mean or match coverage).
    similarity
        ``(P,)`` per-pair model cosine similarity.
    correct
        ``(P,)`` bool, True where the pair shows the same individual.
    n_bins
        Number of equal bins over the hard window (10 in the paper).

    Returns
    -------
    float
        ``Delta``; positive when correct pairs have higher metric values than incorrect pairs
        of the same similarity. ``nan`` with a :class:`MetricWarning` when it is undefined: one
        side empty, no overlap of the two 95 % windows, a zero-variance side in a used bin
        (its KDE is singular), or no usable bin. Far-apart (perfectly separated) sides give a
        large finite distance: the KDEs are handled in log space.

    Raises
    ------
    InputError
        The three arrays are not 1-D of equal length, or ``n_bins < 1``.
    """
    m = _vector(metric, "metric")
    s = _vector(similarity, "similarity")
    c = np.asarray(correct)
    if c.ndim != 1:
        raise InputError(f"correct must be a 1-D bool array; got shape {c.shape}")
    if not (len(m) == len(s) == len(c)):
        raise InputError(
            "metric, similarity and correct must have the same length; "
            f"got {len(m)}, {len(s)}, {len(c)}"
        )
    if n_bins < 1:
        raise InputError(f"n_bins must be >= 1; got {n_bins}")
    c = c.astype(bool)
    finite = np.isfinite(m) & np.isfinite(s)
    if not finite.all():
        _warn(
            f"binned_bhattacharyya: dropping {int((~finite).sum())} of {len(m)} pairs with a "
            "non-finite metric or similarity (e.g. an infinite inverted residual mean)"
        )
        m, s, c = m[finite], s[finite], c[finite]
    if not c.any() or c.all():
        _warn("binned_bhattacharyya needs both correct and incorrect pairs; returning nan")
        return math.nan
    s_cor, s_inc = s[c], s[~c]
    left = max(float(np.percentile(s_cor, 2.5)), float(np.percentile(s_inc, 2.5)))
    right = min(float(np.percentile(s_cor, 97.5)), float(np.percentile(s_inc, 97.5)))
    if not right > left:
        _warn(
            "binned_bhattacharyya: the middle 95% of correct and incorrect similarities do not "
            f"overlap ({left:.4g} >= {right:.4g}); returning nan"
        )
        return math.nan
    bin_size = (right - left) / n_bins
    weighted_sum = 0.0
    points_counted = 0
    for i in range(n_bins):
        start = left + i * bin_size
        end = start + bin_size
        in_bin = (s > start) & (s < end)
        cor = m[in_bin & c]
        inc = m[in_bin & ~c]
        if len(cor) < MIN_PER_BIN or len(inc) < MIN_PER_BIN:
            continue
        lo = min(float(cor.min()), float(inc.min()))
        hi = max(float(cor.max()), float(inc.max()))
        grid = np.linspace(lo, hi, KDE_POINTS)
        log_p = _log_kde_on_grid(cor, grid)
        log_q = _log_kde_on_grid(inc, grid)
        if log_p is None or log_q is None:
            _warn(
                f"binned_bhattacharyya: bin {i} ({start:.4g} < s < {end:.4g}) has a zero-variance "
                "side, its KDE is singular; returning nan"
            )
            return math.nan
        # -ln sum sqrt(p q), computed as -logsumexp((ln p + ln q) / 2).
        bd = max(-float(special.logsumexp(0.5 * (log_p + log_q))), 0.0)
        if float(cor.mean()) < float(inc.mean()):
            bd = -bd
        count = len(cor) + len(inc)
        weighted_sum += bd * count
        points_counted += count
    if points_counted == 0:
        _warn(
            f"binned_bhattacharyya: no bin has >= {MIN_PER_BIN} correct and >= {MIN_PER_BIN} "
            "incorrect pairs; returning nan"
        )
        return math.nan
    return weighted_sum / points_counted
