"""The modified-gradient LRP engine against zennit's (the reference) and a float64 oracle."""

from __future__ import annotations

import pytest
import torch
from tests.lrp.test_canonizers import FAMILIES, _prepare
from tests.lrp.test_zennit_engine import _net, _oracle
from torch import nn

from pairx.core.errors import ModelError
from pairx.lrp.gradient_engine import (
    gradient_lrp_mode,
    layer_relevance,
    position_pixel_relevance,
)
from pairx.lrp.zennit_engine import capture_layers, input_relevance, lrp_mode, pixel_relevance
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.architectures import ReIDNet

# the layer each family is explained at (a spatial block in the middle of the network)
LAYERS = {
    "tv_resnet18": "layer2",
    "resnet10t": "backbone.layer2",
    "efficientnet_b0": "backbone.blocks.3",
    "efficientnetv2_rw_m": "backbone.blocks.3",
    "convnext_atto": "backbone.stages.1",
}


def _both_engines(
    model: ReIDModel | nn.Module, x: torch.Tensor, layer: str, positions: torch.Tensor,
    seed: torch.Tensor | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Output, layer and input relevance (seeded with ``seed``, default the output) and pixel
    maps per engine."""
    results: dict[str, dict[str, torch.Tensor]] = {}
    for engine, mode in (("zennit", lrp_mode), ("gradient", gradient_lrp_mode)):
        with mode(model) as net:
            xr = x.clone().requires_grad_(True)
            with capture_layers(model, [layer]) as found, torch.enable_grad():
                out = net(xr)
            act = found[layer]
            r_out = out.detach() if seed is None else seed
            if engine == "zennit":
                rel_layer, rel_x = torch.autograd.grad(out, [act, xr], grad_outputs=r_out,
                                                       retain_graph=True)
                pix = pixel_relevance(act, xr, positions, chunk=1)
            else:
                got = layer_relevance(out, r_out, [act, xr])
                assert got[0] is not None and got[1] is not None
                rel_layer, rel_x = got[0], got[1]
                pix = position_pixel_relevance(act, xr, positions)
        results[engine] = {"out": out.detach(), "layer": rel_layer, "x": rel_x, "pix": pix}
    return results


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> None:
    scale = float(b.abs().max())
    assert scale > 0
    assert float((a - b).abs().max()) <= rtol * scale


@pytest.mark.parametrize(("name", "build", "side", "family", "tol"), FAMILIES,
                         ids=[f[0] for f in FAMILIES])
def test_gradient_engine_equals_zennit_per_family(
    name: str, build: object, side: int, family: str, tol: float
) -> None:
    torch.manual_seed(1)
    net = _prepare(build(), zero_bias=False)  # type: ignore[operator]
    model = ReIDModel(net, Preprocessing(size=(side, side)), name=name)
    x = torch.randn(2, 3, side, side)
    positions = torch.tensor([[[0, 0], [1, 2]], [[2, 1], [3, 3]]])
    res = _both_engines(model, x, LAYERS[name], positions)
    z, g = res["zennit"], res["gradient"]
    assert torch.equal(z["out"], g["out"])  # outputs keep their exact values
    for key in ("layer", "x", "pix"):
        _close(g[key], z[key], 1e-4)


def test_dead_channels_carry_zennit_relevance() -> None:
    """A GeM channel that is zero everywhere gets relevance from the BatchNorm neck in zennit's
    pass-through rules; the carrier convention must reproduce it (plain ``R / a`` cannot)."""
    net = _prepare(ReIDNet("resnet10t"), zero_bias=False)
    with torch.no_grad():  # kill a few channels of the last block's output
        net.backbone.layer4[0].bn2.bias[:8] = -100.0
        net.backbone.layer4[0].downsample[2].bias[:8] = -100.0
    model = ReIDModel(net, Preprocessing(size=(64, 64)), name="dead")
    x = torch.randn(1, 3, 64, 64)
    res = _both_engines(model, x, "backbone.layer3", torch.tensor([[[0, 0]]]))
    assert float(res["zennit"]["layer"].abs().sum()) > 0
    for key in ("layer", "x"):
        _close(res["gradient"][key], res["zennit"][key], 1e-4)


def test_gradient_engine_matches_float64_oracle() -> None:
    net = _net()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    r_out = torch.rand(1, 5, dtype=torch.float64)
    with gradient_lrp_mode(net) as hooked:
        xr = x.clone().requires_grad_(True)
        with torch.enable_grad():
            out = hooked(xr)
        (rel,) = layer_relevance(out, r_out, [xr])
    assert rel is not None
    torch.testing.assert_close(rel[0], _oracle(net, x[0], r_out[0]), rtol=1e-9, atol=1e-12)
    zennit_rel, _ = input_relevance(net, x, r_out)
    torch.testing.assert_close(rel, zennit_rel, rtol=1e-9, atol=1e-12)


def test_model_restored_after_error() -> None:
    net = ReIDNet("efficientnet_b0").eval()
    acts = [m for m in net.modules() if getattr(m, "inplace", None) is True]
    assert acts, "efficientnet_b0 should have in-place activations"
    before = {k: v.clone() for k, v in net.state_dict().items()}
    n_hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())
    with pytest.raises(RuntimeError, match="boom"), gradient_lrp_mode(net) as hooked:
        assert all(m.inplace is False for m in acts)
        hooked(torch.randn(1, 3, 64, 64))
        raise RuntimeError("boom")
    assert all(m.inplace is True for m in acts)
    after = net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()) == n_hooks
    assert all(p.requires_grad for p in net.parameters())


def test_unsupported_rule_is_a_clear_error() -> None:
    net = nn.Sequential(nn.ConvTranspose2d(3, 3, 3), nn.Flatten(), nn.Linear(3 * 10 * 10, 4))
    with pytest.raises(ModelError, match="ConvTranspose2d"), gradient_lrp_mode(net):
        pass
