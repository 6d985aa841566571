"""Ground-truth faithfulness of PAIR-X matches on the synthetic benchmark (beyond the paper).

On synthetic pairs of the same individual the true correspondence of every point is known
(:func:`pairx.data.synthetic.true_points`). A match ``(p_a, p_b)`` is *faithful* when the true
position of ``p_a`` in image B lies within one feature-grid cell of ``p_b``: Chebyshev
distance in cells ``max(|dx| / cell_w, |dy| / cell_h) <= 1``, where ``cell_w = W / w`` and
``cell_h = H / h`` are the layer's cell size in model-input pixels. So the matched cell or one
of its 8 neighbours must contain the true point.

Reported per pair (and averaged per layer by :mod:`pairx.evaluation.report`):

* ``faithful``: hits among the top-``n`` matches (by relevance) divided by ``n``; a match whose
  true correspondence is undefined (``p_a`` off the animal, or occluded in B) counts as a miss.
  A pair where no cell of A has a true correspondence (opposite flanks) gets ``nan``.
* ``faithful_defined``: hits divided by the number of top matches with a defined true
  correspondence.
* ``random``: the same hit rate for ``n`` random matches: random cell centres of A whose true
  correspondence is defined, each paired with a random cell centre of B that lies on the
  animal in B. This is the chance level PAIR-X must beat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pairx.core.errors import InputError
from pairx.metrics.homography import GroundTruthHomography, input_to_source

__all__ = ["FaithfulnessResult", "cell_hits", "on_animal", "pair_faithfulness"]


@dataclass(frozen=True)
class FaithfulnessResult:
    """Faithfulness of one pair at one layer (fractions in ``[0, 1]``, ``nan`` if undefined)."""

    faithful: float
    faithful_defined: float
    random: float
    n_top: int
    n_defined: int


def cell_hits(true_b: np.ndarray, xy_b: np.ndarray, cell: tuple[float, float]) -> np.ndarray:
    """Whether each true position lies within one cell (Chebyshev) of the matched position.

    Parameters
    ----------
    true_b
        ``(N, 2)`` true pixel ``(x, y)`` in B (NaN rows = undefined).
    xy_b
        ``(N, 2)`` matched pixel ``(x, y)`` in B.
    cell
        ``(cell_h, cell_w)`` cell size in pixels.

    Returns
    -------
    np.ndarray
        ``(N,)`` bool; False for undefined rows.
    """
    t = np.asarray(true_b, np.float64)
    m = np.asarray(xy_b, np.float64)
    if t.shape != m.shape or t.ndim != 2 or t.shape[1] != 2:
        raise InputError(f"true_b and xy_b must both be (N, 2); got {t.shape} and {m.shape}")
    ch, cw = cell
    with np.errstate(invalid="ignore"):
        dist = np.maximum(np.abs(t[:, 0] - m[:, 0]) / cw, np.abs(t[:, 1] - m[:, 1]) / ch)
        return np.asarray(dist <= 1.0 + 1e-9)


def _cell_centres(h: int, w: int, size: tuple[int, int]) -> np.ndarray:
    """``(h * w, 2)`` pixel centres ``(x, y)`` of the grid cells in a ``size`` (H, W) frame."""
    ch, cw = size[0] / h, size[1] / w
    rows, cols = np.mgrid[0:h, 0:w]
    return np.stack([(cols.ravel() + 0.5) * cw - 0.5, (rows.ravel() + 0.5) * ch - 0.5], axis=1)


def pair_faithfulness(
    truth: GroundTruthHomography,
    key_a: str,
    key_b: str,
    explanation: Any,
    *,
    n_top: int = 20,
    rng: np.random.Generator,
) -> FaithfulnessResult:
    """Ground-truth faithfulness of one explanation and of the random-match baseline.

    Parameters
    ----------
    truth
        Ground-truth source of the synthetic dataset.
    key_a, key_b
        ``image_id`` of the two images (the same individual).
    explanation
        A :class:`pairx.core.results.PairExplanation` (``matches`` sorted by relevance,
        ``relevance_a`` of shape ``(h, w)``, ``image_a`` of shape ``(H, W, 3)``).
    n_top
        Number of top matches checked.
    rng
        Generator of the random baseline.

    Returns
    -------
    FaithfulnessResult
    """
    if n_top < 1:
        raise InputError(f"n_top must be >= 1; got {n_top}")
    size = (int(explanation.image_a.shape[0]), int(explanation.image_a.shape[1]))
    h, w = (int(v) for v in np.shape(explanation.relevance_a))
    hb, wb = (int(v) for v in np.shape(explanation.relevance_b))
    cell = (size[0] / h, size[1] / w)
    m = explanation.matches
    n = min(n_top, len(m))
    if n == 0:
        faithful = defined_rate = math.nan
        n_defined = 0
    else:
        xy_a = np.asarray(m.xy_a, np.float64)[:n]
        xy_b = np.asarray(m.xy_b, np.float64)[:n]
        true_b = truth.true_points(key_a, key_b, xy_a, size)
        defined = np.isfinite(true_b).all(axis=1)
        hits = cell_hits(true_b, xy_b, cell)
        n_defined = int(defined.sum())
        faithful = float(hits.sum() / n)
        defined_rate = float(hits.sum() / n_defined) if n_defined else math.nan
    random = _random_baseline(truth, key_a, key_b, (h, w), (hb, wb), size, n_top, rng)
    if math.isnan(random):  # no cell of A has a true correspondence: undefined for the pair
        faithful = defined_rate = math.nan
    return FaithfulnessResult(faithful, defined_rate, random, n, n_defined)


def _random_baseline(
    truth: GroundTruthHomography,
    key_a: str,
    key_b: str,
    grid_a: tuple[int, int],
    grid_b: tuple[int, int],
    size: tuple[int, int],
    n: int,
    rng: np.random.Generator,
) -> float:
    centres_a = _cell_centres(*grid_a, size)
    true_b = truth.true_points(key_a, key_b, centres_a, size)
    ok_a = np.flatnonzero(np.isfinite(true_b).all(axis=1))
    centres_b = _cell_centres(*grid_b, size)
    mask_b = on_animal(truth, key_b, centres_b, size)
    ok_b = np.flatnonzero(mask_b)
    if len(ok_a) == 0 or len(ok_b) == 0:
        return math.nan
    pick_a = rng.choice(ok_a, size=n, replace=len(ok_a) < n)
    pick_b = rng.choice(ok_b, size=n, replace=True)
    cell = (size[0] / grid_b[0], size[1] / grid_b[1])
    hits = cell_hits(true_b[pick_a], centres_b[pick_b], cell)
    return float(hits.mean())


def on_animal(
    truth: GroundTruthHomography, key: str, xy: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """``(N,)`` bool: model-input points of image ``key`` that lie on the animal's part mask."""
    gt = truth.ground_truth(key)
    mask = np.asarray(gt.part_mask)
    src = input_to_source(xy, size, truth.dataset.by_id(key), mask.shape[:2])
    cols = np.clip(np.round(src[:, 0]).astype(int), 0, mask.shape[1] - 1)
    rows = np.clip(np.round(src[:, 1]).astype(int), 0, mask.shape[0] - 1)
    return np.asarray(mask[rows, cols] > 0)
