"""Brute-force L2 descriptor matching with cross-check (mutual nearest neighbours).

The semantics are those of OpenCV's ``BFMatcher(NORM_L2, crossCheck=True)``, which the PAIR-X
reference uses: for every descriptor of A, its nearest descriptor of B (first index on ties) is a
match if, conversely, that descriptor's nearest descriptor of A is the first one. Distances are
computed in float64 so near-ties are decided as an exact computation would.
"""

from __future__ import annotations

import torch

from pairx.core.errors import InputError

__all__ = ["feature_descriptors", "grid_centres", "mutual_nearest_neighbours"]


def feature_descriptors(feature_map: torch.Tensor) -> torch.Tensor:
    """``(C, h, w)`` or ``(1, C, h, w)`` feature map -> ``(h*w, C)`` row-major descriptors."""
    if feature_map.dim() == 4:
        if feature_map.shape[0] != 1:
            raise InputError(f"expected a single feature map; got batch {feature_map.shape[0]}")
        feature_map = feature_map[0]
    if feature_map.dim() != 3:
        raise InputError(f"expected a (C, h, w) feature map; got {tuple(feature_map.shape)}")
    return feature_map.flatten(1).transpose(0, 1)


def grid_centres(grid: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """Pixel ``(x, y)`` centres of all grid cells, row-major.

    Parameters
    ----------
    grid
        ``(h, w)`` of the feature grid.
    image_size
        ``(H, W)`` of the model input.

    Returns
    -------
    torch.Tensor
        ``(h*w, 2)`` float64 ``(x, y) = ((col + 0.5) * W / w, (row + 0.5) * H / h)``.
    """
    h, w = grid
    big_h, big_w = image_size
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    x = (cols.reshape(-1) + 0.5) * (float(big_w) / float(w))
    y = (rows.reshape(-1) + 0.5) * (float(big_h) / float(h))
    return torch.stack([x, y], dim=1)


def _pairwise_l2(a: torch.Tensor, b: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``(N, D)``, ``(M, D)`` -> ``(N, M)`` float64 Euclidean distances."""
    a64 = a.detach().to(torch.float64)
    b64 = b.detach().to(torch.float64)
    b_sq = (b64 * b64).sum(dim=1)
    rows = []
    for start in range(0, a64.shape[0], chunk):
        part = a64[start:start + chunk]
        sq = (part * part).sum(dim=1, keepdim=True) + b_sq.unsqueeze(0) - 2.0 * part @ b64.T
        rows.append(sq.clamp_(min=0.0).sqrt_())
    return torch.cat(rows, dim=0) if rows else torch.zeros(0, b64.shape[0], dtype=torch.float64)


def mutual_nearest_neighbours(
    desc_a: torch.Tensor, desc_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-checked nearest-neighbour matches between two descriptor sets.

    Parameters
    ----------
    desc_a
        ``(N, D)`` descriptors of image A.
    desc_b
        ``(M, D)`` descriptors of image B.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor, torch.Tensor]
        ``idx_a`` ``(K,)`` int64, ``idx_b`` ``(K,)`` int64, ``distance`` ``(K,)`` float64; ordered
        by ``idx_a``.

    Raises
    ------
    InputError
        Shapes do not agree or descriptors contain NaN.
    """
    if desc_a.dim() != 2 or desc_b.dim() != 2 or desc_a.shape[1] != desc_b.shape[1]:
        raise InputError(
            "descriptors must be (N, D) and (M, D) with the same D; "
            f"got {tuple(desc_a.shape)} and {tuple(desc_b.shape)}"
        )
    if not (torch.isfinite(desc_a).all() and torch.isfinite(desc_b).all()):
        raise InputError("descriptors contain NaN or infinite values")
    empty = torch.zeros(0, dtype=torch.int64)
    if desc_a.shape[0] == 0 or desc_b.shape[0] == 0:
        return empty, empty.clone(), torch.zeros(0, dtype=torch.float64)
    dist = _pairwise_l2(desc_a, desc_b)
    # torch.min returns the first index among equal minima, like OpenCV's brute-force matcher.
    best_b = dist.argmin(dim=1)
    best_a = dist.argmin(dim=0)
    idx_a = torch.arange(dist.shape[0])
    keep = best_a[best_b] == idx_a
    idx_a = idx_a[keep]
    idx_b = best_b[keep]
    return idx_a, idx_b, dist[idx_a, idx_b]
