"""PAW-ViT: tokens, ATM masks, aggregation, the inference export, and LRP on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.explainers.test_gradient_lrp import _both_engines, _close
from tests.models.test_vit import assert_canonizer_exact

from pairx.core.errors import LayerError
from pairx.explainers.pairx import PairX
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.canonizers import detect_family
from pairx.models.layer_choice import block_layers
from pairx.models.paw_vit import PAWViT

SIDE = 64


def small_paw(seed: int = 0) -> PAWViT:
    torch.manual_seed(seed)
    return PAWViT(identities=7, img_size=SIDE, patch_size=8, embed_dim=48, depth=3, heads=3,
                  drop_path_rate=0.0).eval()


def test_training_outputs_and_inference_export() -> None:
    model = small_paw()
    x = torch.randn(4, 3, SIDE, SIDE)
    out = model.forward_train(x)
    assert out.embedding.shape == (4, 48) and out.logits.shape == (4, 7)
    assert out.masks.shape == (4, 6, SIDE // 4, SIDE // 4)  # 5 parts + background, f = 4
    masks = out.masks.detach()
    assert float(masks.min()) > 0 and float(masks.max()) < 1
    assert out.orientation.shape == (4, 5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), out.embedding.detach())
    keys = set(model.embedder.state_dict())
    assert not any(k.startswith(("atm", "bnneck", "classifier", "orientation")) for k in keys)
    assert {k for k in model.state_dict() if not k.startswith("embedder.")} == {
        k for k in model.state_dict() if k.startswith(("atm.", "bnneck.", "classifier.",
                                                        "orientation."))}
    assert not model.bnneck.bias.requires_grad  # the BNNeck's bias is frozen
    backbone = model.embedder.backbone
    assert backbone.cls_token is None and backbone.num_prefix_tokens == 6


def test_embedding_ignores_the_background_token() -> None:
    model = small_paw(1)
    x = torch.randn(2, 3, SIDE, SIDE)

    def shifted(row: int) -> torch.Tensor:
        def hook(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[:, row] += 3.0
            return out

        handle = model.embedder.backbone.norm.register_forward_hook(hook)
        try:
            with torch.no_grad():
                return model(x)
        finally:
            handle.remove()

    with torch.no_grad():
        base = model(x)
    assert torch.equal(shifted(5), base)  # token 5 is the background token
    assert not torch.allclose(shifted(0), base)  # a part token does change it


def test_lrp_on_the_paw_vit_embedder() -> None:
    model = small_paw(2)
    net = model.embedder
    assert detect_family(net) == "timm_vit"
    x = torch.randn(2, 3, SIDE, SIDE)
    before = assert_canonizer_exact(net, x)
    reid = ReIDModel(net, Preprocessing(size=(SIDE, SIDE)), name="paw-test")
    # the last block is not listed: its patch tokens never reach the descriptor
    assert block_layers(reid) == [f"backbone.blocks.{i}" for i in range(2)]
    seed = torch.rand(before.shape, generator=torch.Generator().manual_seed(3))
    res = _both_engines(reid, x, "backbone.blocks.1", torch.tensor([[[0, 0], [5, 2]],
                                                                   [[7, 7], [1, 3]]]), seed)
    assert float(res["zennit"]["layer"].abs().max()) > 0
    for key in ("layer", "x", "pix"):
        _close(res["gradient"][key], res["zennit"][key], 1e-4)
    with pytest.raises(LayerError, match="pools its class"):
        PairX(reid, ["backbone.blocks.2"], allow_untrained=True)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8)
    r = PairX(reid, ["backbone.blocks.1"], n_pixel_maps=1, allow_untrained=True).explain_layers(
        a, np.roll(a, 8, axis=1))["backbone.blocks.1"]
    assert r.relevance_a.shape == (8, 8) and len(r.matches) > 0
