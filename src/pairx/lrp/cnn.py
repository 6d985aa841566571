"""Canonizers of the CNN families, registered here: torchvision/timm ResNet, timm EfficientNet,
timm ConvNeXt and the generic feed-forward CNN.

* ``BatchNorm`` after a convolution is merged into that convolution (timm ``BatchNormAct2d``
  keeps its activation, which passes relevance through): :class:`MergeBatchNorm`;
* residual additions become explicit :class:`zennit.layer.Sum` modules (rule: ``Norm``, i.e.
  relevance split in proportion to each summand);
* squeeze-excitation gates and ConvNeXt layer scales are constant multipliers: relevance flows
  through the signal branch unchanged (:func:`~pairx.lrp.convention.signal_pass`);
* ConvNeXt's ``LayerNorm`` uses a detached standard deviation (rule: ``Epsilon``).

The GeM / ``BatchNorm1d`` neck is canonized for every family by
:class:`~pairx.lrp.neck.NeckCanonizer`.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn
from zennit.layer import Sum

from pairx.lrp.canonizer import Canonizer, ComposedCanonizer
from pairx.lrp.convention import signal_pass
from pairx.lrp.families import contains, family_canonizer
from pairx.lrp.rule_modules import merge_conv_bn

__all__ = [
    "MergeBatchNorm",
    "SignalOnlyGates",
    "TimmConvNeXt",
    "TimmEfficientNetResiduals",
    "TimmResNetResiduals",
    "TorchvisionResNetResiduals",
]


def _last_conv(module: nn.Module) -> tuple[nn.Module, str] | None:
    """``(parent, name)`` of ``module`` if it is a Conv2d, or of a Sequential's last Conv2d."""
    if isinstance(module, nn.Sequential) and len(module) > 0:
        name = list(module._modules)[-1]
        if isinstance(module._modules[name], nn.Conv2d):
            return module, name
    return None


class MergeBatchNorm(Canonizer):
    """Merge every ``BatchNorm2d`` that directly follows a ``Conv2d`` (child registration order).

    timm registers a block's children in execution order (``conv_pw, bn1, conv_dw, bn2, ...``),
    so adjacency identifies the conv->BN pairs. The BN is replaced by ``Identity`` (plain BN) or
    by its dropout + activation (``BatchNormAct2d``).
    """

    def edit(self, net: nn.Module) -> None:
        for parent in list(net.modules()):
            names = list(parent._modules)
            for prev_name, name in itertools.pairwise(names):
                bn = parent._modules[name]
                prev = parent._modules[prev_name]
                if not isinstance(bn, nn.BatchNorm2d) or prev is None:
                    continue
                if isinstance(prev, nn.Conv2d):
                    conv_parent, conv_name = parent, prev_name
                else:
                    found = _last_conv(prev)
                    if found is None:
                        continue
                    conv_parent, conv_name = found
                conv = conv_parent._modules[conv_name]
                assert isinstance(conv, nn.Conv2d)
                self.swap(conv_parent, conv_name, merge_conv_bn(conv, bn))
                tail = [
                    m for m in (getattr(bn, "drop", None), getattr(bn, "act", None))
                    if m is not None
                ]
                self.swap(parent, name, nn.Sequential(*tail) if tail else nn.Identity())


def _se_types() -> tuple[type, ...]:
    out: list[type] = []
    try:
        from timm.layers.squeeze_excite import EffectiveSEModule, SEModule
        from timm.models._efficientnet_blocks import SqueezeExcite

        out += [SqueezeExcite, SEModule, EffectiveSEModule]
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    return tuple(out)


class SignalOnlyGates(Canonizer):
    """Treat squeeze-excitation gates as constants: relevance flows only through the signal."""

    def edit(self, net: nn.Module) -> None:
        se_types = _se_types()
        for parent in list(net.modules()):
            for name, child in list(parent._modules.items()):
                if child is not None and se_types and isinstance(child, se_types):
                    self.swap(parent, name, _SignalOnlySE(child))


class _SignalOnlySE(nn.Module):
    def __init__(self, se: nn.Module) -> None:
        super().__init__()
        self.__dict__["se"] = se  # not a child: its convs get no LRP hooks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = self.__dict__["se"](x.detach())
        return signal_pass(x, y)


class TimmEfficientNetResiduals(Canonizer):
    """timm EfficientNet / EfficientNetV2 / MobileNet blocks: explicit residual ``Sum``."""

    def edit(self, net: nn.Module) -> None:
        for module in list(net.modules()):
            if getattr(module, "has_skip", False) is True and hasattr(module, "drop_path"):
                self.set_attr(module, "has_skip", False)
                self.add_child(module, "pairx_sum", Sum())
                original = type(module).forward

                def forward(self: Any, x: torch.Tensor, _orig: Any = original) -> Any:
                    y = _orig(self, x)  # has_skip is False: the block without its shortcut
                    return self.pairx_sum(torch.stack([self.drop_path(y), x], dim=-1))

                self.override_forward(module, forward)


