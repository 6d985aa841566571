"""Models exported by the tests themselves (no downloads) and helpers shared by the ONNX tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'pairx[onnx]')")
pytest.importorskip("onnx2torch", reason="the onnx extra is not installed")

from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.onnx import export_onnx


def prepare(net: nn.Module, side: int, *, zero_bias: bool = False, seed: int = 0) -> nn.Module:
    """Trained-looking, well-conditioned statistics: random BatchNorm statistics with damped
    residual branches (as in the canonizer tests), then the ``BatchNorm1d`` neck calibrated on
    smooth noise so that embeddings differ between images (cosine well below 1). With
    ``zero_bias`` every bias, shift and running mean is zero (for conservation)."""
    from pairx.models.onnx.verify import probe_batch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_var is not None and m.running_mean is not None
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.5 + 0.5)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
        for m in net.modules():
            if getattr(m, "has_skip", False):
                (m.bn3 if hasattr(m, "bn3") else m.bn2).weight.mul_(0.2)
        net.eval()
        necks = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
        for neck in necks:
            neck.reset_running_stats()
            neck.momentum = None
            neck.train()
        for i in range(3):
            net(probe_batch((side, side), n=8, seed=100 + i))
        for m in net.modules():
            if zero_bias and isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)):
                if m.bias is not None:
                    m.bias.zero_()
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.zero_()  # type: ignore[union-attr]
    return net.eval()


def export(model: ReIDModel, folder: Path, name: str, **kwargs: object) -> Path:
    return export_onnx(model, folder / f"{name}.onnx", **kwargs)  # type: ignore[arg-type]


def pair_images() -> tuple[np.ndarray, np.ndarray]:
    """Two test images: a texture, and a shifted copy half blended with another texture (so
    that even a random network's cosine stays well below 1, where relevance is well defined)."""
    from PIL import Image

    rng = np.random.default_rng(0)

    def texture() -> np.ndarray:
        base = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
        return np.asarray(Image.fromarray(base).resize((112, 112), Image.Resampling.BICUBIC))

    a, other = texture(), texture()
    b = (0.5 * np.roll(a, shift=(5, -7), axis=(0, 1)) + 0.5 * other).astype(np.uint8)
    return a, b


def reidnet_model(backbone: str, side: int, *, zero_bias: bool = False) -> ReIDModel:
    from pairx.models.architectures import ReIDNet

    torch.manual_seed(0)
    net = prepare(ReIDNet(backbone), side, zero_bias=zero_bias)
    return ReIDModel(net, Preprocessing(size=(side, side)), name=f"timm:{backbone}")


def torchvision_model(side: int, *, zero_bias: bool = False) -> ReIDModel:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    net.fc = nn.BatchNorm1d(512)
    prepare(net, side, zero_bias=zero_bias)
    return ReIDModel(net, Preprocessing(size=(side, side)), name="torchvision:resnet18",
                     family="torchvision_resnet", metadata={"neck": "batchnorm"})


@pytest.fixture(scope="session")
def default_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped default model, exported with the TorchScript exporter (batch fixed to 1)."""
    import pairx

    return export(pairx.load_model("default"), tmp_path_factory.mktemp("onnx"), "default")
