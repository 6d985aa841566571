"""One homography fit for the whole package: OpenCV's ``findHomography`` on point arrays.

Every place that fits a homography to point correspondences calls :func:`find_homography`
(or :func:`fit_homography`, which keeps only the matrix): the homography sources of the
metrics (keypoint matches with RANSAC, exact synthetic correspondences by least squares), the
keypoint explainers' and PAIR-X's RANSAC match filters, and the review app's
self-consistency metric. The parameters OpenCV is called with are named here once.

>>> import numpy as np
>>> src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0], [5.0, 3.0]])
>>> h = fit_homography(src, src + 2.0, ransac=False)
>>> bool(np.allclose(h, [[1, 0, 2], [0, 1, 2], [0, 0, 1]]))
True
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "MIN_CORRESPONDENCES",
    "RANSAC_CONFIDENCE",
    "RANSAC_MAX_ITERS",
    "find_homography",
    "fit_homography",
]

#: Minimum number of correspondences to fit a homography.
MIN_CORRESPONDENCES = 4
#: RANSAC iterations and confidence (OpenCV's defaults, passed explicitly).
RANSAC_MAX_ITERS = 2000
RANSAC_CONFIDENCE = 0.995


def find_homography(
    src: np.ndarray,
    dst: np.ndarray,
    *,
    ransac: bool,
    threshold: float = 3.0,
    max_iters: int = RANSAC_MAX_ITERS,
    confidence: float = RANSAC_CONFIDENCE,
    seed: int | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Fit a homography ``dst ~ H src`` and report which correspondences it fits.

    One ``cv2.findHomography(src, dst, method, threshold, maxIters=max_iters,
    confidence=confidence)`` call on the points as float64 (OpenCV converts them to float32
    itself, whatever their layout).

    Parameters
    ----------
    src, dst
        ``(N, 2)`` float pixel ``(x, y)`` correspondences.
    ransac
        Use RANSAC (for noisy keypoint matches) instead of plain least squares over all
        points (for exact correspondences).
    threshold
        RANSAC reprojection threshold in pixels.
    max_iters, confidence
        RANSAC iterations and confidence.
    seed
        Seed OpenCV's global random number generator first (``cv2.setRNGSeed``); ``None``
        leaves it alone.

    Returns
    -------
    homography : np.ndarray or None
        ``(3, 3)`` float64 homography normalised to ``H[2, 2] = 1``; ``None`` with fewer than
        :data:`MIN_CORRESPONDENCES` correspondences or a degenerate configuration.
    inliers : np.ndarray or None
        ``(N,)`` bool, the correspondences OpenCV marks as fitted (all ``False`` when it found
        no homography); ``None`` with fewer than :data:`MIN_CORRESPONDENCES` correspondences
        (no call is made) or when OpenCV returns no mask.
    """
    if len(src) < MIN_CORRESPONDENCES:
        return None, None
    s = np.ascontiguousarray(src, dtype=np.float64).reshape(-1, 1, 2)
    d = np.ascontiguousarray(dst, dtype=np.float64).reshape(-1, 1, 2)
    if seed is not None:
        cv2.setRNGSeed(int(seed))
    method = cv2.RANSAC if ransac else 0
    h, mask = cv2.findHomography(s, d, method, float(threshold), maxIters=int(max_iters),
                                 confidence=float(confidence))
    inliers = None if mask is None else np.asarray(mask).ravel().astype(bool)
    if h is None or not np.isfinite(h).all() or abs(h[2, 2]) < 1e-12:
        return None, inliers
    return np.asarray(h / h[2, 2], dtype=np.float64), inliers


def fit_homography(
    src: np.ndarray, dst: np.ndarray, *, ransac: bool, threshold: float = 3.0
) -> np.ndarray | None:
    """Fit a homography ``dst ~ H src`` to point correspondences.

    Parameters
    ----------
    src, dst
        ``(N, 2)`` float pixel ``(x, y)`` correspondences.
    ransac
        Use RANSAC (for noisy keypoint matches) instead of plain least squares over all
        points (for exact correspondences).
    threshold
        RANSAC reprojection threshold in pixels.

    Returns
    -------
    np.ndarray or None
        ``(3, 3)`` float64 homography normalised to ``H[2, 2] = 1``, or ``None`` with fewer
        than 4 correspondences or a degenerate configuration.
    """
    return find_homography(src, dst, ransac=ransac, threshold=threshold)[0]
