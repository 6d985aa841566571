"""Reversible LRP canonizers, found through a registry keyed by model family.

LRP rules are defined per module, so a network must first be put in a *canonical* form in which
every operation that redistributes relevance is a module with a rule:

* ``BatchNorm`` after a convolution is merged into that convolution (timm ``BatchNormAct2d``
  keeps its activation, which passes relevance through);
* residual additions become explicit :class:`zennit.layer.Sum` modules (rule: ``Norm``, i.e.
  relevance split in proportion to each summand);
* squeeze-excitation gates and ConvNeXt layer scales are constant multipliers: relevance flows
  through the signal branch unchanged (:class:`SignalPass`);
* ``LayerNorm`` uses a detached standard deviation (linear in its input, rule: ``Epsilon``);
* ``GeM`` pooling becomes power (pass) -> average pool (``Norm``) -> root (pass), which splits
  a channel's relevance in proportion to ``x ** p``; a ``BatchNorm1d`` neck passes relevance.

Every canonizer is a model edit that is undone exactly: modules are swapped for new ones and the
originals put back, instance ``forward`` overrides and helper submodules are deleted. Use
:meth:`Canonizer.applied` (a context manager) so the edit is undone even on error.

Families are registered with :func:`register_family`; :func:`detect_family` finds the family of a
network from the block types it contains (``isinstance``, never ``type(x) is``).
"""

from __future__ import annotations

import contextvars
import itertools
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from zennit.layer import Sum

from pairx.core.errors import CanonizerError
from pairx.models.adapter import ReIDModel

__all__ = [
    "CanonicalGeM",
    "Canonizer",
    "ComposedCanonizer",
    "DetachedLayerNorm",
    "FamilySpec",
    "GeMMean",
    "Power",
    "SignalPass",
    "canonizer_for",
    "check_lrp_support",
    "detect_family",
    "families",
    "gradient_convention",
    "has_zero",
    "merge_conv_bn",
    "pass_ratio",
    "register_family",
    "signal_pass",
]

_NO_ATTR = object()


_GRADIENT_CONVENTION: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pairx_gradient_convention", default=False
)


@contextmanager
def gradient_convention() -> Iterator[None]:
    """Inside the block, :func:`signal_pass` builds graphs for the modified-gradient LRP engine
    (:mod:`pairx.lrp.gradient_engine`), whose backward tensors are relevance / activation."""
    token = _GRADIENT_CONVENTION.set(True)
    try:
        yield
    finally:
        _GRADIENT_CONVENTION.reset(token)


class ValueOf(torch.autograd.Function):
    """Return ``y`` (a copy) in the forward pass; route the whole gradient to ``t``."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y.detach().view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def has_zero(a: torch.Tensor) -> bool:
    """Whether ``a`` has an element that is exactly zero (one pass, no temporary)."""
    return int(torch.count_nonzero(a.detach())) < a.numel()


def carrier(a: torch.Tensor) -> torch.Tensor:
    """``a`` where ``a != 0``, else ``1`` (detached; ``a`` itself when it has no zeros): what
    relevance is divided by in the modified-gradient convention, so that an exactly-zero
    activation carries its relevance itself (zennit's pass-through rules can give relevance to
    a zero input)."""
    a = a.detach()
    return torch.where(a != 0, a, torch.ones_like(a)) if has_zero(a) else a


def pass_ratio(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``carrier(y) / carrier(x)``: the factor by which a pass-through rule (``R_x = R_y``)
    scales the modified gradient from output ``y`` to input ``x``."""
    return carrier(y).div(carrier(x))


