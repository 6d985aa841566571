"""timm Swin Transformers (MegaDescriptor): CP-LRP canonizer, channels-last layers, loaders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from tests.lrp.test_gradient_engine import _both_engines, _close
from tests.models.test_vit import _zero_biases, assert_canonizer_exact, conservation_ratio
from torch import nn

from pairx.core.errors import LayerError, ModelError
from pairx.explainers.pairx import PairX
from pairx.lrp.families import detect_family
from pairx.lrp.zennit_engine import lrp_mode, similarity_relevance
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.layer_choice import block_layers
from pairx.models.layers import capture_layers, require_spatial_output
from pairx.models.loaders import load_model

SIDE = 64


def tiny_swin(seed: int = 0, side: int = SIDE) -> nn.Module:
    """Two stages of two blocks (the second of each shifted), 4 x 4 windows on a 16 x 16 and an
    8 x 8 grid, random weights."""
    torch.manual_seed(seed)
    return timm.create_model("swin_tiny_patch4_window7_224", img_size=side, window_size=4,
                             embed_dim=24, depths=(2, 2), num_heads=(2, 4),
                             num_classes=0).eval()


def test_canonized_output_unchanged_and_undone_bit_exactly() -> None:
    net = tiny_swin()
    assert detect_family(net) == "timm_swin"
    assert_canonizer_exact(net, torch.randn(2, 3, SIDE, SIDE))


def test_bias_free_swin_conserves_relevance() -> None:
    # shifted windows (masks) and patch merging included; biases and the relative-position
    # bias are in the attention weights only, which are constants
    net = _zero_biases(tiny_swin(seed=1))
    x = torch.randn(2, 3, SIDE, SIDE)
    ratio, _ = conservation_ratio(net, x)
    assert torch.all((ratio - 1).abs() < 1e-4), ratio
    # the real biases absorb relevance: the ratio moves away from 1
    net = tiny_swin(seed=1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.normal_(0, 0.5)
    ratio, _ = conservation_ratio(net, x)
    assert float((ratio - 1).abs().max()) > 1e-3


def test_engines_agree_on_swin() -> None:
    net = tiny_swin(seed=2)
    model = ReIDModel(net, Preprocessing(size=(SIDE, SIDE)), name="swin-test")
    x = torch.randn(2, 3, SIDE, SIDE)
    positions = torch.tensor([[[0, 0], [7, 5]], [[3, 1], [6, 6]]])
    # a positive seed: seeded with the output itself, whose channels sum to about zero after
    # the final LayerNorm, the relevances cancel so much that float32 rounding differs at 2e-4
    seed = torch.rand(2, 48, generator=torch.Generator().manual_seed(5))
    res = _both_engines(model, x, "layers.1.blocks.1", positions, seed)
    z, g = res["zennit"], res["gradient"]
    assert torch.equal(z["out"], g["out"])
    assert z["layer"].shape == (2, 48, 8, 8)
    for key in ("layer", "x", "pix"):
        _close(g[key], z[key], 1e-4)


def test_channels_last_layers_and_pairx_against_raw_outputs() -> None:
    net = tiny_swin(seed=3)
    model = ReIDModel(net, Preprocessing(size=(SIDE, SIDE)), name="swin-test")
    assert block_layers(model) == ["layers.0.blocks.0", "layers.0.blocks.1",
                                   "layers.1.blocks.0", "layers.1.blocks.1"]
    layer = "layers.1.blocks.0"
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8)
    b = np.roll(a, shift=(8, 8), axis=(0, 1))
    result = PairX(model, [layer], n_matches=4, n_pixel_maps=2,
                   allow_untrained=True).explain_layers(a, b)[layer]
    assert result.relevance_a.shape == (8, 8)
    xa, xb = model.to_input(a), model.to_input(b)
    with lrp_mode(model) as canon, torch.no_grad():
        ea, eb = canon(xa), canon(xb)
    _, r_a, _ = similarity_relevance(ea, eb)
    seen: dict[str, torch.Tensor] = {}
    with lrp_mode(model) as canon:
        handle = net.get_submodule(layer).register_forward_hook(
            lambda _m, _i, o: seen.setdefault("t", o))
        try:
            xr = xa.clone().requires_grad_(True)
            with torch.enable_grad():
                out = canon(xr)
        finally:
            handle.remove()
        raw = seen["t"]  # (1, h, w, C), channels last
        assert raw.shape == (1, 8, 8, 48)
        (rel,) = torch.autograd.grad(out, raw, grad_outputs=r_a, retain_graph=True)
        want = rel[0].abs().sum(-1).numpy()
        np.testing.assert_allclose(result.relevance_a, want, rtol=1e-4, atol=1e-6 * want.max())
        col, row = (int(v) for v in result.matches.grid_a[0])
        seed = torch.zeros_like(raw)
        seed[0, row, col] = raw.detach()[0, row, col]
        (g,) = torch.autograd.grad(raw, xr, grad_outputs=seed)
        pix = g[0].sum(0).abs().numpy()
        np.testing.assert_allclose(result.pixel_relevance_a[0], pix, rtol=1e-4,
                                   atol=1e-6 * pix.max())
    with capture_layers(model, ["layers.1.blocks.0.attn.qkv"]) as found, torch.no_grad():
        net(xa)
    with pytest.raises(LayerError, match="stage outputs"):
        require_spatial_output("layers.1.blocks.0.attn.qkv", found["layers.1.blocks.0.attn.qkv"],
                               model)


def test_megadescriptor_from_a_hugging_face_cache_folder(tmp_path: Path) -> None:
    """MegaDescriptor-T-224's architecture from a cache folder the test writes itself."""
    source = load_model("timm:swin_tiny_patch4_window7_224")
    repo = tmp_path / "hub" / "models--BVRA--MegaDescriptor-T-224"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    state = {k: v.half() for k, v in source.net.state_dict().items()}
    state["head.fc.weight"] = torch.zeros(5, 768, dtype=torch.float16)  # a classifier: dropped
    torch.save(state, snap / "pytorch_model.bin")
    (snap / "config.json").write_text(json.dumps(
        {"architecture": "swin_tiny_patch4_window7_224", "num_classes": 0,
         "pretrained_cfg": {"mean": [0.4, 0.4, 0.4], "std": [0.3, 0.3, 0.3]}}))
    model = load_model("megadescriptor:T-224", weights=tmp_path / "hub")
    assert model.family == "timm_swin" and model.name == "megadescriptor:T-224"
    assert model.preprocessing.size == (224, 224) and model.preprocessing.mean == (0.4,) * 3
    assert model.metadata["normalisation_source"] == "config.json"
    expected = {k: v.half().float() for k, v in source.net.state_dict().items()}
    got = model.net.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items() if v.is_floating_point())
    with pytest.raises(ModelError, match="unknown MegaDescriptor variant"):
        load_model("megadescriptor:XL-999", weights=tmp_path / "hub")
    with pytest.raises(ModelError, match="no MegaDescriptor-L-384 weight file"):
        load_model("megadescriptor", weights=tmp_path / "hub")
    wrong = tmp_path / "wrong.pt"
    torch.save({"layers.0.blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ModelError, match="do not match"):
        load_model("megadescriptor:T-224", weights=wrong)
