"""The generic route on hand-built graphs: canonization, conservation, engines, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zennit.layer import Sum

from pairx.core.errors import ModelError
from pairx.lrp.families import canonizer_for
from pairx.lrp.zennit_engine import input_relevance
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.graph_ops import (
    Clamp,
    GatedProduct,
    GraphGeMMean,
    Power,
    register_graph_rule,
)
from pairx.models.onnx import load_onnx

from .conftest import export, prepare


class TinyNet(nn.Module):
    """Conv, BN, SiLU spelled ``x * sigmoid(x)``, a squeeze-excitation gate, a residual add and
    GeM spelled as clamp, power, average, root: the patterns the generic route rewrites."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.se_reduce = nn.Conv2d(8, 4, 1)
        self.se_expand = nn.Conv2d(4, 8, 1)
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn3 = nn.BatchNorm1d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn1(self.conv1(x))
        h = h * torch.sigmoid(h)
        y = self.bn2(self.conv2(h))
        gate = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        y = y * gate
        y = F.relu(self.conv3(y + h))
        pooled = F.avg_pool2d(y.clamp(min=1e-6).pow(3.0), (y.size(-2), y.size(-1))).pow(1 / 3)
        return self.bn3(pooled.flatten(1))


class SoftmaxPool(nn.Module):
    """Attention pooling with a spatial softmax: no sound LRP rule in pairx."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.attn = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        w = torch.softmax(self.attn(h).flatten(2), dim=-1)
        return (h.flatten(2) * w).sum(-1)


class Warped(nn.Module):
    """A fixed ``grid_sample`` warp, an operator onnx2torch cannot convert."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        theta = torch.tensor([[[0.9, 0.1, 0.0], [-0.1, 0.9, 0.0]]])
        self.register_buffer("grid", F.affine_grid(theta, [1, 3, 32, 32], align_corners=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warped = F.grid_sample(x, self.grid, align_corners=False)  # type: ignore[arg-type]
        return self.conv(warped).mean((2, 3))


def _tiny(zero_bias: bool) -> ReIDModel:
    torch.manual_seed(0)
    return ReIDModel(prepare(TinyNet(), 32, zero_bias=zero_bias), Preprocessing(size=(32, 32)),
                     name="tiny")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(_tiny(zero_bias=True), tmp_path_factory.mktemp("generic"), "tiny")


def test_patterns_are_rewritten_and_verified(tiny_onnx: Path) -> None:
    model = load_onnx(tiny_onnx)  # auto: no known architecture, so the generic route
    assert model.metadata["route"] == "generic" and model.family == "onnx_graph"
    assert model.metadata["native_mismatch"]  # it says why no native architecture matched
    kinds = [type(m) for m in model.net.modules()]
    for expected in (nn.SiLU, Sum, GatedProduct, GraphGeMMean, Power, Clamp):
        assert expected in kinds, expected
    x = torch.randn(2, 3, 32, 32)
    native = _tiny(zero_bias=True)
    with torch.no_grad():
        torch.testing.assert_close(model.net(x), native.net(x), atol=1e-5, rtol=1e-4)


def test_conservation_and_engines(tiny_onnx: Path) -> None:
    from pairx.lrp.gradient_engine import gradient_lrp_mode, layer_relevance

    model = load_onnx(tiny_onnx)
    torch.manual_seed(3)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        r_out = torch.rand_like(model.net(x))
    rel, _ = input_relevance(model, x, r_out, epsilon=1e-9, stabilizer=1e-9)
    ratio = float(rel.sum() / r_out.sum())
    print(f"tiny generic graph: conservation {ratio:.6f}")
    assert abs(ratio - 1) < 1e-3  # the same tolerance as the native residual families
    # both LRP engines (zennit's rule hooks above, pairx's modified gradients here) agree
    xg = x.clone().requires_grad_(True)
    with gradient_lrp_mode(model, epsilon=1e-9, stabilizer=1e-9) as net:
        out = net(xg)
        (grad_rel,) = layer_relevance(out, r_out, [xg])
    assert grad_rel is not None
    torch.testing.assert_close(grad_rel, rel, atol=1e-6 * float(rel.abs().max()), rtol=1e-4)


def test_canonizer_keeps_the_output_and_is_undone_exactly(tiny_onnx: Path) -> None:
    model = load_onnx(tiny_onnx)
    net = model.net
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    structure = [(n, id(m), dict(vars(m).get("__dict__", {}))) for n, m in net.named_modules()]
    gates = [m for m in net.modules() if isinstance(m, GatedProduct)]
    canonizer = canonizer_for(model)
    with canonizer.applied(net), torch.no_grad():
        assert all(g.signal_only for g in gates)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # folded
        torch.testing.assert_close(net(x), before, atol=1e-5, rtol=1e-5)
    assert not any(g.signal_only for g in gates)
    assert [(n, id(m), dict(vars(m).get("__dict__", {}))) for n, m in net.named_modules()] == (
        structure)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(net(x), before)


def test_an_operator_without_a_rule_is_refused_with_its_node(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = export(ReIDModel(SoftmaxPool().eval(), Preprocessing(size=(32, 32))), tmp_path, "sm")
    with pytest.raises(ModelError, match=r"node '.*' \(.*\) has no LRP rule.*register_graph_rule"):
        load_onnx(path)
    with pytest.raises(ModelError, match="not an architecture pairx knows natively"):
        load_onnx(path, route="native")
    with pytest.raises(ValueError, match="unknown rule"):
        register_graph_rule(nn.Softmax, "magic")


def test_an_operator_the_converter_lacks_is_named(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = export(ReIDModel(Warped().eval(), Preprocessing(size=(32, 32))), tmp_path, "warp")
    with pytest.raises(ModelError, match=r"onnx2torch cannot convert it.*GridSample"):
        load_onnx(path)
