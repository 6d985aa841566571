"""Dense correspondence supervision from the synthetic benchmark's ground truth.

The synthetic benchmark knows the body coordinate ``(u, v)`` that every pixel of every sighting
shows (:meth:`pairx.data.synthetic.GroundTruth.uv_at`). Two sightings of the same flank of one
individual therefore have known corresponding positions on any feature grid. The dense loss
asks the features of one layer to agree at corresponding body points and to differ elsewhere:
an InfoNCE over feature-grid positions in which the anchor is a position of sighting A, the
positive is the position of sighting B that shows the same body point, and the negatives are
every other position of B and every position of the batch's other individuals.

One image pair gives hundreds of labelled correspondences instead of one identity label, and it
trains exactly what PAIR-X reads: intermediate features whose cross-checked nearest neighbours
are the true correspondences, and that differ between individuals.

Body-coordinate grids are computed once per training image at a fixed resolution in the
model-input frame (:func:`body_coordinate_grids`) and warped with each batch's augmentation
(:func:`warp_grids`) so that they stay aligned with the augmented pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pairx.core.errors import DatasetError, InputError
from pairx.data.datasets import Sample

__all__ = ["body_coordinate_grids", "dense_correspondence_loss", "warp_grids"]

MATCH_TOLERANCE = 0.75
"""A position of B is the positive of an anchor when its body coordinate lies within this
fraction of B's grid spacing (in body coordinates) of the anchor's; otherwise the anchor's body
point is not visible in B and the anchor is not used."""


def body_coordinate_grids(
    root: str | Path,
    samples: Sequence[Sample],
    size: tuple[int, int],
    grid: tuple[int, int],
    *,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Body coordinates at the cell centres of a grid over each image's model-input frame.

    Parameters
    ----------
    root
        A dataset folder written by ``pairx synth`` (it has ``gt/``).
    samples
        ``N`` samples of that dataset.
    size
        ``(H, W)`` model input size the images are resized to (as in
        :func:`pairx.data.batches.load_images`, including the optional ``bbox`` crop).
    grid
        ``(g_h, g_w)`` cells over the model input (e.g. ``(H // 4, W // 4)``).
    progress
        Show a tqdm bar.

    Returns
    -------
    uv : torch.Tensor
        ``(N, 2, g_h, g_w)`` float32 body coordinates; NaN where the cell centre shows no
        visible body point (background, occluder).
    flank : torch.Tensor
        ``(N,)`` int64 visible flank of each sighting (two sightings correspond only on the
        same flank).

    Raises
    ------
    DatasetError
        The dataset has no ground truth (not written by ``pairx synth``).
    """
    from pairx.data.synthetic import load_ground_truth

    gh, gw = grid
    if gh < 1 or gw < 1 or size[0] < 1 or size[1] < 1:
        raise InputError(f"grid {grid} and size {size} must be positive")
    uv = torch.full((len(samples), 2, gh, gw), float("nan"))
    flank = torch.zeros(len(samples), dtype=torch.long)
    cols = (np.arange(gw) + 0.5) / gw  # cell centres as fractions of the frame
    rows = (np.arange(gh) + 0.5) / gh
    fx, fy = np.meshgrid(cols, rows)
    for i, sample in enumerate(tqdm(samples, desc="body coordinates", disable=not progress)):
        gt = load_ground_truth(root, sample.image_id)
        height, width = gt.size
        x0, y0, cw, ch = 0.0, 0.0, float(width), float(height)
        if sample.bbox is not None:  # the same integer crop as load_images
            bx, by, bw, bh = (round(v) for v in sample.bbox)
            x0, y0 = max(0, bx), max(0, by)
            cw, ch = min(width, bx + bw) - x0, min(height, by + bh) - y0
            if cw <= 0 or ch <= 0:
                raise DatasetError(
                    f"bbox {sample.bbox} of {sample.image_id!r} is outside the image"
                )
        # pixel centres are integers: the centre of a fraction f of the crop is x0 + f*cw - 0.5
        xy = np.stack([x0 + fx.ravel() * cw - 0.5, y0 + fy.ravel() * ch - 0.5], 1)
        coords = gt.uv_at(xy).reshape(gh, gw, 2).transpose(2, 0, 1)
        uv[i] = torch.from_numpy(coords.astype(np.float32))
        flank[i] = gt.flank
    return uv, flank


