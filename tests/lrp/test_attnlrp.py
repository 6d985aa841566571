"""The AttnLRP attention rule: a float64 element-wise oracle, both engines, both families."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.lrp.test_gradient_engine import _both_engines, _close
from tests.lrp.test_swin import tiny_swin
from tests.lrp.test_vit import assert_canonizer_exact, tiny_vit

from pairx.core.errors import CanonizerError
from pairx.explainers.pairx import PairX
from pairx.lrp.attnlrp import AttnLRPMix
from pairx.lrp.convention import carrier, gradient_convention
from pairx.lrp.families import canonizer_for
from pairx.models.adapter import Preprocessing, ReIDModel

EPS = 1e-6


def _s(x: float) -> float:
    return x + EPS * (1.0 if x >= 0 else -1.0)


def _oracle(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, bias: np.ndarray | None,
            r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Propositions 3.1 and 3.3 of AttnLRP written out element by element, one head:
    ``q, k, v (N, d)``, ``bias (N, N)``, ``r (N, d)``."""
    n, d = q.shape
    qs = q * scale
    z = np.array([[sum(qs[t, e] * k[u, e] for e in range(d)) for u in range(n)]
                  for t in range(n)])
    logit = z + (0 if bias is None else bias)
    a = np.exp(logit - logit.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    out = np.array([[sum(a[t, u] * v[u, e] for u in range(n)) for e in range(d)]
                    for t in range(n)])
    r_a, r_v = np.zeros((n, n)), np.zeros((n, d))
    for t in range(n):
        for e in range(d):
            share = r[t, e] / _s(2 * out[t, e])
            for u in range(n):
                r_a[t, u] += a[t, u] * v[u, e] * share
                r_v[u, e] += a[t, u] * v[u, e] * share
    r_l = np.array([[logit[t, u] * (r_a[t, u] - a[t, u] * r_a[t].sum()) for u in range(n)]
                    for t in range(n)])
    r_z = r_l if bias is None else np.array(
        [[z[t, u] * r_l[t, u] / _s(logit[t, u]) for u in range(n)] for t in range(n)])
    r_q, r_k = np.zeros((n, d)), np.zeros((n, d))
    for t in range(n):
        for u in range(n):
            share = r_z[t, u] / _s(2 * z[t, u])
            for e in range(d):
                r_q[t, e] += qs[t, e] * k[u, e] * share
                r_k[u, e] += qs[t, e] * k[u, e] * share
    return r_q, r_k, r_v


def _mix_relevance(mix: AttnLRPMix, qkv: torch.Tensor, r_out: torch.Tensor,
                   gradient: bool) -> torch.Tensor:
    leaf = qkv.clone().requires_grad_(True)
    if gradient:
        with gradient_convention():
            out = mix(leaf)
        (g,) = torch.autograd.grad(out, leaf, grad_outputs=r_out / carrier(out))
        return g * carrier(leaf)
    out = mix(leaf)
    (rel,) = torch.autograd.grad(out, leaf, grad_outputs=r_out)
    return rel


@pytest.mark.parametrize("kind", ["vit", "swin_shifted"])
@pytest.mark.parametrize("gradient", [False, True], ids=["zennit", "gradient"])
def test_attnlrp_matches_elementwise_float64_oracle(kind: str, gradient: bool) -> None:
    if kind == "vit":
        attention = tiny_vit(embed_dim=12, num_heads=2).double().blocks[0].attn
        windows, n, mask = 2, 5, None
    else:
        block = tiny_swin(side=32).double().layers[0].blocks[1]  # shifted: carries a mask
        attention, mask = block.attn, block.attn_mask
        assert mask is not None
        windows, n = int(mask.shape[0]), int(mask.shape[-1])
    heads = int(attention.num_heads)
    dim = heads * int(attention.head_dim if hasattr(attention, "head_dim") else 12 // heads)
    mix = AttnLRPMix(attention)
    mix.mask = mask
    torch.manual_seed(0)
    qkv = torch.randn(windows, n, 3 * dim, dtype=torch.float64)
    r_out = torch.randn(windows, n, dim, dtype=torch.float64)
    got = _mix_relevance(mix, qkv, r_out, gradient)
    d = dim // heads
    bias = mix._bias(windows)
    for w in range(windows):
        for h in range(heads):
            parts = qkv[w].reshape(n, 3, heads, d)
            q, k, v = (parts[:, i, h].numpy() for i in range(3))
            b = None if bias is None else bias[w, h].numpy()
            r = r_out[w].reshape(n, heads, d)[:, h].numpy()
            want = _oracle(q, k, v, float(attention.scale), b, r)
            rel = got[w].reshape(n, 3, heads, d)
            for i in range(3):
                np.testing.assert_allclose(rel[:, i, h].numpy(), want[i], rtol=1e-7,
                                           atol=1e-10 * np.abs(want[i]).max())


@pytest.mark.parametrize(("family", "kind"), [("timm_vit_attnlrp", "vit"),
                                              ("timm_swin_attnlrp", "swin")])
def test_attnlrp_family_engines_agree_and_differ_from_cp(family: str, kind: str) -> None:
    net, side, layer = ((tiny_vit(seed=4), 32, "blocks.0") if kind == "vit"
                        else (tiny_swin(seed=4), 64, "layers.0.blocks.1"))
    model = ReIDModel(net, Preprocessing(size=(side, side)), family=family)
    x = torch.randn(2, 3, side, side)
    before = assert_canonizer_exact(model, x)
    positions = torch.tensor([[[0, 0], [1, 2]], [[2, 1], [3, 3]]])
    seed = torch.rand(before.shape, generator=torch.Generator().manual_seed(1))
    res = _both_engines(model, x, layer, positions, seed)
    for key in ("layer", "x", "pix"):
        _close(res["gradient"][key], res["zennit"][key], 1e-4)
    cp = _both_engines(ReIDModel(net, model.preprocessing), x, layer, positions, seed)
    diff = (cp["zennit"]["x"] - res["zennit"]["x"]).abs().max() / cp["zennit"]["x"].abs().max()
    assert float(diff) > 0.01  # the weights' relevance is no longer discarded


def test_attnlrp_in_pairx_and_refusals() -> None:
    net = tiny_vit(seed=5, img_size=64)
    model = ReIDModel(net, Preprocessing(size=(64, 64)))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    b = np.roll(a, 8, axis=1)
    cp = PairX(model, ["blocks.0"], n_pixel_maps=2, allow_untrained=True).explain_layers(a, b)
    att = PairX(model, ["blocks.0"], n_pixel_maps=2, allow_untrained=True,
                family="timm_vit_attnlrp").explain_layers(a, b)
    assert cp["blocks.0"].similarity == pytest.approx(att["blocks.0"].similarity, abs=1e-5)
    assert not np.allclose(cp["blocks.0"].relevance_a, att["blocks.0"].relevance_a)
    with pytest.raises(CanonizerError, match="q/k norms"):
        with canonizer_for(tiny_vit(qk_norm=True), "timm_vit_attnlrp").applied(
                tiny_vit(qk_norm=True)):
            pass
    from pairx.lrp.vit import TimmViT

    with pytest.raises(CanonizerError, match="attention rule"):
        TimmViT("fancy")
