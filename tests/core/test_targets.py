"""Similarity targets: values, shapes, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pairx.core.errors import InputError, ModelError
from pairx.core.targets import CosineTarget, DotTarget, make_target, target_relevance


def test_cosine_and_dot_values_and_shapes() -> None:
    g = torch.Generator().manual_seed(0)
    p, e = torch.randn(1, 8, generator=g), torch.randn(3, 8, generator=g)
    cos = CosineTarget(p)(e)
    assert cos.shape == (3,)
    torch.testing.assert_close(cos, F.cosine_similarity(e, p.expand(3, 8), dim=1))
    torch.testing.assert_close(DotTarget(p)(e), e @ p[0])
    # one (D,) embedding, as pytorch-grad-cam passes it, gives a scalar
    assert CosineTarget(p)(e[0]).dim() == 0
    # the partner is detached and copied: changing it later changes nothing
    t = CosineTarget(p)
    p.add_(100.0)
    torch.testing.assert_close(t(e), cos)


def test_target_errors() -> None:
    with pytest.raises(ModelError, match="zero norm"):
        CosineTarget(torch.zeros(4))
    with pytest.raises(ModelError, match="NaN"):
        DotTarget(torch.tensor([1.0, float("nan")]))
    with pytest.raises(InputError, match="unknown similarity target"):
        make_target("euclid", torch.ones(3))
    with pytest.raises(ModelError, match="do not match"):
        CosineTarget(torch.ones(3))(torch.ones(2, 4))


def test_target_relevance_is_s_times_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 6, generator=g), torch.randn(1, 6, generator=g)
    s, r_a, r_b = target_relevance("dot", a, b)
    assert s == pytest.approx(float(a @ b.T))
    torch.testing.assert_close(r_a, s * b)
    torch.testing.assert_close(r_b, s * a)
