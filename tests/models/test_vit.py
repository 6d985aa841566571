"""timm Vision Transformers: token layers on the patch grid, the loader (the CP-LRP canonizer:
tests/lrp/test_vit.py)."""

from __future__ import annotations

import pytest
import torch
from tests.lrp.test_vit import SIDE, tiny_vit

from pairx.core.errors import LayerError, ModelError
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.layers import candidate_layers, capture_layers, require_spatial_output
from pairx.models.loaders import load_model


def test_token_layers_are_listed_on_the_patch_grid_and_captured() -> None:
    net = tiny_vit(reg_tokens=2)
    model = ReIDModel(net, Preprocessing(size=(SIDE, SIDE)))
    infos = {i.name: i for i in candidate_layers(model)}
    assert infos["blocks.1"].grid == (4, 4) and infos["blocks.1"].channels == 48
    assert infos["patch_embed.proj"].grid == (4, 4)
    assert not any(".q_norm" in n or ".attn_drop" in n for n in infos)  # (B, heads, N, d)
    x = torch.randn(1, 3, SIDE, SIDE)
    raw: dict[str, torch.Tensor] = {}
    handle = net.blocks[1].register_forward_hook(lambda _m, _i, o: raw.setdefault("t", o))
    try:
        with capture_layers(model, ["blocks.1"]) as found, torch.no_grad():
            out = net(x)
    finally:
        handle.remove()
    with torch.no_grad():
        assert torch.equal(out, net(x))  # capturing changes nothing
    tokens = raw["t"][0, 3:]  # class + 2 register tokens first, then the grid row by row
    grid = found["blocks.1"][0]
    assert grid.shape == (48, 4, 4)
    assert torch.equal(grid[:, 1, 2], tokens[1 * 4 + 2])


def test_layer_inside_attention_is_a_clear_error() -> None:
    net = tiny_vit(qk_norm=True)
    model = ReIDModel(net, Preprocessing(size=(SIDE, SIDE)))
    with capture_layers(model, ["blocks.0.attn.q_norm"]) as found, torch.no_grad():
        net(torch.randn(1, 3, SIDE, SIDE))
    with pytest.raises(LayerError, match="patch grid"):
        require_spatial_output("blocks.0.attn.q_norm", found["blocks.0.attn.q_norm"], model)


def test_timm_vit_loader_with_local_weights(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "vit.pt"
    model = load_model("timm:vit_tiny_patch16_224", size=64)
    assert model.family == "timm_vit" and model.metadata["random_weights"] is True
    state = {k: v.clone() for k, v in model.net.state_dict().items()}
    state["head.weight"] = torch.zeros(10, 192)  # a classifier head is dropped
    torch.save(state, path)
    again = load_model("timm:vit_tiny_patch16_224", size=64, weights=path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again.net(x), model.net(x))
    bigger = load_model("timm:vit_tiny_patch16_224", size=96, weights=path)
    assert bigger.metadata["pos_embed_resampled_from"] == [4, 4]
    assert bigger.embed(torch.randn(1, 3, 96, 96)).shape == (1, 192)
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ModelError, match="do not match"):
        load_model("timm:vit_tiny_patch16_224", size=64, weights=path)
    with pytest.raises(ModelError, match="Swin Transformer V2"):
        load_model("timm:swinv2_tiny_window8_256")