class TimmResNetResiduals(Canonizer):
    """timm ``BasicBlock`` / ``Bottleneck``: explicit residual ``Sum`` before the last ReLU."""

    def edit(self, net: nn.Module) -> None:
        from timm.models.resnet import BasicBlock, Bottleneck

        for module in list(net.modules()):
            if isinstance(module, (BasicBlock, Bottleneck)):
                self.add_child(module, "pairx_sum", Sum())
                fwd = _timm_basic_forward if isinstance(module, BasicBlock) else _timm_neck_forward
                self.override_forward(module, fwd)


def _timm_tail(self: Any, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    if self.se is not None:
        x = self.se(x)
    if self.drop_path is not None:
        x = self.drop_path(x)
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    out: torch.Tensor = self.pairx_sum(torch.stack([x, shortcut], dim=-1))
    return out


def _timm_basic_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    shortcut = x
    x = self.act1(self.drop_block(self.bn1(self.conv1(x))))
    x = self.bn2(self.conv2(self.aa(x)))
    out: torch.Tensor = self.act2(_timm_tail(self, x, shortcut))
    return out


def _timm_neck_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    shortcut = x
    x = self.act1(self.bn1(self.conv1(x)))
    x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
    x = self.bn3(self.conv3(x))
    out: torch.Tensor = self.act3(_timm_tail(self, x, shortcut))
    return out


class TimmConvNeXt(Canonizer):
    """timm ConvNeXt: detached-std LayerNorms, layer scale as constant, explicit residual Sum."""

    @property
    def handled_types(self) -> tuple[type, ...]:  # type: ignore[override]
        from timm.models.convnext import ConvNeXtBlock

        return (ConvNeXtBlock,)

    def edit(self, net: nn.Module) -> None:
        from timm.models.convnext import ConvNeXtBlock

        self.detach_layer_norms(net)
        for module in list(net.modules()):
            if isinstance(module, ConvNeXtBlock):
                self.add_child(module, "pairx_sum", Sum())
                self.override_forward(module, _convnext_forward)


def _convnext_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    shortcut = x
    x = self.conv_dw(x)
    if self.use_conv_mlp:
        x = self.mlp(self.norm(x))
    else:
        x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
    if self.gamma is not None:
        x = signal_pass(x, x.mul(self.gamma.reshape(1, -1, 1, 1)))
    out: torch.Tensor = self.pairx_sum(
        torch.stack([self.drop_path(x), self.shortcut(shortcut)], dim=-1)
    )
    return out


class TorchvisionResNetResiduals(Canonizer):
    """torchvision ``BasicBlock`` / ``Bottleneck``: explicit residual ``Sum`` before the ReLU."""

    def edit(self, net: nn.Module) -> None:
        from torchvision.models.resnet import BasicBlock, Bottleneck

        for module in list(net.modules()):
            if isinstance(module, (BasicBlock, Bottleneck)):
                self.add_child(module, "pairx_sum", Sum())
                fwd = _tv_basic_forward if isinstance(module, BasicBlock) else _tv_neck_forward
                self.override_forward(module, fwd)


def _tv_tail(self: Any, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    identity = self.downsample(x) if self.downsample is not None else x
    summed: torch.Tensor = self.relu(self.pairx_sum(torch.stack([out, identity], dim=-1)))
    return summed


def _tv_basic_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    return _tv_tail(self, x, out)


def _tv_neck_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    return _tv_tail(self, x, self.bn3(self.conv3(out)))


# -- the families (their detection order: pairx.lrp.families.DETECTION_ORDER) -----------------


@family_canonizer(
    "torchvision_resnet",
    contains("torchvision.models.resnet.BasicBlock", "torchvision.models.resnet.Bottleneck"),
    "torchvision ResNet",
)
def _torchvision_resnet() -> Canonizer:
    return ComposedCanonizer([MergeBatchNorm(), TorchvisionResNetResiduals()])


@family_canonizer(
    "timm_resnet",
    contains("timm.models.resnet.BasicBlock", "timm.models.resnet.Bottleneck"),
    "timm ResNet / ResNet-D / SE-ResNet",
)
def _timm_resnet() -> Canonizer:
    return ComposedCanonizer([MergeBatchNorm(), SignalOnlyGates(), TimmResNetResiduals()])


@family_canonizer(
    "timm_efficientnet",
    contains("timm.models.efficientnet.EfficientNet"),
    "timm EfficientNet / EfficientNetV2 / MobileNet (MiewID's family)",
)
def _timm_efficientnet() -> Canonizer:
    return ComposedCanonizer([MergeBatchNorm(), SignalOnlyGates(), TimmEfficientNetResiduals()])


@family_canonizer("timm_convnext", contains("timm.models.convnext.ConvNeXt"), "timm ConvNeXt")
def _timm_convnext() -> Canonizer:
    return ComposedCanonizer([TimmConvNeXt()])


def _any_network(net: nn.Module) -> bool:
    return True


@family_canonizer(
    "generic",
    _any_network,
    "plain feed-forward CNN without residual connections (conv->BN merged)",
)
def _generic() -> Canonizer:
    return ComposedCanonizer([MergeBatchNorm()])
