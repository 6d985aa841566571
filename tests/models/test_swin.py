"""timm Swin Transformers (MegaDescriptor): channels-last layers, PAIR-X, loaders (the CP-LRP
canonizer: tests/lrp/test_swin.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.lrp.test_swin import SIDE, tiny_swin

from pairx.core.errors import LayerError, ModelError
from pairx.explainers.pairx import PairX
from pairx.lrp.zennit_engine import lrp_mode, similarity_relevance
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.layer_choice import block_layers
from pairx.models.layers import capture_layers, require_spatial_output
from pairx.models.loaders import load_model


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
