"""Metrics of an AMD interpreter (the AMD paper's Section 4.3, plus localisation).

* :func:`adre` -- Average Distance Reconstruction Error ``mean |d - d_hat| / d``;
* :func:`x_map` -- X-mAP_e (exclusive attributes ranked first by decreasing ``d^k``) and
  X-mAP_c (common attributes ranked first by increasing ``d^k``), averaged over pairs that have
  both kinds;
* :func:`retrieval_from_distances` -- rank-1 and mAP of a distance matrix (to compare ``d`` with
  ``d_hat``);
* :func:`argmax_in_region` -- whether an attention map's maximum lies in a (dilated) true region,
  and the area-based chance of that.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from pairx.core.errors import InputError
from pairx.metrics.retrieval import ranked_average_precision, retrieval_per_query

__all__ = ["adre", "argmax_in_region", "average_precision", "retrieval_from_distances", "x_map"]


def adre(d: np.ndarray, d_hat: np.ndarray) -> float:
    """``mean |d - d_hat| / d`` over pairs with ``d > 0``."""
    d, d_hat = np.asarray(d, np.float64), np.asarray(d_hat, np.float64)
    ok = d > 0
    if not ok.any():
        raise InputError("no pair with a positive distance")
    return float(np.mean(np.abs(d[ok] - d_hat[ok]) / d[ok]))


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """AP of ranking ``scores`` in decreasing order (stable) against bool ``relevant``;
    ``nan`` when nothing is relevant."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return ranked_average_precision(np.asarray(relevant, bool)[order])


def x_map(d_k: np.ndarray, exclusive: np.ndarray) -> tuple[float, float, int]:
    """X-mAP_e and X-mAP_c of attribute distances.

    Parameters
    ----------
    d_k
        ``(P, M)`` attribute distances of ``P`` pairs.
    exclusive
        ``(P, M)`` bool, ``a_i XOR a_j``.

    Returns
    -------
    xmap_e, xmap_c, n
        The two means over the ``n`` pairs with at least one exclusive and one common attribute.
    """
    d_k, ex = np.asarray(d_k, np.float64), np.asarray(exclusive, bool)
    if d_k.shape != ex.shape or d_k.ndim != 2:
        raise InputError(f"d_k {d_k.shape} and exclusive {ex.shape} must both be (P, M)")
    both = ex.any(1) & (~ex).any(1)
    if not both.any():
        return float("nan"), float("nan"), 0
    ap_e = [average_precision(d_k[p], ex[p]) for p in np.flatnonzero(both)]
    ap_c = [average_precision(-d_k[p], ~ex[p]) for p in np.flatnonzero(both)]
    return float(np.mean(ap_e)), float(np.mean(ap_c)), int(both.sum())


def retrieval_from_distances(
    distance: np.ndarray, identities: Sequence[object]
) -> tuple[float, float]:
    """Rank-1 and mAP of an ``(N, N)`` distance matrix (queries without a match skipped)."""
    valid, rank1, ap = retrieval_per_query(-np.asarray(distance, np.float64), identities)
    if not valid.any():
        raise InputError("no query has another image of its identity")
    return float(rank1[valid].mean()), float(ap[valid].mean())


def argmax_in_region(attention: np.ndarray, region: np.ndarray, dilate_px: int) -> tuple[bool,
                                                                                          float]:
    """Whether ``attention``'s maximum falls in ``region`` dilated by ``dilate_px``.

    Parameters
    ----------
    attention
        ``(H, W)`` map in the image frame.
    region
        ``(H, W)`` bool true region.
    dilate_px
        Dilation radius in pixels (a disc).

    Returns
    -------
    hit, chance
        The hit, and the dilated region's share of the image (the hit rate of a uniformly
        random point).
    """
    if attention.shape != region.shape:
        raise InputError(f"attention {attention.shape} and region {region.shape} differ")
    r = max(0, int(dilate_px))
    mask = np.asarray(region, np.uint8)
    if r:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        mask = np.asarray(cv2.dilate(mask, kernel), np.uint8)
    y, x = np.unravel_index(int(np.argmax(attention)), attention.shape)
    return bool(mask[y, x]), float(mask.mean())
