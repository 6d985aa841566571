"""Metric-learning losses: sub-center ArcFace and batch-hard triplet.

Both take ``(B, D)`` embeddings and ``(B,)`` integer labels. ArcFace is a classification head
over the training identities (discarded after training); the triplet loss acts directly on the
embedding geometry.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pairx.core.errors import InputError

__all__ = ["SubCenterArcFace", "batch_hard_triplet_loss", "pairwise_distances"]


def _check_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    if embeddings.dim() != 2:
        raise InputError(f"embeddings must be (B, D); got shape {tuple(embeddings.shape)}")
    if labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        raise InputError(
            f"labels must be (B,) with B = {embeddings.shape[0]}; got shape {tuple(labels.shape)}"
        )


class SubCenterArcFace(nn.Module):
    """Sub-center ArcFace head (Deng et al. 2020), as used by MiewID.

    Each class has ``k`` unit-norm sub-centers; the class cosine is the best sub-center's
    cosine. The target class gets an additive angular margin ``cos(theta + m)`` and all
    logits are multiplied by ``scale`` before the cross-entropy.

    Parameters
    ----------
    embedding_dim
        ``D``.
    n_classes
        Number of training identities ``C``.
    k
        Sub-centers per class.
    margin
        Additive angular margin ``m`` in radians.
    scale
        Logit scale ``s``.

    Attributes
    ----------
    weight
        ``(C * k, D)`` sub-center directions (normalised in the forward pass).
    """

    def __init__(
        self,
        embedding_dim: int,
        n_classes: int,
        *,
        k: int = 3,
        margin: float = 0.35,
        scale: float = 30.0,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise InputError(f"ArcFace needs at least 2 classes; got {n_classes}")
        if k < 1:
            raise InputError(f"the number of sub-centers k must be >= 1; got {k}")
        if not 0.0 <= margin < math.pi / 2:
            raise InputError(f"margin must be in [0, pi/2); got {margin}")
        self.n_classes, self.k, self.margin, self.scale = n_classes, k, margin, scale
        self.weight = nn.Parameter(torch.empty(n_classes * k, embedding_dim))
        nn.init.xavier_uniform_(self.weight)

    @torch.no_grad()
    def imprint(
        self, embeddings: torch.Tensor, labels: torch.Tensor, views: torch.Tensor | None = None
    ) -> None:
        """Set the sub-centers from embeddings (weight imprinting).

        Sub-center ``j`` of class ``c`` becomes the mean normalised embedding of the samples of
        ``c`` with view ``j`` (when ``views`` is given, ``j`` is below the number of views and
        such samples exist), otherwise the mean over all samples of ``c``.

        Parameters
        ----------
        embeddings
            ``(N, D)``.
        labels
            ``(N,)`` int64 classes; every class in ``[0, C)`` needs at least one sample.
        views
            Optional ``(N,)`` int64 view of each sample (e.g. the flank).
        """
        _check_batch(embeddings, labels)
        labels = labels.to(embeddings.device)
        counts = torch.bincount(labels, minlength=self.n_classes)
        if counts.numel() != self.n_classes or bool((counts == 0).any()):
            raise InputError("imprinting needs at least one sample of every class")
        unit = F.normalize(embeddings.float(), dim=1)
        d = unit.shape[1]
        class_sum = torch.zeros(self.n_classes, d, device=unit.device).index_add_(0, labels, unit)
        centers = class_sum[:, None, :].repeat(1, self.k, 1)  # (C, k, D)
        if views is not None:
            views = views.to(unit.device)
            for j in range(min(self.k, int(views.max()) + 1)):
                sel = views == j
                view_sum = torch.zeros(self.n_classes, d, device=unit.device).index_add_(
                    0, labels[sel], unit[sel]
                )
                has = torch.bincount(labels[sel], minlength=self.n_classes) > 0
                centers[has, j] = view_sum[has]
        self.weight.copy_(F.normalize(centers, dim=2).reshape(-1, d).to(self.weight.dtype))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class cosines, max over sub-centers.

        Parameters
        ----------
        embeddings
            ``(B, D)``.

        Returns
        -------
        torch.Tensor
            ``(B, C)`` cosine between each embedding and its closest sub-center of each class.
        """
        cos = F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))
        return cos.view(-1, self.n_classes, self.k).amax(dim=2)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled logits with the angular margin applied to each sample's own class.

        Parameters
        ----------
        embeddings
            ``(B, D)``.
        labels
            ``(B,)`` int64 class indices in ``[0, C)``.

        Returns
        -------
        torch.Tensor
            ``(B, C)``: ``s * cos(theta_y + m)`` at the target, ``s * cos(theta_j)`` elsewhere.
            Where ``theta_y + m`` would pass ``pi`` the usual linear fallback
            ``cos(theta_y) - m * sin(m)`` keeps the target logit monotonic.
        """
        _check_batch(embeddings, labels)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes):
            raise InputError(f"labels must lie in [0, {self.n_classes}); got {labels.tolist()}")
        cos = self.cosine(embeddings).clamp(-1.0 + 1e-7, 1.0 - 1e-7)
        sin = (1.0 - cos.pow(2)).sqrt()
        cos_m, sin_m = math.cos(self.margin), math.sin(self.margin)
        with_margin = cos * cos_m - sin * sin_m
        fallback = cos - self.margin * sin_m
        with_margin = torch.where(cos > math.cos(math.pi - self.margin), with_margin, fallback)
        target = F.one_hot(labels, self.n_classes).to(torch.bool)
        return self.scale * torch.where(target, with_margin, cos)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of :meth:`logits` (a scalar)."""
        return F.cross_entropy(self.logits(embeddings, labels), labels)


