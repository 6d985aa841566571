"""Deletion and insertion curves of the similarity (RISE-style; Petsiuk et al. 2018).

For image A of a pair, pixels are ranked by the map (most positive first). **Deletion** replaces
the top ``t`` fraction with the baseline (zeros of the model input: the normalisation mean
colour) for ``t = 0, 1/steps, ..., 1`` and records the similarity of A's embedding to B's
(fixed); a map that finds what makes the pair similar makes it fall fast (low AUC).
**Insertion** starts from A blurred (Gaussian, sigma 1/20 of the side) and puts the top ``t``
fraction of the original pixels back (high AUC is good). AUCs are trapezoidal over
``t in [0, 1]`` on the raw similarity (no normalisation), so they are comparable across
methods on the same pairs, and every method is measured beside a random map in the same run.
Ties in the ranking (SHAP's superpixels, constant maps) are broken at random with a fixed seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["deletion_insertion"]


def _blurred(x: torch.Tensor) -> torch.Tensor:
    import cv2

    h, w = x.shape[-2:]
    sigma = max(h, w) / 20.0
    arr = x[0].permute(1, 2, 0).cpu().numpy()
    out = cv2.GaussianBlur(arr, (0, 0), sigmaX=sigma)
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)[None].to(x)


def deletion_insertion(
    score: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    saliency: np.ndarray,
    *,
    steps: int = 20,
    seed: int = 0,
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Deletion and insertion AUC of one image.

    Parameters
    ----------
    score
        ``(B, 3, H, W)`` inputs -> ``(B,)`` similarity to the partner.
    x
        ``(1, 3, H, W)`` preprocessed image.
    saliency
        ``(H, W)`` map of the image.
    steps
        Number of equal steps from 0 to all pixels.
    seed
        Seed of the tie-breaking.

    Returns
    -------
    tuple
        ``(deletion_auc, insertion_auc, deletion_curve, insertion_curve)``, curves ``(steps+1,)``.
    """
    h, w = x.shape[-2:]
    rng = np.random.default_rng(seed)
    flat = np.asarray(saliency, np.float64).ravel()
    jitter = rng.random(flat.size) * 1e-9 * (np.abs(flat).max() + 1e-30)
    order = np.argsort(-(flat + jitter), kind="stable")
    rank = np.empty(flat.size, np.int64)
    rank[order] = np.arange(flat.size)
    counts = np.round(np.linspace(0, flat.size, steps + 1)).astype(np.int64)
    masks = torch.from_numpy(rank[None, :] < counts[:, None]).reshape(-1, 1, h, w).to(x.device)
    keep = masks.to(x.dtype)
    zero = torch.zeros_like(x)
    blur = _blurred(x)
    with torch.no_grad():
        deleted = x * (1 - keep) + zero * keep
        inserted = blur * (1 - keep) + x * keep
        d = score(deleted).double().cpu().numpy()
        i = score(inserted).double().cpu().numpy()
    t = counts / flat.size
    return float(np.trapezoid(d, t)), float(np.trapezoid(i, t)), d, i