def signal_pass(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y = x * c`` with ``c`` a constant gate or scale: the value ``y``, all relevance to ``x``.

    In zennit's convention (the default) the incoming gradient *is* the relevance and passes
    unchanged (:class:`SignalPass`). Inside :func:`gradient_convention` the gradient is
    relevance / :func:`carrier`, so it is multiplied by :func:`pass_ratio`.
    """
    if _GRADIENT_CONVENTION.get():
        out: torch.Tensor = ValueOf.apply(x * pass_ratio(x, y), y.detach())
        return out
    passed: torch.Tensor = SignalPass.apply(x, y)
    return passed


class SignalPass(torch.autograd.Function):
    """Return ``y`` in the forward pass; pass the incoming gradient (relevance) to ``x``.

    Used for ``y = x * g`` where ``g`` is a gate or scale treated as a constant: the LRP
    (z-rule) relevance of the signal ``x`` is then exactly the relevance of ``y``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class Power(nn.Module):
    """Elementwise ``clamp(x, min=eps) ** exponent`` (LRP rule: pass-through)."""

    def __init__(self, exponent: torch.Tensor | float, eps: float | None = None) -> None:
        super().__init__()
        self.exponent = exponent.detach() if isinstance(exponent, torch.Tensor) else exponent
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w) -> (B, C, h, w)``."""
        if self.eps is not None:
            x = x.clamp(min=self.eps)
        return x.pow(self.exponent)


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
    import copy

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


class Canonizer:
    """A reversible model edit. Subclasses implement :meth:`edit` with the helpers below.

    :meth:`apply` records every change; :meth:`remove` undoes them in reverse order, restoring
    the original module objects, so the network is bit-identical afterwards.
    """

    #: Module types with parameters that this canonizer makes LRP-ready (besides leaf rules).
    handled_types: tuple[type, ...] = ()

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def edit(self, net: nn.Module) -> None:
        """Canonize ``net`` in place (override)."""
        raise NotImplementedError

    def apply(self, net: nn.Module) -> None:
        """Apply the edit; on failure the partial edit is undone before re-raising."""
        if self._undo:
            raise CanonizerError(f"{type(self).__name__} is already applied; remove() it first")
        try:
            self.edit(net)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Undo every change, newest first."""
        while self._undo:
            self._undo.pop()()

    @contextmanager
    def applied(self, net: nn.Module) -> Iterator[nn.Module]:
        """Context manager: canonize ``net`` for the ``with`` block, always undo afterwards."""
        self.apply(net)
        try:
            yield net
        finally:
            self.remove()

    # -- helpers ---------------------------------------------------------------------------
    def swap(self, parent: nn.Module, name: str, new: nn.Module) -> None:
        """Replace child ``name`` of ``parent`` by ``new`` (undone by :meth:`remove`)."""
        old = parent._modules[name]
        parent._modules[name] = new

        def undo() -> None:
            parent._modules[name] = old

        self._undo.append(undo)

    def add_child(self, parent: nn.Module, name: str, child: nn.Module) -> None:
        """Register a helper submodule (removed by :meth:`remove`)."""
        if name in parent._modules:
            raise CanonizerError(f"{type(parent).__name__} already has a child named {name!r}")
        parent.add_module(name, child)

        def undo() -> None:
            parent._modules.pop(name, None)

        self._undo.append(undo)

    def set_attr(self, obj: nn.Module, name: str, value: object) -> None:
        """Set a plain attribute (restored, or deleted if it was absent, by :meth:`remove`)."""
        old = obj.__dict__.get(name, _NO_ATTR)
        obj.__dict__[name] = value

        def undo() -> None:
            if old is _NO_ATTR:
                obj.__dict__.pop(name, None)
            else:
                obj.__dict__[name] = old

        self._undo.append(undo)

    def override_forward(self, module: nn.Module, forward: Callable[..., Any]) -> None:
        """Give ``module`` an instance-level ``forward`` (removed by :meth:`remove`)."""
        self.set_attr(module, "forward", types.MethodType(forward, module))

    def detach_layer_norms(self, net: nn.Module) -> None:
        """Swap every ``nn.LayerNorm`` of ``net`` for a :class:`DetachedLayerNorm` (timm's
        ``LayerNorm2d`` normalises dimension 1, any other over the last)."""
        from timm.layers import LayerNorm2d

        for parent in list(net.modules()):
            for name, child in list(parent._modules.items()):
                if isinstance(child, nn.LayerNorm):
                    dim = 1 if isinstance(child, LayerNorm2d) else -1
                    self.swap(parent, name, DetachedLayerNorm(child, dim))