def pairwise_distances(embeddings: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """Euclidean distances between all rows.

    Parameters
    ----------
    embeddings
        ``(B, D)``.
    normalize
        L2-normalise rows first (distances then lie in ``[0, 2]``).

    Returns
    -------
    torch.Tensor
        ``(B, B)`` distances, exactly zero on the diagonal.
    """
    x = F.normalize(embeddings, dim=1) if normalize else embeddings
    sq = x.pow(2).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp(min=0.0)
    d2 = d2 * (1.0 - torch.eye(x.shape[0], dtype=x.dtype, device=x.device))
    # sqrt has an infinite gradient at 0: add a tiny epsilon only where d2 vanishes
    return torch.where(d2 > 0, d2.clamp(min=1e-12).sqrt(), torch.zeros_like(d2))


def batch_hard_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    margin: float = 0.3,
    normalize: bool = True,
    views: torch.Tensor | None = None,
    distance: str = "euclidean",
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017).

    For every anchor, the hardest positive (farthest same-label sample) and hardest negative
    (closest other-label sample) give ``max(0, d_pos - d_neg + margin)``; the loss is the mean
    over anchors that have at least one positive and one negative in the batch.

    Parameters
    ----------
    embeddings
        ``(B, D)``.
    labels
        ``(B,)`` integer labels; a PK batch guarantees positives and negatives.
    margin
        Required gap between the hardest negative and the hardest positive distance.
    normalize
        Measure distances between L2-normalised embeddings.
    views
        Optional ``(B,)`` integer view of each sample (e.g. the flank: left/right). When
        given, positives must share label *and* view (two flanks of one animal carry different
        patterns and need not be close); negatives are still all other labels.
    distance
        ``"euclidean"`` (default; of normalised embeddings with ``normalize``) or
        ``"cosine"``: ``1 - cos`` (PAW-ViT's choice).

    Returns
    -------
    torch.Tensor
        Scalar loss (0 when no anchor has both a positive and a negative).
    """
    _check_batch(embeddings, labels)
    if distance == "cosine":
        unit = F.normalize(embeddings, dim=1)
        dist = 1.0 - unit @ unit.T
    elif distance == "euclidean":
        dist = pairwise_distances(embeddings, normalize=normalize)
    else:
        raise InputError(f"distance must be 'euclidean' or 'cosine'; got {distance!r}")
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    if views is not None:
        if views.shape != labels.shape:
            raise InputError(f"views must be (B,) like labels; got shape {tuple(views.shape)}")
        pos_mask = pos_mask & (views[:, None] == views[None, :])
    valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
    if not bool(valid.any()):
        return embeddings.sum() * 0.0
    hardest_pos = torch.where(pos_mask, dist, torch.zeros_like(dist)).amax(dim=1)
    hardest_neg = torch.where(neg_mask, dist, torch.full_like(dist, float("inf"))).amin(dim=1)
    losses = F.relu(hardest_pos - hardest_neg + margin)
    return losses[valid].mean()
