"""LRP against a float64 matrix-form oracle of the z+ and epsilon rules, plus engine properties."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pairx.core.errors import ModelError
from pairx.lrp.zennit_engine import (
    capture_layers,
    input_relevance,
    lrp_mode,
    pixel_relevance,
    similarity_relevance,
)

EPS = 1e-6


def _stab(z: torch.Tensor) -> torch.Tensor:
    """zennit's stabilizer: add eps with the sign of z (+eps where z == 0)."""
    return z + ((z == 0).to(z.dtype) + z.sign()) * EPS


def _matrix(fn: nn.Module, in_shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of a linear map (bias removed), column k = fn(e_k) - fn(0)."""
    n = int(torch.tensor(in_shape).prod())
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        zero = fn(torch.zeros(1, *in_shape, dtype=torch.float64))
        cols = fn(basis) - zero
    return cols.reshape(n, -1).T


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 5),
    ).double()
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                assert m.bias is not None
                m.bias.normal_(0, 0.3)
    return net.eval()


def _oracle(net: nn.Sequential, x: torch.Tensor, r_out: torch.Tensor) -> torch.Tensor:
    conv1, _, conv2, _, _, lin = net
    a0 = x.reshape(-1)
    w1 = _matrix(nn.Sequential(conv1), (2, 6, 6))
    b1 = conv1(torch.zeros(1, 2, 6, 6, dtype=torch.float64)).reshape(-1).detach()
    a1 = (w1 @ a0 + b1).clamp(min=0)
    w2 = _matrix(nn.Sequential(conv2), (3, 4, 4))
    b2 = conv2(torch.zeros(1, 3, 4, 4, dtype=torch.float64)).reshape(-1).detach()
    a2 = (w2 @ a1 + b2).clamp(min=0)
    wl, bl = lin.weight.detach(), lin.bias.detach()
    # epsilon rule on the dense layer
    z = wl @ a2 + bl
    r2 = a2 * (wl.T @ (r_out / _stab(z)))

    def zplus(w: torch.Tensor, b: torch.Tensor, a: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        ap, an = a.clamp(min=0), a.clamp(max=0)
        z = wp @ ap + wn @ an + b.clamp(min=0)
        s = r / _stab(z)
        return ap * (wp.T @ s) + an * (wn.T @ s)

    r1 = zplus(w2, b2, a1, r2)  # ReLU passes relevance unchanged
    return zplus(w1, b1, a0, r1).reshape(x.shape)


def test_lrp_matches_float64_oracle() -> None:
    net = _net()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    r_out = torch.rand(1, 5, dtype=torch.float64)
    rel, out = input_relevance(net, x, r_out)
    torch.testing.assert_close(out, net(x).detach())
    expected = _oracle(net, x[0], r_out[0])
    torch.testing.assert_close(rel[0], expected, rtol=1e-9, atol=1e-12)


def test_relevance_at_layer_matches_oracle_and_is_linear() -> None:
    net = _net()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    r1, r2 = torch.rand(1, 5, dtype=torch.float64), torch.rand(1, 5, dtype=torch.float64)
    rel1, _ = input_relevance(net, x, r1, layer="2")
    rel2, _ = input_relevance(net, x, r2, layer="2")
    rel12, _ = input_relevance(net, x, 2.0 * r1 - r2, layer="2")
    torch.testing.assert_close(rel12, 2.0 * rel1 - rel2, rtol=1e-9, atol=1e-12)


def test_pixel_relevance_batched_items_do_not_mix() -> None:
    net = _net()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    positions = torch.tensor([[[0, 0], [3, 2]], [[1, 3], [2, 2]]])  # (K=2, B=2, 2)
    with lrp_mode(net) as hooked:
        xb = x.clone().requires_grad_(True)
        with capture_layers(hooked, ["2"]) as found, torch.enable_grad():
            hooked(xb)
        both = pixel_relevance(found["2"], xb, positions)
        singles = []
        for b in range(2):
            xs = x[b:b + 1].clone().requires_grad_(True)
            with capture_layers(hooked, ["2"]) as found1, torch.enable_grad():
                hooked(xs)
            singles.append(pixel_relevance(found1["2"], xs, positions[:, b]))
    assert both.shape == (2, 2, 6, 6)
    for b in range(2):
        torch.testing.assert_close(both[:, b], singles[b], rtol=1e-10, atol=1e-12)
    # a single position's relevance equals LRP of the masked activation by hand
    with lrp_mode(net) as hooked:
        xs = x[:1].clone().requires_grad_(True)
        with capture_layers(hooked, ["2"]) as found2, torch.enable_grad():
            hooked(xs)
        act = found2["2"].detach()
        seed = torch.zeros_like(act)
        seed[0, :, 3, 1] = act[0, :, 3, 1]  # map k=1 of item 0: (col, row) = (1, 3)
        (grad,) = torch.autograd.grad(found2["2"], xs, seed)
    torch.testing.assert_close(singles[0][1], grad[0].sum(0).abs())


def test_similarity_relevance_formula_and_errors() -> None:
    a, b = torch.randn(1, 7, dtype=torch.float64), torch.randn(1, 7, dtype=torch.float64)
    cos, r_a, r_b = similarity_relevance(a, b)
    na, nb = a.norm(), b.norm()
    expected_cos = float((a * b).sum() / (na * nb))
    assert cos == pytest.approx(expected_cos, rel=1e-12)
    grad_a = b / (na * nb) - expected_cos * a / na**2
    torch.testing.assert_close(r_a, expected_cos * grad_a, rtol=1e-8, atol=1e-12)
    # conservation at the embedding: sum(e * d cos / d e) = 0, so relevance is a redistribution
    assert float((a * r_a).sum()) == pytest.approx(0.0, abs=1e-10)
    assert r_b.shape == b.shape
    with pytest.raises(ModelError, match="zero norm"):
        similarity_relevance(torch.zeros(1, 7), b.float())
    with pytest.raises(ModelError, match="NaN"):
        similarity_relevance(torch.full((1, 7), float("nan")), b.float())


def test_lrp_mode_leaves_no_hooks_and_restores_flags() -> None:
    net = _net()
    net.train()
    net[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in net.parameters()]
    with lrp_mode(net):
        assert any(m._forward_hooks for m in net.modules())
        assert not any(p.requires_grad for p in net.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(m.training for m in net.modules())


def _conv_nodes(t: torch.Tensor) -> int:
    """ConvolutionBackward nodes reachable from ``t``'s autograd graph."""
    seen, todo, n = set(), [t.grad_fn], 0
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        n += type(node).__name__.startswith("ConvolutionBackward")
        todo.extend(f for f, _ in node.next_functions)
    return n


@pytest.mark.parametrize("signed_hidden", [False, True])
def test_nonnegative_zplus_equals_zennit_zplus(signed_hidden: bool) -> None:
    """pairx's ZPlus: zennit's relevances at every layer (equal values; a zero may change
    sign), with the convolutions' own backward passes out of the graph."""
    from zennit.composites import EpsilonPlus
    from zennit.rules import ZPlus
    from zennit.types import Convolution

    from pairx.lrp.zennit_engine import NonNegativeZPlus

    torch.manual_seed(0)
    act = nn.Identity() if signed_hidden else nn.ReLU()  # Identity: signed conv inputs
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, stride=2, padding=1), act,
                        nn.Conv2d(8, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten()).eval()
    x = torch.randn(2, 3, 16, 16)  # signed pixels: the first convolution takes zennit's path
    seed = torch.randn(2, 4)

    def relevances(rule: type) -> tuple[torch.Tensor, ...]:
        composite = EpsilonPlus(layer_map=[((Convolution,), rule(stabilizer=1e-6))])
        xx = x.clone().requires_grad_(True)
        hidden: list[torch.Tensor] = []
        handle = net[1].register_forward_hook(lambda _m, _i, o: hidden.append(o))
        try:
            with composite.context(net) as m:
                out = m(xx)
                r_x, r_h = torch.autograd.grad(out, [xx, hidden[0]], seed)
                return out, r_x, r_h, torch.tensor(_conv_nodes(out))
        finally:
            handle.remove()

    out, r_x, r_h, n_ours = relevances(NonNegativeZPlus)
    ref_out, ref_x, ref_h, n_ref = relevances(ZPlus)
    assert torch.equal(out, ref_out)
    assert torch.equal(r_h, ref_h) and torch.equal(r_x, ref_x)
    assert r_x.abs().sum() > 0
    assert int(n_ref) == 3 and int(n_ours) == 0
