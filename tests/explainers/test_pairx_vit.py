"""PAIR-X on a tiny timm ViT against a brute-force computation on the raw tokens.

The brute force never uses pairx's token-to-grid view: it hooks the block's ``(1, N, C)``
output itself, indexes patch tokens as ``1 + row * w + col`` (one class token) and runs one
zennit backward pass per quantity.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from pairx.core.errors import LayerError
from pairx.explainers.matching import feature_descriptors, mutual_nearest_neighbours
from pairx.explainers.pairx import PairX as _PairX
from pairx.lrp.zennit_engine import lrp_mode, similarity_relevance
from pairx.models.adapter import Preprocessing, ReIDModel

PairX = functools.partial(_PairX, allow_untrained=True)
SIZE, PATCH, LAYER = 64, 8, "blocks.1"
GRID = SIZE // PATCH


@pytest.fixture(scope="module")
def model() -> ReIDModel:
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", img_size=SIZE, patch_size=PATCH,
                            embed_dim=48, depth=3, num_heads=3, num_classes=0).eval()
    return ReIDModel(net, Preprocessing(size=(SIZE, SIZE)), name="tiny-vit-test")


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    a = np.asarray(Image.fromarray(base).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    return a, np.roll(a, shift=(8, -8), axis=(0, 1))


def _tokens(model: ReIDModel, x: torch.Tensor, net: torch.nn.Module) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
    """The embedding and the raw ``(1, N, C)`` output of the layer, in one forward pass."""
    seen: dict[str, torch.Tensor] = {}
    handle = model.net.get_submodule(LAYER).register_forward_hook(
        lambda _m, _i, o: seen.setdefault("t", o))
    try:
        out = net(x)
    finally:
        handle.remove()
    return out, seen["t"]


def test_pairx_on_vit_equals_brute_force(model: ReIDModel,
                                         images: tuple[np.ndarray, np.ndarray]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # token models go dense without a warning
        result = PairX(model, [LAYER], n_matches=6, n_pixel_maps=3).explain_layers(
            *images)[LAYER]
    zen = PairX(model, [LAYER], n_matches=6, n_pixel_maps=3, engine="zennit").explain_layers(
        *images)[LAYER]
    xa, xb = model.to_input(images[0]), model.to_input(images[1])
    with lrp_mode(model) as net, torch.no_grad():  # the seeds come from the canonized forward:
        ea, eb = net(xa), net(xb)  # the cosine's gradient amplifies its last-bit differences
    cos, r_a, r_b = similarity_relevance(ea, eb)
    assert result.similarity == pytest.approx(cos, abs=1e-5)
    assert result.relevance_a.shape == (GRID, GRID)
    # layer relevance: the patch tokens' relevance, channels summed, absolute
    feats = {}
    for key, x, r in (("a", xa, r_a), ("b", xb, r_b)):
        with lrp_mode(model) as net:
            xr = x.clone().requires_grad_(True)
            with torch.enable_grad():
                out, tok = _tokens(model, xr, net)
            (rel,) = torch.autograd.grad(out, tok, grad_outputs=r, retain_graph=True)
            patch_rel = rel[0, 1:].abs().sum(-1).reshape(GRID, GRID)
            expected = getattr(result, f"relevance_{key}")
            np.testing.assert_allclose(expected, patch_rel.numpy(), rtol=1e-4,
                                       atol=1e-6 * float(patch_rel.max()))
            np.testing.assert_allclose(getattr(zen, f"relevance_{key}"), expected, rtol=1e-4,
                                       atol=1e-6 * float(patch_rel.max()))
            grid = result.matches.grid_a if key == "a" else result.matches.grid_b
            maps = getattr(result, f"pixel_relevance_{key}")
            assert maps.shape == (3, SIZE, SIZE)
            act = tok.detach()
            for k in range(maps.shape[0]):
                col, row = (int(v) for v in grid[k])
                seed = torch.zeros_like(act)
                seed[0, 1 + row * GRID + col] = act[0, 1 + row * GRID + col]
                (g,) = torch.autograd.grad(tok, xr, grad_outputs=seed, retain_graph=True)
                want = g[0].sum(0).abs().numpy()
                np.testing.assert_allclose(maps[k], want, rtol=1e-4, atol=1e-6 * want.max())
                np.testing.assert_allclose(getattr(zen, f"pixel_relevance_{key}")[k], want,
                                           rtol=1e-4, atol=1e-6 * want.max())
        # matches: mutual nearest neighbours of the plain model's patch tokens
        with torch.no_grad():
            _, tok = _tokens(model, x, model.net)
        feats[key] = feature_descriptors(
            tok[:, 1:].transpose(1, 2).reshape(1, -1, GRID, GRID))
    ia, ib, _ = mutual_nearest_neighbours(feats["a"], feats["b"])
    pairs = {(int(i) % GRID, int(i) // GRID, int(j) % GRID, int(j) // GRID)
             for i, j in zip(ia, ib, strict=True)}
    got = {tuple(v) for v in np.hstack([result.matches.grid_a, result.matches.grid_b]).tolist()}
    assert got and got <= pairs  # the top 6 of the mutual nearest neighbours
    np.testing.assert_allclose(result.matches.xy_a, (result.matches.grid_a + 0.5) * PATCH)


def test_model_is_untouched_after_explaining(model: ReIDModel,
                                             images: tuple[np.ndarray, np.ndarray]) -> None:
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        before = model.net(x)
    state = {k: v.clone() for k, v in model.net.state_dict().items()}
    PairX(model, [LAYER, "blocks.0"], n_pixel_maps=1).explain_layers(*images)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.net.modules())
    assert "forward" not in vars(model.net.blocks[0]) and "pool" not in vars(model.net)
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(model.net(x), before)


def test_layers_after_the_class_token_is_read_are_refused(
        model: ReIDModel, images: tuple[np.ndarray, np.ndarray]) -> None:
    for layer in ("blocks.2", "blocks.2.mlp.fc1", "norm"):
        with pytest.raises(LayerError, match="pools its class"):
            PairX(model, [layer])
    from pairx.models.layer_choice import block_layers

    assert block_layers(model) == ["blocks.0", "blocks.1"]  # `pairx layers` leaves it out
    # the last block's input side still reaches the class token through attention
    r = PairX(model, ["blocks.2.norm1"], n_pixel_maps=0).explain_layers(*images)["blocks.2.norm1"]
    assert r.relevance_a.max() > 0