def warp_grids(uv: torch.Tensor, theta: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Resample body-coordinate grids through an augmentation warp onto a feature grid.

    Parameters
    ----------
    uv
        ``(B, 2, g_h, g_w)`` body coordinates, NaN where invalid.
    theta
        ``(B, 2, 3)`` affine warp in ``F.affine_grid`` form (``align_corners=False``), e.g. from
        :func:`pairx.training.data.augment_with_warp`; the identity warp keeps the frame.
    out_size
        ``(h, w)`` of the feature grid.

    Returns
    -------
    torch.Tensor
        ``(B, 2, h, w)`` body coordinates at the feature cells' centres, bilinearly interpolated;
        NaN where any interpolation neighbour is invalid or outside the frame.
    """
    if uv.dim() != 4 or uv.shape[1] != 2:
        raise InputError(f"uv must be (B, 2, g_h, g_w); got shape {tuple(uv.shape)}")
    b = uv.shape[0]
    valid = torch.isfinite(uv).all(dim=1, keepdim=True).to(uv.dtype)
    stacked = torch.cat([torch.nan_to_num(uv, nan=0.0), valid], dim=1)
    grid = F.affine_grid(theta.to(uv.dtype), [b, 3, *out_size], align_corners=False)
    out = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    coords, weight = out[:, :2], out[:, 2:]
    return torch.where(weight > 1.0 - 1e-4, coords, torch.full_like(coords, float("nan")))


def _grid_spacing(uv: torch.Tensor) -> float:
    """Median distance between valid horizontally or vertically adjacent cells, ``(2, h, w)``."""
    steps = [
        (uv[:, :, 1:] - uv[:, :, :-1]).norm(dim=0).flatten(),
        (uv[:, 1:, :] - uv[:, :-1, :]).norm(dim=0).flatten(),
    ]
    d = torch.cat(steps)
    d = d[torch.isfinite(d)]
    return float(d.median()) if d.numel() else float("nan")


def correspondence_targets(
    uv: torch.Tensor, labels: torch.Tensor, flanks: torch.Tensor
) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """True correspondences between the feature grids of a batch.

    Parameters
    ----------
    uv
        ``(B, 2, h, w)`` body coordinates at the feature cells (NaN: no visible body point).
    labels, flanks
        ``(B,)`` identity labels and visible flanks.

    Returns
    -------
    list of (a, b, cells_a, cells_b)
        For every ordered pair of distinct batch images of the same individual and flank: the
        flat cell indices in ``a`` whose body point is visible in ``b`` and, aligned with them,
        the cell of ``b`` showing that point (nearest body coordinate, within
        :data:`MATCH_TOLERANCE` of ``b``'s grid spacing).
    """
    b = uv.shape[0]
    flat = uv.flatten(2).transpose(1, 2)  # (B, hw, 2)
    valid = torch.isfinite(flat).all(dim=2)
    spacing = [_grid_spacing(uv[i]) for i in range(b)]
    same = (labels[:, None] == labels[None, :]) & (flanks[:, None] == flanks[None, :])
    same.fill_diagonal_(False)
    out = []
    for a, bb in same.nonzero().tolist():
        ia, ib = valid[a].nonzero().squeeze(1), valid[bb].nonzero().squeeze(1)
        if ia.numel() == 0 or ib.numel() == 0 or not np.isfinite(spacing[bb]):
            continue
        dist = torch.cdist(flat[a, ia].double(), flat[bb, ib].double())
        dmin, jmin = dist.min(dim=1)
        ok = dmin < MATCH_TOLERANCE * spacing[bb]
        if bool(ok.any()):
            out.append((a, bb, ia[ok], ib[jmin[ok]]))
    return out


def dense_correspondence_loss(
    features: torch.Tensor,
    uv: torch.Tensor,
    labels: torch.Tensor,
    flanks: torch.Tensor,
    *,
    temperature: float = 0.1,
    max_anchors: int = 2048,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """InfoNCE over feature-grid positions with ground-truth correspondences as positives.

    Parameters
    ----------
    features
        ``(B, C, h, w)`` activations of one layer (compared by cosine).
    uv
        ``(B, 2, h, w)`` body coordinates at those cells (see :func:`warp_grids`).
    labels, flanks
        ``(B,)`` identity labels and visible flanks.
    temperature
        Softmax temperature of the cosine logits.
    max_anchors
        At most this many anchors per batch (a random subset when there are more).
    generator
        Random generator of the subset (reproducible runs).

    Returns
    -------
    torch.Tensor
        Scalar mean cross-entropy over anchors: the candidates of an anchor in image ``a``
        matched to image ``b`` are all cells of ``b`` and all cells of images of other
        individuals; the target is its true correspondence in ``b``. 0 (with a graph) when the
        batch has no correspondence.
    """
    if (
        features.dim() != 4
        or uv.shape[0] != features.shape[0]
        or uv.shape[2:] != features.shape[2:]
    ):
        raise InputError(
            f"features (B, C, h, w) and uv (B, 2, h, w) must agree; got {tuple(features.shape)} "
            f"and {tuple(uv.shape)}"
        )
    if temperature <= 0:
        raise InputError(f"temperature must be positive; got {temperature}")
    b, _, h, w = features.shape
    pairs = correspondence_targets(uv, labels, flanks)
    if not pairs:
        return features.sum() * 0.0
    image_a = torch.cat([torch.full_like(ca, a) for a, _, ca, _ in pairs])
    image_b = torch.cat([torch.full_like(ca, bb) for _, bb, ca, _ in pairs])
    cell_a = torch.cat([ca for _, _, ca, _ in pairs])
    cell_b = torch.cat([cb for _, _, _, cb in pairs])
    if cell_a.numel() > max_anchors:
        keep = torch.randperm(cell_a.numel(), generator=generator)[:max_anchors]
        image_a, image_b, cell_a, cell_b = image_a[keep], image_b[keep], cell_a[keep], cell_b[keep]
    hw = h * w
    desc = F.normalize(features.flatten(2), dim=1).transpose(1, 2).reshape(b * hw, -1)
    logits = desc[image_a * hw + cell_a] @ desc.T / temperature  # (M, B * hw)
    owner = torch.arange(b, device=features.device).repeat_interleave(hw)  # image of each cell
    allowed = (owner[None, :] == image_b[:, None]) | (
        labels[owner][None, :] != labels[image_a][:, None]
    )
    logits = logits.masked_fill(~allowed, float("-inf"))
    return F.cross_entropy(logits, image_b * hw + cell_b)
