"""Replacement modules that canonizers swap in, each computing one operation with one LRP rule.

* :class:`CanonicalGeM`: GeM pooling as :class:`~pairx.models.graph_ops.Power` (pass) ->
  :class:`GeMMean` (``Norm``) -> ``Power`` (pass), which splits a channel's relevance in
  proportion to ``x ** p``;
* :class:`DetachedLayerNorm`: LayerNorm with a detached standard deviation (linear in its input,
  rule ``Epsilon``);
* :func:`merge_conv_bn`: a convolution with the BatchNorm that follows it folded in.

Numerically each is the module it replaces; the rules themselves are assigned by the engines
(:mod:`pairx.lrp.zennit_engine`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from pairx.core.errors import CanonizerError
from pairx.models.graph_ops import Power

__all__ = ["CanonicalGeM", "DetachedLayerNorm", "GeMMean", "merge_conv_bn"]


class GeMMean(nn.AdaptiveAvgPool2d):
    """Global average of ``x ** p`` inside :class:`CanonicalGeM` (rule: ``Norm`` with a tiny
    stabilizer, since ``x ** p >= eps ** p > 0`` can legitimately be far below ``1e-6``)."""

    def __init__(self) -> None:
        super().__init__(1)


class CanonicalGeM(nn.Module):
    """GeM pooling as power -> average pool -> root, so each step has an LRP rule.

    ``(B, C, h, w) -> (B, C)``; numerically the same as the original GeM.
    """

    def __init__(self, gem: nn.Module) -> None:
        super().__init__()
        p: Any = gem.p
        p_value = p.detach().reshape(-1)[0] if isinstance(p, torch.Tensor) else float(p)
        self.power = Power(p_value, eps=float(getattr(gem, "eps", 1e-6)))
        self.pool = GeMMean()
        self.root = Power(1.0 / p_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w) -> (B, C)``."""
        return self.root(self.pool(self.power(x))).flatten(1)


class DetachedLayerNorm(nn.Module):
    """LayerNorm whose standard deviation is treated as a constant (LRP rule: ``Epsilon``).

    Parameters
    ----------
    norm
        The original ``nn.LayerNorm`` (its parameters are shared, not copied).
    channel_dim
        Dimension normalised over: ``1`` for ``(B, C, h, w)`` (timm ``LayerNorm2d``), ``-1`` for
        channels-last inputs.
    """

    def __init__(self, norm: nn.LayerNorm, channel_dim: int) -> None:
        super().__init__()
        self.weight = norm.weight
        self.bias = norm.bias
        self.eps = norm.eps
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same shape in and out."""
        mean = x.mean(dim=self.channel_dim, keepdim=True)
        centred = x - mean
        var = centred.pow(2).mean(dim=self.channel_dim, keepdim=True)
        y = centred / (var + self.eps).sqrt().detach()
        shape = [1] * x.dim()
        shape[self.channel_dim] = -1
        if self.weight is not None:
            y = y * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y


def merge_conv_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Conv2d:
    """A new convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode (running statistics).

    Parameters
    ----------
    conv
        ``Conv2d`` with ``C_out`` output channels (timm ``Conv2dSame`` keeps its padding logic
        because the module is deep-copied).
    bn
        ``BatchNorm2d`` over ``C_out`` channels.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise CanonizerError(
            f"cannot merge {type(bn).__name__} without running statistics into its convolution"
        )
    merged = copy.deepcopy(conv)
    with torch.no_grad():
        scale = (bn.running_var + bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        weight = conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        bias = (bias - bn.running_mean) * scale
        if bn.bias is not None:
            bias = bias + bn.bias
        merged.weight = nn.Parameter(weight, requires_grad=False)
        merged.bias = nn.Parameter(bias, requires_grad=False)
    return merged
