"""timm Swin Transformers (MegaDescriptor): the CP-LRP canonizer (:mod:`pairx.lrp.swin`)."""

from __future__ import annotations

import timm
import torch
from tests.lrp.test_gradient_engine import _both_engines, _close
from tests.lrp.test_vit import _zero_biases, assert_canonizer_exact, conservation_ratio
from torch import nn

from pairx.lrp.families import detect_family
from pairx.models.adapter import Preprocessing, ReIDModel

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
