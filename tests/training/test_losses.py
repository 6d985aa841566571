"""Sub-center ArcFace and batch-hard triplet loss against float64 re-implementations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pairx.core.errors import InputError
from pairx.training.losses import SubCenterArcFace, batch_hard_triplet_loss, pairwise_distances


def arcface_oracle(
    emb: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    c: int,
    k: int,
    m: float,
    s: float,
) -> torch.Tensor:
    """Loop-based float64 logits: max sub-center cosine, cos(theta + m) at the target."""
    out = torch.empty(emb.shape[0], c, dtype=torch.float64)
    for i in range(emb.shape[0]):
        e = emb[i].double() / emb[i].double().norm()
        for j in range(c):
            best = -2.0
            for t in range(k):
                w = weight[j * k + t].double()
                best = max(best, float(e @ w / w.norm()))
            theta = math.acos(min(1.0, max(-1.0, best)))
            if j == int(labels[i]):
                value = math.cos(theta + m) if theta + m <= math.pi else best - m * math.sin(m)
            else:
                value = best
            out[i, j] = s * value
    return out


def test_arcface_logits_match_oracle() -> None:
    torch.manual_seed(0)
    head = SubCenterArcFace(8, 5, k=3, margin=0.4, scale=20.0).double()
    emb = torch.randn(6, 8, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    expected = arcface_oracle(emb, head.weight.detach(), labels, 5, 3, 0.4, 20.0)
    torch.testing.assert_close(head.logits(emb, labels), expected, rtol=1e-6, atol=1e-6)
    loss = head(emb, labels)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(expected, labels))


def test_margin_lowers_only_the_target_logit() -> None:
    torch.manual_seed(1)
    with_margin = SubCenterArcFace(16, 4, k=3, margin=0.35, scale=30.0)
    without = SubCenterArcFace(16, 4, k=3, margin=0.0, scale=30.0)
    without.load_state_dict(with_margin.state_dict())
    emb = torch.randn(10, 16)
    labels = torch.randint(0, 4, (10,))
    a, b = with_margin.logits(emb, labels), without.logits(emb, labels)
    target = torch.nn.functional.one_hot(labels, 4).bool()
    assert (a[target] < b[target]).all()
    torch.testing.assert_close(a[~target], b[~target])
    assert with_margin(emb, labels) > without(emb, labels)


def test_arcface_uses_best_subcenter() -> None:
    head = SubCenterArcFace(2, 2, k=2, margin=0.0, scale=1.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
    cos = head.cosine(torch.tensor([[0.0, 2.0]]))
    torch.testing.assert_close(cos, torch.tensor([[1.0, 0.0]]))


def test_arcface_bad_input() -> None:
    head = SubCenterArcFace(4, 3)
    with pytest.raises(InputError):
        head(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(InputError):
        head(torch.randn(2, 4), torch.tensor([0]))
    with pytest.raises(InputError):
        SubCenterArcFace(4, 1)


def triplet_oracle(emb: torch.Tensor, labels: list[int], margin: float) -> float:
    """Loop-based float64 batch-hard triplet loss on normalised embeddings."""
    x = emb.double() / emb.double().norm(dim=1, keepdim=True)
    losses = []
    for a in range(len(labels)):
        pos = [
            float((x[a] - x[p]).norm())
            for p in range(len(labels))
            if p != a and labels[p] == labels[a]
        ]
        neg = [float((x[a] - x[n]).norm()) for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            losses.append(max(0.0, max(pos) - min(neg) + margin))
    return sum(losses) / len(losses) if losses else 0.0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    labels=st.lists(st.integers(0, 3), min_size=2, max_size=10),
    margin=st.floats(0.0, 1.0),
)
def test_triplet_matches_oracle(seed: int, labels: list[int], margin: float) -> None:
    emb = torch.randn(len(labels), 5, generator=torch.Generator().manual_seed(seed))
    got = batch_hard_triplet_loss(emb.double(), torch.tensor(labels), margin=margin)
    assert float(got) == pytest.approx(triplet_oracle(emb, labels, margin), abs=1e-9)


def test_triplet_zero_when_separated_with_margin() -> None:
    torch.manual_seed(0)
    centres = torch.eye(4, 16) * 5.0
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    emb = centres[labels] + 0.01 * torch.randn(8, 16)
    assert float(batch_hard_triplet_loss(emb, labels, margin=0.3)) == 0.0
    # the same points with mixed labels are not separated
    assert float(batch_hard_triplet_loss(emb, labels.roll(1), margin=0.3)) > 0.3


def test_triplet_gradient_finite_for_duplicates() -> None:
    emb = torch.ones(4, 3, requires_grad=True)
    loss = batch_hard_triplet_loss(emb, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()


def test_pairwise_distances_oracle() -> None:
    x = torch.randn(5, 3, dtype=torch.float64)
    d = pairwise_distances(x, normalize=False)
    for i, j in itertools.product(range(5), range(5)):
        assert float(d[i, j]) == pytest.approx(float((x[i] - x[j]).norm()), abs=1e-7)


def test_imprinting_makes_the_head_classify_its_own_samples() -> None:
    torch.manual_seed(0)
    n_classes, d = 6, 16
    prototypes = torch.nn.functional.normalize(torch.randn(n_classes, 2, d), dim=2)
    labels = torch.arange(n_classes).repeat_interleave(4)
    views = torch.tensor([0, 0, 1, 1] * n_classes)
    emb = prototypes[labels, views] + 0.05 * torch.randn(len(labels), d)
    head = SubCenterArcFace(d, n_classes, k=3, margin=0.3)
    before = head.cosine(emb).argmax(1)
    head.imprint(emb, labels, views)
    assert torch.equal(head.cosine(emb).argmax(1), labels)
    assert not torch.equal(before, labels)
    w = head.weight.detach().view(n_classes, 3, d)
    # sub-center j holds view j, the spare one the class mean; all unit length
    torch.testing.assert_close(w.norm(dim=2), torch.ones(n_classes, 3))
    assert float((w[:, 0] * prototypes[:, 0]).sum(1).min()) > 0.95
    assert float((w[:, 1] * prototypes[:, 1]).sum(1).min()) > 0.95
    with pytest.raises(InputError, match="every class"):
        head.imprint(emb[:4], labels[:4], views[:4])
