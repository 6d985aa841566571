"""GeM and ReIDNet: float64 oracle, structure contract, golden state-dict compatibility."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pairx.core.errors import InputError, ModelError
from pairx.models.architectures import GeM, MaxPool2d, ReIDNet, gem


def gem_oracle(x: torch.Tensor, p: float, eps: float) -> torch.Tensor:
    """Slow float64 GeM: explicit loops over batch and channels."""
    x = x.double()
    b, c, h, w = x.shape
    out = torch.empty(b, c, dtype=torch.float64)
    for i in range(b):
        for j in range(c):
            total = 0.0
            for r in range(h):
                for s in range(w):
                    total += max(float(x[i, j, r, s]), eps) ** p
            out[i, j] = (total / (h * w)) ** (1.0 / p)
    return out


@pytest.mark.parametrize("p", [1.0, 2.5, 3.0, 7.0])
def test_gem_matches_float64_oracle(p: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    pool = GeM(p=p).double()
    torch.testing.assert_close(pool(x), gem_oracle(x, p, 1e-6), rtol=1e-10, atol=1e-12)


def test_gem_limits_and_gradient() -> None:
    x = torch.rand(2, 4, 3, 3, dtype=torch.float64) + 0.1
    torch.testing.assert_close(gem(x, 1.0), x.mean(dim=(2, 3)))
    # large p approaches the max
    torch.testing.assert_close(gem(x, 200.0), x.amax(dim=(2, 3)), rtol=2e-2, atol=0)
    pool = GeM().double()
    assert isinstance(pool.p, nn.Parameter) and pool.p.shape == (1,)
    assert torch.autograd.gradcheck(lambda t, q: gem(t, q), (x.requires_grad_(), pool.p))


def test_gem_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        GeM()(torch.rand(2, 3))
    with pytest.raises(InputError):
        GeM(p=0.0)


def test_reidnet_structure_and_forward() -> None:
    torch.manual_seed(0)
    net = ReIDNet("resnet10t").eval()
    assert [name for name, _ in net.named_children()] == ["backbone", "global_pool", "bn"]
    assert isinstance(net.global_pool, GeM)
    assert isinstance(net.bn, nn.BatchNorm1d) and net.bn.num_features == net.num_features == 512
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = net(x)
        manual = net.bn(net.global_pool(net.backbone(x)))
    assert out.shape == (2, 512)
    torch.testing.assert_close(out, manual)
    # the backbone keeps its spatial map (num_classes=0, global_pool='')
    assert net.backbone(x).shape == (2, 512, 2, 2)
    assert net.get_submodule("backbone.layer2") is not None


def test_reidnet_passes_timm_kwargs() -> None:
    net = ReIDNet("resnet10t", channels=(16, 32, 64, 128))
    assert net.num_features == 128 and net.timm_kwargs == {"channels": (16, 32, 64, 128)}


def test_reidnet_unknown_backbone() -> None:
    with pytest.raises(ModelError, match="unknown timm backbone"):
        ReIDNet("resnet_does_not_exist")


def test_golden_efficientnet_state_dict_fits(golden_dir) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file

    state = load_file(str(golden_dir / "efficientnet_b0.model.safetensors"))
    net = ReIDNet("efficientnet_b0")
    net.load_state_dict(state, strict=True)
    assert float(net.global_pool.p.detach()) == pytest.approx(float(state["global_pool.p"]))


@pytest.mark.parametrize("shape", [(1, 3, 9, 9), (2, 32, 56, 56), (5, 16, 33, 20)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool_equals_torch_bit_for_bit(shape: tuple[int, ...], channels_last: bool) -> None:
    """The channels-last max pool: the values, gradients and layout of ``nn.MaxPool2d``."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=gen).round(decimals=1)  # ties inside windows
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for kw in ({"kernel_size": 3, "stride": 2, "padding": 1},
               {"kernel_size": 2, "stride": 2, "ceil_mode": True}):
        ours, plain = MaxPool2d(**kw), nn.MaxPool2d(**kw)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = ours(xa), plain(xb)
        assert torch.equal(ya, yb)
        assert ya.is_contiguous() == yb.is_contiguous()
        g = torch.randn(ya.shape, generator=gen)
        ga, = torch.autograd.grad(ya, xa, g)
        gb, = torch.autograd.grad(yb, xb, g)
        assert torch.equal(ga, gb)


def test_reidnet_uses_the_fast_max_pool() -> None:
    net = ReIDNet("resnet10t", channels=(8, 8, 8, 8), stem_width=8)
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    assert pools and all(type(m) is MaxPool2d for m in pools)
