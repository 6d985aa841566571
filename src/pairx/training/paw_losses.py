"""PAW-ViT's training losses (``../shared/papers/paw-vit.txt``, section 3.4 and 4.2).

* :func:`identity_loss`: Eq. 1, cross-entropy over the BNNeck'd descriptor's logits with label
  smoothing 0.2;
* :func:`pairx.training.losses.batch_hard_triplet_loss` with the cosine distance and margin
  0.4 (Eq. 2, online batch-hard mining);
* :func:`orientation_loss`: Eq. 3, binary cross-entropy of each visible part token's
  orientation, averaged over the visible parts of a sample, then over samples;
* :func:`exp_log_loss`: Eq. 4, the exponential logarithmic loss of Wong et al. (Dice and
  cross-entropy terms, ``gamma = 1.2``, weights 0.5 and 0.5). As in the authors' code the
  class probabilities are a softmax over the ``K + 1`` ATM masks, and the label weights
  ``w_l = (sum_k f_k / f_l) ** 0.5`` come from the label frequencies of the batch;
* :func:`paw_loss`: Eq. 5, ``lambda * L_SS + alpha * L_TRI + L_OR + L_ID`` with
  ``lambda = 1``, ``alpha = 0.5``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pairx.core.errors import InputError
from pairx.training.losses import batch_hard_triplet_loss

__all__ = ["exp_log_loss", "identity_loss", "orientation_loss", "paw_loss", "visible_parts"]


def identity_loss(logits: torch.Tensor, labels: torch.Tensor,
                  smoothing: float = 0.2) -> torch.Tensor:
    """Eq. 1: cross-entropy of ``(B, identities)`` logits with label smoothing."""
    return F.cross_entropy(logits, labels, label_smoothing=smoothing)


def visible_parts(part_labels: torch.Tensor, parts: int) -> torch.Tensor:
    """``(B, K)`` bool: part ``i`` (label ``i + 1``) has at least one pixel in the target."""
    return torch.stack([(part_labels == i + 1).flatten(1).any(dim=1) for i in range(parts)],
                       dim=1)


def orientation_loss(logits: torch.Tensor, faces_right: torch.Tensor,
                     visible: torch.Tensor) -> torch.Tensor:
    """Eq. 3: BCE of ``(B, K)`` orientation logits against ``(B,)`` 0/1 orientations over the
    ``(B, K)`` visible parts; samples without a visible part are left out (0 if none has)."""
    target = faces_right.to(logits.dtype)[:, None].expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    mask = visible.to(logits.dtype)
    count = mask.sum(dim=1)
    keep = count > 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    per_sample = (bce * mask).sum(dim=1)[keep] / count[keep]
    return per_sample.mean()


def exp_log_loss(scores: torch.Tensor, labels: torch.Tensor, *, gamma: float = 1.2,
                 w_dice: float = 0.5, w_cross: float = 0.5, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 4, the exponential logarithmic segmentation loss.

    Parameters
    ----------
    scores
        ``(B, L, H, W)`` mask scores (the ATM masks), turned into probabilities by a softmax
        over ``L``.
    labels
        ``(B, H, W)`` int64 true labels in ``[0, L)``.
    gamma, w_dice, w_cross, eps
        The exponents, term weights and the Dice smoothing constant.
    """
    if labels.shape != scores.shape[:1] + scores.shape[2:]:
        raise InputError(f"labels {tuple(labels.shape)} do not fit scores {tuple(scores.shape)}")
    n_labels = scores.shape[1]
    probs = scores.softmax(dim=1)
    onehot = F.one_hot(labels, n_labels).permute(0, 3, 1, 2).to(probs.dtype)
    dice = (2 * (onehot * probs).sum(dim=(2, 3)) + eps) / (
        onehot.sum(dim=(2, 3)) + probs.sum(dim=(2, 3)) + eps)
    l_dice = (-torch.log(dice.clamp_min(1e-8))).pow(gamma).mean()
    freq = onehot.sum(dim=(0, 2, 3)) + eps
    weights = (freq.sum() / freq).sqrt()
    p_true = (onehot * probs).sum(dim=1).clamp_min(1e-8)
    l_cross = (weights[labels] * (-torch.log(p_true)).clamp_min(0).pow(gamma)).mean()
    return w_dice * l_dice + w_cross * l_cross


def paw_loss(embedding: torch.Tensor, logits: torch.Tensor, masks: torch.Tensor,
             orientation: torch.Tensor, labels: torch.Tensor, faces_right: torch.Tensor,
             part_labels: torch.Tensor, *, lam: float = 1.0, alpha: float = 0.5,
             segmentation: bool = True) -> dict[str, torch.Tensor]:
    """Eq. 5 and its terms.

    Parameters
    ----------
    embedding, logits, masks, orientation
        :class:`pairx.models.paw_vit.PAWOutputs` fields.
    labels, faces_right
        ``(B,)`` identities and 0/1 orientations.
    part_labels
        ``(B, H_m, W_m)`` true part labels at the mask size (0 background, 1..K parts; the
        background is the last mask channel).
    lam, alpha
        Weights of the segmentation and triplet terms.
    segmentation
        ``False`` drops the segmentation term (the ablation without distillation).

    Returns
    -------
    dict
        ``total``, ``id``, ``triplet``, ``orientation``, ``segmentation``.
    """
    parts = orientation.shape[1]
    target = torch.where(part_labels == 0, torch.full_like(part_labels, parts), part_labels - 1)
    terms = {
        "id": identity_loss(logits, labels),
        "triplet": batch_hard_triplet_loss(embedding, labels, margin=0.4, distance="cosine"),
        "orientation": orientation_loss(orientation, faces_right,
                                        visible_parts(part_labels, parts)),
        "segmentation": exp_log_loss(masks, target) if segmentation else masks.sum() * 0.0,
    }
    terms["total"] = (lam * terms["segmentation"] + alpha * terms["triplet"]
                      + terms["orientation"] + terms["id"])
    return terms