class ComposedCanonizer(Canonizer):
    """Apply several canonizers in order (removed in reverse order)."""

    def __init__(self, parts: list[Canonizer]) -> None:
        super().__init__()
        self.parts = parts
        self.handled_types = tuple(t for part in parts for t in part.handled_types)

    def edit(self, net: nn.Module) -> None:
        for part in self.parts:
            part.apply(net)
            self._undo.append(part.remove)


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


class NeckCanonizer(Canonizer):
    """GeM pooling -> :class:`CanonicalGeM`; ``BatchNorm1d`` necks keep the pass rule."""

    def edit(self, net: nn.Module) -> None:
        for parent in list(net.modules()):
            for name, child in list(parent._modules.items()):
                if _is_gem(child):
                    assert child is not None
                    self.swap(parent, name, CanonicalGeM(child))


def _is_gem(module: nn.Module | None) -> bool:
    try:
        from pairx.models.architectures import GeM

        if isinstance(module, GeM):
            return True
    except ImportError:  # pragma: no cover
        pass
    # MiewID and other code bases define their own GeM with the same fields.
    return type(module).__name__ == "GeM" and hasattr(module, "p")


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


# -- registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilySpec:
    """A model family: how to recognise it and how to canonize it.

    Attributes
    ----------
    name
        Registry key (``ReIDModel.family`` may name it explicitly).
    detect
        ``net -> bool``, true when the network belongs to the family.
    factory
        Returns a fresh :class:`Canonizer` for the family (without the neck canonizer, which
        :func:`canonizer_for` always adds).
    description
        One line for listings and error messages.
    """

    name: str
    detect: Callable[[nn.Module], bool]
    factory: Callable[[], Canonizer]
    description: str = ""


_FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec, *, overwrite: bool = False) -> None:
    """Register a model family; raises :class:`CanonizerError` on a silent overwrite."""
    if spec.name in _FAMILIES and not overwrite:
        raise CanonizerError(
            f"model family {spec.name!r} is already registered; pass overwrite=True to replace it"
        )
    _FAMILIES[spec.name] = spec


def families() -> dict[str, FamilySpec]:
    """The registered families, in detection order."""
    return dict(_FAMILIES)


def _contains(*class_paths: str) -> Callable[[nn.Module], bool]:
    def detect(net: nn.Module) -> bool:
        import importlib

        classes: list[type] = []
        for path in class_paths:
            module_name, _, cls = path.rpartition(".")
            try:
                classes.append(getattr(importlib.import_module(module_name), cls))
            except (ImportError, AttributeError):
                continue
        return bool(classes) and any(isinstance(m, tuple(classes)) for m in net.modules())

    return detect


def _torchvision_resnet() -> Canonizer:
    return ComposedCanonizer([MergeBatchNorm(), TorchvisionResNetResiduals()])


def _timm_resnet() -> Canonizer:
    return ComposedCanonizer([MergeBatchNorm(), SignalOnlyGates(), TimmResNetResiduals()])


def _timm_efficientnet() -> Canonizer:
    return ComposedCanonizer([MergeBatchNorm(), SignalOnlyGates(), TimmEfficientNetResiduals()])


def _timm_convnext() -> Canonizer:
    return ComposedCanonizer([TimmConvNeXt()])


def _generic() -> Canonizer:
    return ComposedCanonizer([MergeBatchNorm()])


# Transformers are detected first: a hybrid ViT also contains timm ResNet blocks.
def _vit(attention_rule: str = "cp") -> Canonizer:
    from pairx.lrp.vit import TimmViT

    # a hybrid ViT's CNN patch embedding (pairx.models.paw_vit.HybridStem, timm ResNet stages)
    # takes the timm ResNet canonizers first; on a plain ViT they find nothing to edit
    return ComposedCanonizer([MergeBatchNorm(), SignalOnlyGates(), TimmResNetResiduals(),
                              TimmViT(attention_rule)])


def _swin(attention_rule: str = "cp") -> Canonizer:
    from pairx.lrp.swin import TimmSwin

    return TimmSwin(attention_rule)


def _timm_vit() -> Canonizer:
    return _vit()


register_family(FamilySpec(
    "timm_vit",
    _contains("timm.models.vision_transformer.VisionTransformer"),
    _timm_vit,
    "timm Vision Transformer (CP-LRP: attention with q and k detached)",
))


