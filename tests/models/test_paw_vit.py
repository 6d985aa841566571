"""PAW-ViT: tokens, ATM masks, aggregation, the inference export, and LRP on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.lrp.test_gradient_engine import _both_engines, _close
from tests.lrp.test_vit import assert_canonizer_exact

from pairx.core.errors import LayerError, ModelError
from pairx.explainers.pairx import PairX
from pairx.lrp.families import detect_family
from pairx.models.adapter import Preprocessing, ReIDModel
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
            # not a constant: the part tokens are layer-normalised, which removes one
            out[:, row] += 3.0 * torch.linspace(-1.0, 1.0, out.shape[-1])
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


def small_hybrid(seed: int = 0, *, paw: bool = True) -> torch.nn.Module:
    """A PAW-ViT (or plain ViT) whose patch embedding is the default model's stages to layer3."""
    from pairx.models.export import stem_of
    from pairx.models.paw_vit import ViTBaseline

    torch.manual_seed(seed)
    kw = {"img_size": SIDE, "embed_dim": 48, "depth": 3, "heads": 3, "drop_path_rate": 0.0,
          "stem": stem_of("default", pretrained=True)}
    net = PAWViT(identities=7, **kw).embedder if paw else ViTBaseline(7, **kw).embedder
    return net.eval()


def test_hybrid_stem_is_the_default_models_first_stages() -> None:
    from pairx.models.export import hybrid_stem
    from pairx.models.loaders import load_model

    default = load_model("default").net
    seen: list[torch.Tensor] = []
    handle = default.get_submodule("backbone.layer3").register_forward_hook(
        lambda _m, _i, out: seen.append(out))
    x = torch.randn(2, 3, SIDE, SIDE)
    try:
        with torch.no_grad():
            default(x)
    finally:
        handle.remove()
    stem = hybrid_stem("layer3").eval()
    assert stem.stride == 16 and hybrid_stem("layer2", pretrained=False).stride == 8
    with torch.no_grad():
        torch.testing.assert_close(stem(x), seen[0], atol=0, rtol=0)
    vit = small_hybrid().get_submodule("backbone")
    assert tuple(vit.patch_embed.grid_size) == (SIDE // 16, SIDE // 16)


def _bias_free(net: torch.nn.Module) -> torch.nn.Module:
    """Biases, BatchNorm shifts and running means zeroed: LRP is then exactly conservative."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm)) and (
                    m.bias is not None):
                m.bias.zero_()
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.zero_()
                m.running_mean.zero_()
    return net


@pytest.mark.parametrize("paw", [True, False], ids=["paw-vit", "vit"])
def test_lrp_on_a_hybrid_vit(paw: bool) -> None:
    net = small_hybrid(4, paw=paw)
    assert detect_family(net) == "timm_vit"  # not timm_resnet, although it holds ResNet blocks
    x = torch.randn(2, 3, SIDE, SIDE)
    before = assert_canonizer_exact(net, x)
    reid = ReIDModel(net, Preprocessing(size=(SIDE, SIDE)), name="hybrid-test")
    seed = torch.rand(before.shape, generator=torch.Generator().manual_seed(5))
    layer = "backbone.blocks.1" if paw else "blocks.1"
    res = _both_engines(reid, x, layer, torch.tensor([[[0, 0], [3, 2]], [[1, 1], [2, 3]]]), seed)
    assert float(res["zennit"]["x"].abs().max()) > 0
    for key in ("layer", "x", "pix"):
        _close(res["gradient"][key], res["zennit"][key], 1e-4)


@pytest.mark.parametrize("last", ["layer3", "layer2"])
def test_bias_free_hybrid_vit_conserves_relevance(last: str) -> None:
    import timm
    from tests.lrp.test_vit import conservation_ratio
    from timm.layers import HybridEmbed

    from pairx.models.export import hybrid_stem

    # token-average pooling, no class token: every relevance reaches the image (class and
    # part tokens are constants that keep a share)
    stem = hybrid_stem(last)
    torch.manual_seed(6)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIDE,
                            patch_size=1, embed_dim=48, depth=2, num_heads=3, num_classes=0,
                            class_token=False, global_pool="avg",
                            embed_layer=lambda **kw: HybridEmbed(stem, **kw)).eval()
    # fails (about 1 % lost) if the 1 x 1 projection keeps ZPlus: see PointwiseProjection
    ratio, _ = conservation_ratio(_bias_free(vit), torch.randn(2, 3, SIDE, SIDE))
    assert torch.all((ratio - 1).abs() < 1e-4), ratio


def test_foreign_hybrid_embeddings_are_refused() -> None:
    import timm
    from timm.layers import HybridEmbed

    from pairx.core.errors import CanonizerError
    from pairx.lrp.families import canonizer_for

    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.ReLU())
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=1,
                            embed_dim=24, depth=1, num_heads=2, num_classes=0,
                            embed_layer=lambda **kw: HybridEmbed(cnn, **kw))
    with pytest.raises(CanonizerError, match="HybridStem"):
        with canonizer_for(vit).applied(vit):
            pass


def test_the_shipped_paw_vit(tmp_path: Path) -> None:
    """``load_model("paw-vit")``: small, offline, the card's small check reproduced (rank-1 within
    0.1 on a regenerated set), its part masks drawn by ``pairx parts --model paw-vit``."""
    import json

    from typer.testing import CliRunner

    from pairx.cli.main import app
    from pairx.data.synthetic import generate
    from pairx.models.default import WEIGHTS_DIR
    from pairx.models.loaders import load_model
    from pairx.training.retrieval import evaluate_retrieval

    files = sorted(WEIGHTS_DIR.glob("paw_vit*"))
    assert {f.name for f in files} >= {"paw_vit.safetensors", "paw_vit.json",
                                       "paw_vit.parts_decoder.safetensors"}
    assert sum(f.stat().st_size for f in files) <= 30 * 2**20
    model = load_model("paw-vit")
    assert model.name == "paw-vit" and model.family == "timm_vit"
    assert model.metadata["domain"] == "pairx-synth" and model.metadata["geometry"]["stem"]
    assert model.metadata["calibration_file"] == str(WEIGHTS_DIR / "paw_vit.calibration.json")
    check = json.loads((WEIGHTS_DIR / "paw_vit.json").read_text())["small_check"]
    dataset = generate(tmp_path / "data", seed=check["seed"], individuals=check["individuals"],
                       sightings=check["sightings"], species=tuple(check["species"]),
                       size=check["image_size"], progress=False)
    scores = evaluate_retrieval(model, dataset, split=None, progress=False)
    assert scores["all"]["rank1"] == pytest.approx(check["retrieval"]["all"]["rank1"], abs=0.1)
    image = next((dataset.root / "images").rglob("*.jpg"))
    result = CliRunner().invoke(app, ["parts", str(image), "--model", "paw-vit", "-o",
                                      str(tmp_path / "parts.png")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    with pytest.raises(ModelError, match="ships its own weights"):
        load_model("paw-vit", weights=str(image))
