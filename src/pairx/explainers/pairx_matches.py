"""PAIR-X's matches: cross-checked nearest neighbours of two layers' features, ranked by
relevance, and the optional RANSAC filter.

A match joins position ``i`` of image A's grid to position ``j`` of image B's where each is the
other's nearest neighbour (brute-force L2 on the per-position descriptors); its relevance is the
product of the two positions' channel-summed absolute LRP relevances at the layer.
"""

from __future__ import annotations

import numpy as np
import torch

from pairx.core.explanation import Matches
from pairx.core.homography import find_homography
from pairx.explainers.matching import (
    feature_descriptors,
    grid_centres,
    mutual_nearest_neighbours,
)

__all__ = ["build_matches", "channel_abs_sum", "ransac_inliers"]


def channel_abs_sum(rel: torch.Tensor | None, feature: torch.Tensor) -> torch.Tensor:
    """``(1, C, h, w)`` relevance -> ``(h, w)`` float32 absolute value summed over channels
    (zeros where the layer does not influence the embedding: ``rel`` is ``None``)."""
    if rel is None:  # the layer does not influence the embedding
        return torch.zeros(feature.shape[-2:], dtype=torch.float32)
    return rel.detach()[0].abs().sum(dim=0).float().cpu()


def build_matches(
    fa: torch.Tensor,
    fb: torch.Tensor,
    map_a: torch.Tensor,
    map_b: torch.Tensor,
    size_a: tuple[int, int] | torch.Size,
    size_b: tuple[int, int] | torch.Size,
) -> Matches:
    """The cross-checked matches of two feature maps, most relevant first.

    Parameters
    ----------
    fa, fb
        ``(1, C, h_a, w_a)`` and ``(1, C, h_b, w_b)`` features at the layer.
    map_a, map_b
        ``(h_a, w_a)`` and ``(h_b, w_b)`` channel-summed absolute relevance.
    size_a, size_b
        ``(H, W)`` of each model input (for the matches' pixel centres).

    Returns
    -------
    Matches
        Sorted by relevance descending (ties keep the matching order).
    """
    idx_a, idx_b, dist = mutual_nearest_neighbours(
        feature_descriptors(fa.detach()), feature_descriptors(fb.detach())
    )
    if idx_a.numel() == 0:
        return Matches.empty()
    wa, wb = fa.shape[-1], fb.shape[-1]
    rel = map_a.reshape(-1)[idx_a].double() * map_b.reshape(-1)[idx_b].double()
    order = np.argsort(-rel.numpy(), kind="stable")
    idx_a, idx_b = idx_a[order], idx_b[order]
    grid_a = torch.stack([idx_a % wa, idx_a // wa], dim=1)
    grid_b = torch.stack([idx_b % wb, idx_b // wb], dim=1)
    grid_shape_a = (int(fa.shape[-2]), int(fa.shape[-1]))
    grid_shape_b = (int(fb.shape[-2]), int(fb.shape[-1]))
    xy_a = grid_centres(grid_shape_a, (int(size_a[0]), int(size_a[1])))[idx_a]
    xy_b = grid_centres(grid_shape_b, (int(size_b[0]), int(size_b[1])))[idx_b]
    return Matches(
        grid_a=grid_a.numpy(),
        grid_b=grid_b.numpy(),
        xy_a=xy_a.numpy(),
        xy_b=xy_b.numpy(),
        distance=dist[order].numpy(),
        relevance=rel[order].numpy(),
    )


def ransac_inliers(matches: Matches, threshold: float) -> Matches:
    """The matches that are inliers of a RANSAC homography fitted to all of them (order kept;
    all of them when fewer than 4 or no homography is found).

    The fit is :func:`pairx.core.homography.find_homography` with OpenCV's generator seeded
    (0), so the same matches give the same inliers.
    """
    _, inliers = find_homography(matches.xy_a, matches.xy_b, ransac=True,
                                 threshold=float(threshold), seed=0)
    if inliers is None:
        return matches
    return Matches(**{f: getattr(matches, f)[inliers] for f in
                      ("grid_a", "grid_b", "xy_a", "xy_b", "distance", "relevance")})