def _timm_swin() -> Canonizer:
    return ComposedCanonizer([_swin()])


register_family(FamilySpec(
    "timm_swin",
    _contains("timm.models.swin_transformer.SwinTransformer"),
    _timm_swin,
    "timm Swin Transformer, e.g. MegaDescriptor (CP-LRP on window attention)",
))


register_family(FamilySpec(
    "torchvision_resnet",
    _contains("torchvision.models.resnet.BasicBlock", "torchvision.models.resnet.Bottleneck"),
    _torchvision_resnet,
    "torchvision ResNet",
))
register_family(FamilySpec(
    "timm_resnet",
    _contains("timm.models.resnet.BasicBlock", "timm.models.resnet.Bottleneck"),
    _timm_resnet,
    "timm ResNet / ResNet-D / SE-ResNet",
))
register_family(FamilySpec(
    "timm_efficientnet",
    _contains("timm.models.efficientnet.EfficientNet"),
    _timm_efficientnet,
    "timm EfficientNet / EfficientNetV2 / MobileNet (MiewID's family)",
))
register_family(FamilySpec(
    "timm_convnext",
    _contains("timm.models.convnext.ConvNeXt"),
    _timm_convnext,
    "timm ConvNeXt",
))


def _never(net: nn.Module) -> bool:
    return False


register_family(FamilySpec(
    "timm_vit_attnlrp", _never, lambda: _vit(attention_rule="attnlrp"),
    "timm Vision Transformer with the AttnLRP attention rule (chosen explicitly, never detected)",
))
register_family(FamilySpec(
    "timm_swin_attnlrp", _never, lambda: ComposedCanonizer([_swin(attention_rule="attnlrp")]),
    "timm Swin Transformer with the AttnLRP attention rule (chosen explicitly, never detected)",
))
register_family(FamilySpec(
    "generic",
    lambda net: True,
    _generic,
    "plain feed-forward CNN without residual connections (conv->BN merged)",
))


def detect_family(net: nn.Module) -> str:
    """Name of the first registered family whose detector accepts ``net``."""
    for spec in _FAMILIES.values():
        if spec.detect(net):
            return spec.name
    raise CanonizerError("no registered model family accepts this network")


def canonizer_for(model: ReIDModel | nn.Module, family: str | None = None) -> Canonizer:
    """A fresh canonizer for ``model``: its family's canonizer followed by the neck canonizer.

    Parameters
    ----------
    model
        A :class:`ReIDModel` (``model.family`` is used when set) or a bare module.
    family
        Explicit family name, overriding detection.
    """
    net = model.net if isinstance(model, ReIDModel) else model
    if family is None and isinstance(model, ReIDModel):
        family = model.family
    name = family if family is not None else detect_family(net)
    if name not in _FAMILIES:
        raise CanonizerError(
            f"unknown model family {name!r}; registered: {', '.join(_FAMILIES)}. Register one "
            "with pairx.lrp.canonizers.register_family(FamilySpec(name, detect, factory))"
        )
    return ComposedCanonizer([_FAMILIES[name].factory(), NeckCanonizer()])


def check_lrp_support(
    net: nn.Module, rule_types: tuple[type, ...], handled_types: tuple[type, ...] = ()
) -> None:
    """Raise :class:`CanonizerError` for any module with parameters but no LRP rule.

    Parameters
    ----------
    net
        The canonized network.
    rule_types
        Module types that the LRP composite gives a rule.
    handled_types
        Types whose own parameters a canonizer already accounts for (e.g. layer scales).
    """
    for name, module in net.named_modules():
        has_params = any(True for _ in module.parameters(recurse=False))
        if not has_params or isinstance(module, rule_types + handled_types):
            continue
        raise CanonizerError(
            f"module {name or '<root>'!r} of type {type(module).__module__}."
            f"{type(module).__qualname__} has parameters but no LRP rule after canonization, so "
            "its relevance would be wrong. Register a canonizer for this model family with "
            "pairx.lrp.canonizers.register_family(FamilySpec(name, detect, factory)) that "
            "rewrites it into modules with rules (Conv, Linear, BatchNorm, Sum), and set "
            "ReIDModel.family to that name."
        )
