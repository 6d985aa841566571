"""Partial-similarity retrieval (Zhu et al. 2021, Section VII-B): rank a gallery by how similar
it is to one region of the query.

The query's per-position vectors ``c_ij = W_ij A_ij`` (:func:`pairx.explainers.zhu.fold_head`)
of the cells whose centres lie in the region of interest are summed into an equivalent feature
``f`` (the paper merges several positions for large regions); its similarity to a reference
embedding ``E^r`` is ``f . E^r / (|E^q| |E^r|)`` (normalised by the whole query's norm, as the
paper does), which is the sum of the region's point-specific maps. Reference embeddings are the
model's ordinary embeddings, so a cached gallery is ranked with one matrix product.
"""

from __future__ import annotations

import numpy as np

from pairx.core.errors import InputError
from pairx.explainers.matching import grid_centres
from pairx.explainers.zhu import HeadFold

__all__ = ["partial_feature", "partial_similarity"]


def partial_feature(fold: HeadFold, roi: tuple[float, float, float, float],
                    size: tuple[int, int]) -> np.ndarray:
    """``(D,)`` sum of ``c_ij`` over the cells whose centres lie in ``roi``.

    Parameters
    ----------
    fold
        The query's head fold.
    roi
        ``(x0, y0, x1, y1)`` in the query's model-input frame of ``size`` ``(H, W)``.

    Raises
    ------
    InputError
        The region is empty, outside the image, or holds no cell centre.
    """
    x0, y0, x1, y1 = (float(v) for v in roi)
    h_img, w_img = size
    if not (x1 > x0 and y1 > y0):
        raise InputError(f"the region of interest ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty; "
                         "give x0 < x1 and y0 < y1")
    if x1 <= 0 or y1 <= 0 or x0 >= w_img or y0 >= h_img:
        raise InputError(f"the region of interest lies outside the {w_img}x{h_img} image")
    h, w = fold.contributions.shape[1:]
    centres = grid_centres((h, w), size).numpy()
    inside = ((centres[:, 0] >= x0) & (centres[:, 0] <= x1) & (centres[:, 1] >= y0)
              & (centres[:, 1] <= y1))
    if not inside.any():
        raise InputError(f"the region of interest holds no feature cell (cells are "
                         f"{w_img / w:g} x {h_img / h:g} pixels); enlarge it")
    c = fold.contributions.reshape(fold.contributions.shape[0], -1)
    return np.asarray(c[:, inside].sum(axis=1), np.float64)


def partial_similarity(fold: HeadFold, roi: tuple[float, float, float, float],
                       size: tuple[int, int], gallery: np.ndarray) -> np.ndarray:
    """Similarity of the query's region to every gallery embedding.

    Parameters
    ----------
    gallery
        ``(N, D)`` embeddings (not normalised).

    Returns
    -------
    np.ndarray
        ``(N,)`` float64 ``f . E^r / (|E^q| |E^r|)``.
    """
    f = partial_feature(fold, roi, size)
    g = np.asarray(gallery, np.float64)
    if g.ndim != 2 or g.shape[1] != f.shape[0]:
        raise InputError(f"gallery embeddings must be (N, {f.shape[0]}); got {g.shape}")
    norms = np.linalg.norm(g, axis=1) * float(np.linalg.norm(fold.embedding))
    return np.asarray((g @ f) / np.maximum(norms, 1e-30), np.float64)
