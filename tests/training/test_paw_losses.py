"""PAW-ViT's losses against hand-computed toy cases (Eq. 1-5)."""

from __future__ import annotations

import math

import pytest
import torch

from pairx.core.errors import InputError
from pairx.training.losses import batch_hard_triplet_loss
from pairx.training.paw_losses import (
    exp_log_loss,
    identity_loss,
    orientation_loss,
    paw_loss,
    visible_parts,
)


def test_identity_loss_with_label_smoothing() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    # smoothing 0.2 over 2 classes: target (0.1, 0.9)
    expected = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    assert float(identity_loss(logits, torch.tensor([1]))) == pytest.approx(expected, rel=1e-6)


def test_cosine_batch_hard_triplet() -> None:
    e = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: positive 1 at 1 - 0.6 = 0.4, negatives 2 (0.2) and 3 (1.0): 0.4 - 0.2 + 0.4
    # anchor 1: positive 0 at 0.4, negatives 2 (1 - 0.96 = 0.04), 3 (0.2): 0.4 - 0.04 + 0.4
    # anchor 2: positive 3 at 0.4, negatives 0 (0.2), 1 (0.04): 0.4 - 0.04 + 0.4
    # anchor 3: positive 2 at 0.4, negatives 0 (1.0), 1 (0.2): 0.4 - 0.2 + 0.4
    expected = (0.6 + 0.76 + 0.76 + 0.6) / 4
    got = batch_hard_triplet_loss(e, labels, margin=0.4, distance="cosine")
    assert float(got) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(InputError, match="distance"):
        batch_hard_triplet_loss(e, labels, distance="manhattan")


def test_orientation_loss_over_visible_parts() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 1.0, 1.0], [5.0, 5.0, 5.0]])
    faces_right = torch.tensor([1, 0, 1])
    visible = torch.tensor([[True, True, False], [False, False, True], [False, False, False]])

    def bce(z: float, y: int) -> float:
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    sample0 = (bce(0.0, 1) + bce(2.0, 1)) / 2
    sample1 = bce(1.0, 0)
    expected = (sample0 + sample1) / 2  # sample 2 has no visible part
    assert float(orientation_loss(logits, faces_right, visible)) == pytest.approx(expected,
                                                                                  rel=1e-6)
    none = torch.zeros_like(visible)
    assert float(orientation_loss(logits, faces_right, none)) == 0.0


def test_exp_log_loss_toy_case() -> None:
    # one image of 1 x 2 pixels, 2 labels; scores chosen so the softmax is (0.8, 0.2) and
    # (0.3, 0.7); true labels 0 and 1
    s = torch.tensor([[[[math.log(4.0), math.log(3.0 / 7.0)]], [[0.0, 0.0]]]])
    labels = torch.tensor([[[0, 1]]])
    p0 = (0.8, 0.3)  # P(label 0) at the two pixels
    p1 = (0.2, 0.7)
    eps, gamma = 1e-6, 1.2
    dice0 = (2 * 0.8 + eps) / (1 + sum(p0) + eps)
    dice1 = (2 * 0.7 + eps) / (1 + sum(p1) + eps)
    l_dice = ((-math.log(dice0)) ** gamma + (-math.log(dice1)) ** gamma) / 2
    f0 = f1 = 1 + eps
    w0, w1 = math.sqrt((f0 + f1) / f0), math.sqrt((f0 + f1) / f1)
    l_cross = (w0 * (-math.log(0.8)) ** gamma + w1 * (-math.log(0.7)) ** gamma) / 2
    expected = 0.5 * l_dice + 0.5 * l_cross
    assert float(exp_log_loss(s, labels)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(InputError, match="do not fit"):
        exp_log_loss(s, labels[:, :, :1])


def test_paw_loss_combines_the_terms_with_the_papers_weights() -> None:
    torch.manual_seed(0)
    b, k = 4, 5
    part_labels = torch.randint(0, k + 1, (b, 8, 8))
    part_labels[0] = 0  # nothing visible in sample 0
    args = dict(embedding=torch.randn(b, 16), logits=torch.randn(b, 3),
                masks=torch.rand(b, k + 1, 8, 8), orientation=torch.randn(b, k),
                labels=torch.tensor([0, 0, 1, 1]), faces_right=torch.tensor([0, 1, 1, 0]),
                part_labels=part_labels)
    terms = paw_loss(**args)  # type: ignore[arg-type]
    total = (terms["segmentation"] + 0.5 * terms["triplet"] + terms["orientation"]
             + terms["id"])
    assert float(terms["total"]) == pytest.approx(float(total), rel=1e-6)
    # the background (label 0) is the last mask channel
    target = torch.where(part_labels == 0, k, part_labels - 1)
    assert float(terms["segmentation"]) == pytest.approx(
        float(exp_log_loss(args["masks"], target)), rel=1e-6)  # type: ignore[arg-type]
    assert visible_parts(part_labels, k)[0].sum() == 0
    ablated = paw_loss(**args, segmentation=False)  # type: ignore[arg-type]
    assert float(ablated["segmentation"]) == 0.0
