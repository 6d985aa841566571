"""timm Vision Transformers: the CP-LRP canonizer (:mod:`pairx.lrp.vit`) and both engines.

Oracles: a float64 re-implementation of one transformer block's CP-LRP rules written with
explicit matrices (no hooks, no autograd), relevance conservation on bias-free ViTs, and
zennit's engine against pairx's gradient engine.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from tests.lrp.test_gradient_engine import _both_engines, _close
from torch import nn

from pairx.core.errors import CanonizerError
from pairx.lrp.families import canonizer_for, detect_family
from pairx.lrp.gradient_engine import gradient_lrp_mode, layer_relevance
from pairx.lrp.zennit_engine import input_relevance, lrp_mode
from pairx.models.adapter import Preprocessing, ReIDModel

SIDE = 32


def tiny_vit(seed: int = 0, **kwargs: object) -> nn.Module:
    """A 2-block ViT on a 4 x 4 patch grid (32 px, patch 8), random weights."""
    torch.manual_seed(seed)
    args: dict[str, object] = {"img_size": SIDE, "patch_size": 8, "embed_dim": 48, "depth": 2,
                               "num_heads": 3, "num_classes": 0}
    args.update(kwargs)
    return timm.create_model("vit_tiny_patch16_224", **args).eval()


def _zero_biases(net: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.LayerNorm)) and m.bias is not None:
                m.bias.zero_()
    return net


VARIANTS = {
    "cls": {},
    "avg": {"class_token": False, "global_pool": "avg"},
    "registers_layerscale": {"reg_tokens": 2, "init_values": 0.5, "no_embed_class": True,
                             "global_pool": "avg", "qk_norm": True},
}


def _structure(net: nn.Module) -> list[tuple[str, int, type, tuple[str, ...]]]:
    return [(name, id(m), type(m), tuple(sorted(k for k in m.__dict__ if not k.startswith("_"))))
            for name, m in net.named_modules()]


def assert_canonizer_exact(model: ReIDModel | nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The canonized network gives the same output (to float rounding), and removing the
    canonizer restores structure, parameters and output bit-exactly; returns the output."""
    net = model.net if isinstance(model, ReIDModel) else model
    with torch.no_grad():
        before = net(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    structure = _structure(net)
    with canonizer_for(model).applied(net), torch.no_grad():
        assert _structure(net) != structure
        during = net(x)
    torch.testing.assert_close(during, before, atol=1e-5 * float(before.abs().max()), rtol=0)
    assert _structure(net) == structure
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(net(x), before)
    return before


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_canonized_output_unchanged_and_undone_bit_exactly(variant: str) -> None:
    net = tiny_vit(**VARIANTS[variant])
    assert detect_family(net) == "timm_vit"
    assert_canonizer_exact(net, torch.randn(2, 3, SIDE, SIDE))


def conservation_ratio(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B,)`` sum of input relevance / sum of a random positive output relevance (zennit,
    stabilizers 1e-9), and the output."""
    with torch.no_grad():
        out = net(x)
    r_out = torch.rand_like(out)
    rel, _ = input_relevance(net, x, r_out, epsilon=1e-9, stabilizer=1e-9)
    return rel.sum(dim=(1, 2, 3)) / r_out.sum(dim=1), out


@pytest.mark.parametrize("variant", ["avg", "registers_layerscale"])
def test_bias_free_vit_conserves_relevance_in_both_engines(variant: str) -> None:
    net = _zero_biases(tiny_vit(seed=1, **VARIANTS[variant]))
    x = torch.randn(2, 3, SIDE, SIDE)
    ratio, out = conservation_ratio(net, x)
    # register tokens are constants: what reaches them is not in the input (measured < 2e-3)
    tol = 1e-4 if variant == "avg" else 5e-3
    assert torch.all((ratio - 1).abs() < tol), ratio
    # the cosine decomposed over embedding dimensions, e_a * e_b / (|e_a| |e_b|), sums to the
    # cosine: so do the input relevances, in both engines
    a, b = out[:1], out[1:]
    cos = float(torch.nn.functional.cosine_similarity(a, b)[0])
    seed = a * b / (a.norm() * b.norm())
    for mode in (lrp_mode, gradient_lrp_mode):
        with mode(net, epsilon=1e-9, stabilizer=1e-9) as canon:
            xr = x[:1].clone().requires_grad_(True)
            y = canon(xr)
            if mode is lrp_mode:
                (r,) = torch.autograd.grad(y, xr, grad_outputs=seed)
            else:
                (r,) = layer_relevance(y, seed, [xr])  # type: ignore[misc]
        assert r is not None
        assert abs(float(r.sum()) - cos) <= tol * max(1.0, abs(cos)), (mode, float(r.sum()), cos)


def test_class_token_pooling_bounds_relevance() -> None:
    """With class-token pooling the class token (a constant) keeps part of the relevance."""
    net = _zero_biases(tiny_vit(seed=1))
    x = torch.randn(1, 3, SIDE, SIDE)
    with torch.no_grad():
        out = net(x)
    rel, _ = input_relevance(net, x, out.abs(), epsilon=1e-9, stabilizer=1e-9)
    assert 0 < abs(float(rel.sum())) < float(out.abs().sum())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_engines_agree_on_vit(variant: str) -> None:
    net = tiny_vit(seed=2, **VARIANTS[variant])
    model = ReIDModel(net, Preprocessing(size=(SIDE, SIDE)), name=f"vit-{variant}")
    x = torch.randn(2, 3, SIDE, SIDE)
    positions = torch.tensor([[[0, 0], [3, 2]], [[2, 1], [3, 3]]])
    res = _both_engines(model, x, "blocks.0", positions)
    z, g = res["zennit"], res["gradient"]
    assert torch.equal(z["out"], g["out"])
    assert z["layer"].shape == (2, 48, 4, 4)
    for key in ("layer", "x", "pix"):
        _close(g[key], z[key], 1e-4)


# -- a float64 oracle for one block ----------------------------------------------------------


def _stab(z: np.ndarray, eps: float) -> np.ndarray:
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def _eps_rule(x: np.ndarray, jac: np.ndarray, offset: np.ndarray, r: np.ndarray,
              eps: float) -> np.ndarray:
    """Epsilon rule of the affine map ``z = jac @ x + offset``."""
    return x * (jac.T @ (r / _stab(jac @ x + offset, eps)))


def _block_oracle(block: nn.Module, x: np.ndarray, r_out: np.ndarray, eps: float) -> np.ndarray:
    """CP-LRP through one timm ``Block`` (no layer scale), float64, explicit matrices.

    ``x``: ``(N, C)`` tokens; ``r_out``: ``(N, C)`` relevance of the block's output.
    """
    n, c = x.shape
    p = {k: v.detach().double().numpy() for k, v in block.state_dict().items()}
    heads = int(block.attn.num_heads)
    d = c // heads

    def layer_norm(prefix: str, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        jac = np.zeros((n * c, n * c))
        centre = np.eye(c) - 1.0 / c
        for i in range(n):
            std = np.sqrt(((t[i] - t[i].mean()) ** 2).mean() + 1e-6)
            block_jac = np.diag(p[prefix + ".weight"]) @ centre / std
            jac[i * c:(i + 1) * c, i * c:(i + 1) * c] = block_jac
        offset = np.tile(p[prefix + ".bias"], n)
        return jac, offset, (jac @ t.reshape(-1) + offset).reshape(n, -1)

    def linear(prefix: str, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, b = p[prefix + ".weight"], p[prefix + ".bias"]
        jac = np.kron(np.eye(n), w)
        offset = np.tile(b, n)
        return jac, offset, (jac @ t.reshape(-1) + offset).reshape(n, -1)

    def gelu(t: np.ndarray) -> np.ndarray:
        from scipy.special import erf

        return 0.5 * t * (1 + erf(t / np.sqrt(2)))

    def summed(a: np.ndarray, b: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        den = _stab(a + b, eps)
        return a * r / den, b * r / den

    # forward, keeping every layer's input
    j_ln1, o_ln1, h1 = layer_norm("norm1", x)
    j_qkv, o_qkv, qkv = linear("attn.qkv", h1)
    q, k, v = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
    j_mix = np.zeros((n * c, n * 3 * c))
    mixed = np.zeros((n, c))
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        logits = q[:, sl] @ k[:, sl].T / np.sqrt(d)
        att = np.exp(logits - logits.max(axis=1, keepdims=True))
        att /= att.sum(axis=1, keepdims=True)
        mixed[:, sl] = att @ v[:, sl]
        for t in range(n):
            for u in range(n):
                for e in range(d):
                    j_mix[t * c + h * d + e, u * 3 * c + 2 * c + h * d + e] = att[t, u]
    j_proj, o_proj, a_out = linear("attn.proj", mixed)
    y = x + a_out
    j_ln2, o_ln2, h2 = layer_norm("norm2", y)
    j_fc1, o_fc1, f1 = linear("mlp.fc1", h2)
    g1 = gelu(f1)
    j_fc2, o_fc2, m_out = linear("mlp.fc2", g1)
    # backward
    r_y, r_m = summed(y, m_out, r_out)
    r = _eps_rule(g1.reshape(-1), j_fc2, o_fc2, r_m.reshape(-1), eps)  # GELU: identity rule
    r = _eps_rule(h2.reshape(-1), j_fc1, o_fc1, r, eps)
    r_y = r_y + _eps_rule(y.reshape(-1), j_ln2, o_ln2, r, eps).reshape(n, c)
    r_x, r_a = summed(x, a_out, r_y)
    r = _eps_rule(mixed.reshape(-1), j_proj, o_proj, r_a.reshape(-1), eps)
    r = _eps_rule(qkv.reshape(-1), j_mix, np.zeros(n * c), r, eps)
    r = _eps_rule(h1.reshape(-1), j_qkv, o_qkv, r, eps)
    result: np.ndarray = r_x + _eps_rule(x.reshape(-1), j_ln1, o_ln1, r, eps).reshape(n, c)
    return result


def test_block_relevance_matches_float64_oracle() -> None:
    pytest.importorskip("scipy")
    net = tiny_vit(seed=3, depth=1, embed_dim=12, num_heads=2, img_size=16).double()
    with torch.no_grad():
        for m in net.modules():  # biases of order one, so the oracle checks them too
            if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is not None:
                m.bias.normal_(0, 0.5)
    block = net.blocks[0]
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    stored: dict[str, torch.Tensor] = {}

    def take_input(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        stored["in"] = args[0].detach().requires_grad_(True)
        return (stored["in"],)

    r_out = torch.rand(1, 5, 12, dtype=torch.float64)
    for mode in (lrp_mode, gradient_lrp_mode):
        with mode(net, epsilon=1e-9, stabilizer=1e-9) as canon:
            handle = block.register_forward_pre_hook(take_input)
            try:
                canon.forward_features(x)
            finally:
                handle.remove()
            block_out = block(stored["in"])
            if mode is lrp_mode:
                (rel,) = torch.autograd.grad(block_out, stored["in"], grad_outputs=r_out)
            else:
                (got,) = layer_relevance(block_out, r_out, [stored["in"]])
                assert got is not None
                rel = got
        expected = _block_oracle(block, stored["in"][0].detach().numpy(), r_out[0].numpy(), 1e-9)
        np.testing.assert_allclose(rel[0].detach().numpy(), expected, rtol=1e-7,
                                   atol=1e-9 * np.abs(expected).max())


def test_unsupported_vit_variants_are_refused() -> None:
    with pytest.raises(CanonizerError, match="attention pooling"):
        with canonizer_for(tiny_vit(global_pool="map")).applied(tiny_vit(global_pool="map")):
            pass
    net = tiny_vit(global_pool="max", class_token=False)
    before = _structure(net)
    with pytest.raises(CanonizerError, match="global_pool"), canonizer_for(net).applied(net):
        pass
    assert _structure(net) == before  # the partial edit is undone
