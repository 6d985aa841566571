"""MiewID-style embedding networks: a timm backbone, GeM pooling and a BatchNorm neck.

The structure is exactly that of MiewID and of the golden ``efficientnet_b0`` model: attribute
names ``backbone``, ``global_pool`` and ``bn``, and ``forward(x) = bn(global_pool(backbone(x)))``,
so state dicts are interchangeable and layer names read ``"backbone.layer2"`` etc.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pairx.core.errors import InputError, ModelError

__all__ = ["GeM", "ReIDNet", "gem"]


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling over the whole spatial map.

    Parameters
    ----------
    x
        ``(B, C, h, w)`` feature map.
    p
        Pooling exponent (scalar tensor or float); ``p = 1`` is average pooling and
        ``p -> inf`` approaches max pooling.
    eps
        Lower clamp applied before the power, keeping the pooling defined for ``x <= 0``.

    Returns
    -------
    torch.Tensor
        ``(B, C)`` pooled descriptors ``mean(clamp(x, eps) ** p) ** (1 / p)``.
    """
    if x.dim() != 4:
        raise InputError(f"GeM expects a (B, C, h, w) feature map; got shape {tuple(x.shape)}")
    pooled = F.avg_pool2d(x.clamp(min=eps).pow(p), kernel_size=(x.shape[-2], x.shape[-1]))
    return pooled.pow(1.0 / p).flatten(1)


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable scalar exponent ``p``.

    Parameters
    ----------
    p
        Initial exponent, stored as the 1-element parameter :attr:`p`.
    eps
        Lower clamp applied before the power.

    Shape
    -----
    ``(B, C, h, w) -> (B, C)``.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        if p <= 0:
            raise InputError(f"GeM exponent p must be positive; got {p}")
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``(B, C, h, w)`` to ``(B, C)``."""
        return gem(x, self.p, self.eps)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()[0]):.4f}, eps={self.eps}"


class MaxPool2d(nn.MaxPool2d):
    """:class:`torch.nn.MaxPool2d` run in channels-last memory on the CPU.

    The same values and gradients as ``nn.MaxPool2d`` (a maximum does not round; only the
    memory layout of the computation differs) and the output in the input's layout, but about
    4x faster for the ``(B, C, H, W)`` stem activations of a ResNet, where PyTorch's
    channels-first CPU kernel is slow. :class:`ReIDNet` puts it in place of every plain
    ``nn.MaxPool2d`` of its backbone.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dim() != 4 or x.device.type != "cpu" or self.return_indices
                or x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        y = super().forward(x.contiguous(memory_format=torch.channels_last))
        return y.contiguous()


def _fast_max_pools(net: nn.Module) -> None:
    """Replace each plain ``nn.MaxPool2d`` of ``net`` by :class:`MaxPool2d` (same settings)."""
    for name, child in list(net.named_children()):
        if type(child) is nn.MaxPool2d:
            setattr(net, name, MaxPool2d(child.kernel_size, child.stride, child.padding,
                                         child.dilation, ceil_mode=child.ceil_mode))
        else:
            _fast_max_pools(child)


class ReIDNet(nn.Module):
    """timm CNN backbone + :class:`GeM` + ``BatchNorm1d`` neck (the MiewID layout).

    Parameters
    ----------
    backbone
        timm model name, e.g. ``"resnet10t"`` or ``"efficientnet_b0"``.
    pretrained
        Ask timm for pretrained weights (needs them in the local cache; pairx never downloads).
    **timm_kwargs
        Extra keyword arguments of ``timm.create_model`` (e.g. ``channels=(32, 64, 128, 256)``
        for a narrower ResNet, ``drop_path_rate=0.1``).

    Attributes
    ----------
    backbone
        ``timm.create_model(backbone, pretrained=pretrained, num_classes=0, global_pool='')``:
        maps ``(B, 3, H, W)`` to a ``(B, D, h, w)`` feature map.
    global_pool
        :class:`GeM` pooling, ``(B, D, h, w) -> (B, D)``.
    bn
        ``nn.BatchNorm1d(D)`` neck; its output is the embedding.
    backbone_name, timm_kwargs
        The construction arguments, kept so a network can be rebuilt from an export.

    Shape
    -----
    ``(B, 3, H, W) -> (B, D)`` with ``D = backbone.num_features``.
    """

    def __init__(self, backbone: str, *, pretrained: bool = False, **timm_kwargs: Any) -> None:
        super().__init__()
        import timm

        if not timm.is_model(backbone):
            close = timm.list_models(f"*{backbone.split('_')[0]}*")[:8]
            hint = f"; similar names: {', '.join(close)}" if close else ""
            raise ModelError(f"unknown timm backbone {backbone!r}{hint}")
        try:
            self.backbone = timm.create_model(
                backbone, pretrained=pretrained, num_classes=0, global_pool="", **timm_kwargs
            )
        except (RuntimeError, OSError) as exc:  # missing pretrained weights offline, bad kwargs
            raise ModelError(f"cannot create timm backbone {backbone!r}: {exc}") from exc
        _fast_max_pools(self.backbone)
        self.backbone_name = backbone
        self.timm_kwargs = dict(timm_kwargs)
        self.global_pool = GeM(p=3.0, eps=1e-6)
        self.bn = nn.BatchNorm1d(self.num_features)

    @property
    def num_features(self) -> int:
        """Embedding dimension ``D``."""
        features: int = getattr(self.backbone, "num_features")  # noqa: B009
        return int(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ``(B, 3, H, W)`` images to ``(B, D)``."""
        return self.bn(self.global_pool(self.backbone(x)))
