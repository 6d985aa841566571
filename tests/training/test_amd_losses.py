"""AMD losses (Eq. 4-11) against hand-computed values and the bound identity of Eq. 9."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pairx.training.amd_losses import amd_loss, prior_bounds, prior_lambda


@settings(max_examples=60, deadline=None)
@given(m=st.integers(2, 40), data=st.data(), v=st.floats(0.05, 0.95))
def test_lambda_makes_both_bounds_equal(m: int, data: st.DataObject, v: float) -> None:
    m_e = data.draw(st.integers(1, m - 1))
    me = torch.tensor([m_e])
    b_e, b_c = prior_bounds(me, m, v)
    r = (m_e / m) ** v
    assert b_e.item() == pytest.approx(b_c.item(), rel=1e-9)
    assert b_e.item() == pytest.approx(math.sqrt(r * (1 - r) / (m_e * (m - m_e))), rel=1e-9)
    lam = prior_lambda(me, m, v).item()
    assert lam == pytest.approx(0.5 * math.log(r * (m - m_e) / (m_e * (1 - r))), rel=1e-9,
                                abs=1e-12)


def test_lambda_is_zero_for_an_empty_group() -> None:
    assert prior_lambda(torch.tensor([0, 5]), 5, 0.5).tolist() == [0.0, 0.0]
    _, b_c = prior_bounds(torch.tensor([0]), 4, 0.5)
    assert b_c.item() == pytest.approx(0.25)


def test_losses_equal_hand_computed_values() -> None:
    # M = 4, one exclusive attribute (the first), v = 0.5: r = 0.5, b = sqrt(0.25 / 3)
    d = torch.tensor([1.2, 0.5], dtype=torch.float64)
    d_k = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.1, 0.1, 0.15, 0.15]], dtype=torch.float64)
    ex = torch.tensor([[True, False, False, False], [False, False, False, False]])
    out = amd_loss(d, d_k, ex, alpha=10.0, beta=50.0, v=0.5)
    b = math.sqrt(0.25 / 3)
    # pair 1: L_d = 0.2; L_p1 = (0.5 - 0.1) + (0.9 - 0.5); L_p2 = (b - 0.1) + (0.3 - b) + (0.4 - b)
    p1_1, p2_1 = 0.8, (b - 0.1) + (0.3 - b) + (0.4 - b)
    # pair 2 (all common, shares .2 .2 .3 .3): L_d = 0; L_p1 = 0; L_p2 = 2 * (0.3 - 0.25)
    p1_2, p2_2 = 0.0, 0.1
    assert out.distill.item() == pytest.approx((0.2 + 0.0) / 2)
    assert out.prior_group.item() == pytest.approx((p1_1 + p1_2) / 2)
    assert out.prior_each.item() == pytest.approx((p2_1 + p2_2) / 2)
    assert out.total.item() == pytest.approx(0.1 + 10 * 0.4 + 50 * (p2_1 + p2_2) / 2)


def test_satisfied_priors_cost_nothing_and_gradients_flow() -> None:
    d_k = torch.tensor([[0.6, 0.1, 0.1, 0.1]], requires_grad=True)
    ex = torch.tensor([[True, False, False, False]])
    out = amd_loss(torch.tensor([0.9]), d_k, ex)
    assert out.prior_group.item() == 0 and out.prior_each.item() == 0
    assert out.distill.item() == pytest.approx(0.0, abs=1e-6)
    bad = torch.tensor([[0.1, 0.6, 0.1, 0.1]], requires_grad=True)
    worse = amd_loss(torch.tensor([0.9]), bad, ex)
    worse.total.backward()
    assert worse.total.item() > 1 and bad.grad is not None
    assert bad.grad[0, 0] < 0 < bad.grad[0, 1]  # raise the exclusive, lower the common one


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        amd_loss(torch.ones(2), torch.ones(2, 3), torch.ones(2, 4, dtype=torch.bool))
