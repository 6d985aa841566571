"""The synthetic benchmark's true correspondences as a homography source.

:class:`GroundTruthHomography` maps points through :func:`pairx.data.synthetic.true_points`
(fitted by least squares to a dense grid of true correspondences for :meth:`~GroundTruthHomography.
estimate`), and gives the exact per-match true residuals (:meth:`GroundTruthHomography.
true_residuals`), which need no homography model at all. :func:`input_to_source` and
:func:`source_to_input` move points between the model-input frame and the generated image.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from pairx.core.errors import DatasetError, InputError
from pairx.core.homography import fit_homography
from pairx.core.lru import LRUCache
from pairx.data.datasets import ReIDDataset, Sample
from pairx.explainers.keypoint_matching import check_rgb_image
from pairx.metrics.homography.sources import HomographySource

__all__ = [
    "GroundTruthHomography",
    "input_to_source",
    "is_synthetic",
    "require_synthetic",
    "source_to_input",
]


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
        self._gt: LRUCache[str, Any] = LRUCache(256)

    @property
    def synthetic(self) -> Any:
        """The :mod:`pairx.data.synthetic` module."""
        return self._synthetic

    def ground_truth(self, image_id: str) -> Any:
        """The (cached) :func:`pairx.data.synthetic.load_ground_truth` record of an image."""
        return self._gt.get_or_compute(
            image_id, lambda: self._synthetic.load_ground_truth(self.dataset.root, image_id))

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
        h, w = check_rgb_image(image_a, "image_a").shape[:2]
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
