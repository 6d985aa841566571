"""Cone-restricted pixel maps against the dense backward pass (the oracle)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.lrp.test_canonizers import FAMILIES, _prepare
from tests.lrp.test_gradient_engine import LAYERS
from torch import nn

from pairx.core.errors import ModelError
from pairx.lrp import gradient_engine as gradient_lrp
from pairx.lrp.cone import ConePlan, ConeUnsupported
from pairx.lrp.convention import carrier
from pairx.lrp.gradient_engine import gradient_lrp_mode, position_pixel_relevance
from pairx.lrp.zennit_engine import capture_layers
from pairx.models.adapter import Preprocessing, ReIDModel


def _graph(model: ReIDModel, x: torch.Tensor, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    xr = x.clone().requires_grad_(True)
    with capture_layers(model, [layer]) as found, torch.enable_grad():
        model.net(xr)
    return found[layer], xr


def _positions(h: int, w: int) -> torch.Tensor:
    """Corners, centre and an off-centre point; item 1 takes other positions than item 0."""
    a = [[0, 0], [w - 1, h - 1], [w // 2, h // 2], [w - 1, 0], [0, h - 1]]
    b = [[w - 1, h - 1], [1, min(2, h - 1)], [0, 0], [w // 2, 0], [w - 1, h // 2]]
    return torch.tensor([list(p) for p in zip(a, b, strict=True)])


def _assert_same(cone: torch.Tensor, dense: torch.Tensor, rtol: float = 1e-5) -> None:
    assert cone.shape == dense.shape
    scale = float(dense.abs().max())
    assert scale > 0
    assert float((cone - dense).abs().max()) <= rtol * scale


def _check_against_dense(act: torch.Tensor, xr: torch.Tensor) -> torch.Tensor:
    """Cone maps, one replay per map and all maps in one batched replay (the GPU default,
    windows shared by all maps), both equal to the dense pass; returns the cone maps."""
    positions = _positions(*act.shape[-2:])
    dense = position_pixel_relevance(act, xr, positions, method="dense")
    cone = position_pixel_relevance(act, xr, positions, method="cone")
    batched = ConePlan(act, xr).run(act.detach() / carrier(act), positions, carrier(xr),
                                    batch=positions.shape[0] * positions.shape[1])
    _assert_same(cone, dense)
    _assert_same(batched, dense)
    return cone


@pytest.mark.parametrize(("name", "build", "side", "family", "tol"), FAMILIES,
                         ids=[f[0] for f in FAMILIES])
def test_cone_equals_dense_per_family(
    name: str, build: object, side: int, family: str, tol: float
) -> None:
    torch.manual_seed(2)
    net = _prepare(build(), zero_bias=False)  # type: ignore[operator]
    model = ReIDModel(net, Preprocessing(size=(side + 32, side + 32)), name=name)
    x = torch.randn(2, 3, side + 32, side + 32)
    with gradient_lrp_mode(model):
        act, xr = _graph(model, x, LAYERS[name])
        _check_against_dense(act, xr)
    # the plan replays the family's whole graph below the layer, ending at the input
    plan = ConePlan(act, xr)
    assert len(plan.order) > 10 and plan.order[-1] is plan.target


class _Mixed(nn.Module):
    """Stride 2 with padding, dilated depthwise and grouped convolutions, asymmetric padding,
    max and average pooling and a residual add (SE gates: the EfficientNet families)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.grouped = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.avg = nn.AvgPool2d(2, stride=1)
        self.out = nn.Conv2d(8, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(torch.relu(self.stem(x)))
        y = y + torch.relu(self.dw(y))
        y = torch.relu(self.grouped(F.pad(y, (0, 1, 1, 0))))
        return self.out(self.avg(y))


def test_cone_equals_dense_on_every_node_kind() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(_Mixed(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    model = ReIDModel(net, Preprocessing(size=(61, 67)), name="mixed")
    x = torch.randn(2, 3, 61, 67)
    with gradient_lrp_mode(model, family="generic"):
        act, xr = _graph(model, x, "0.out")
        cone = _check_against_dense(act, xr)
    # a corner map is zero outside its receptive field, which the cone replay never touches
    assert float(cone[0, 0, 40:, 40:].abs().max()) == 0.0


class _Upsampling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(torch.relu(self.conv(x)), scale_factor=0.5, mode="bilinear")
        return self.head(y)


def test_unsupported_graph_falls_back_to_dense_or_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[int] = []

    def counting(*args: object) -> ConePlan:
        built.append(1)
        return ConePlan(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(gradient_lrp, "ConePlan", counting)
    torch.manual_seed(0)
    net = nn.Sequential(_Upsampling(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    model = ReIDModel(net, Preprocessing(size=(32, 32)), name="upsampling")
    x = torch.randn(1, 3, 32, 32)
    positions = torch.tensor([[[3, 4]], [[0, 0]]])
    with gradient_lrp_mode(model, family="generic"):
        act, xr = _graph(model, x, "0.head")
        with pytest.raises(ConeUnsupported, match="UpsampleBilinear2D"):
            ConePlan(act, xr)
        with pytest.raises(ModelError, match="no cone-restricted pixel maps"):
            position_pixel_relevance(act, xr, positions, method="cone")
        dense = position_pixel_relevance(act, xr, positions, method="dense")
        with pytest.warns(UserWarning, match="dense backward pass"):
            auto = position_pixel_relevance(act, xr, positions)
    assert torch.equal(auto, dense)
    assert len(built) == 1  # the graph was walked once; its reason is kept with it


def test_bad_method_is_refused() -> None:
    with pytest.raises(ValueError, match="method must be"):
        position_pixel_relevance(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3, 4, 4),
                                 torch.zeros(1, 1, 2, dtype=torch.long), method="sparse")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_batched_cone_equals_cpu_dense() -> None:
    """On a GPU all maps of an image run as one batched replay; the maps equal the CPU's."""
    name, build, side = FAMILIES[2][:3]  # efficientnet_b0: stride 2, depthwise, SE gates
    torch.manual_seed(3)
    net = _prepare(build(), zero_bias=False)  # type: ignore[operator]
    model = ReIDModel(net, Preprocessing(size=(side, side)), name=name)
    x = torch.randn(1, 3, side, side)
    with gradient_lrp_mode(model):
        act, xr = _graph(model, x, LAYERS[name])
        positions = _positions(*act.shape[-2:])[:, :1]
        dense = position_pixel_relevance(act, xr, positions, method="dense")
    model.net.cuda()
    with gradient_lrp_mode(model):
        act, xr = _graph(model, x.cuda(), LAYERS[name])
        cone = position_pixel_relevance(act, xr, positions, method="cone")
    _assert_same(cone.cpu(), dense, rtol=1e-4)
