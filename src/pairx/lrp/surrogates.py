"""The rules of the modified-gradient LRP engine, each a linear surrogate built in the forward pass.

A :class:`SurrogateRule` is a forward hook that keeps the module's output value
(:class:`~pairx.lrp.convention.ValueOf`) and routes the gradient through a surrogate whose
ordinary gradient *is* the rule in the convention ``g = R / c(a)`` (see
:mod:`pairx.lrp.gradient_engine` for the formulas):

* :class:`PassRule`: pass-through, ``x * c(y) / c(x)``;
* :class:`NormRule`: ``Norm`` and ``Epsilon``, ``y([x != 0] x) * c(y) / s(y)``;
* :class:`ZPlusRule`: ``ZPlus`` for convolutions and dense layers, ``z * c(y) / s(z)`` with
  ``z = W+ x+ + b+ + W- x-``; a zero-padded ``Conv2d`` takes one :class:`ZPlusConv` node.

:func:`surrogate_rule_for` maps the zennit rule the composite assigns to its surrogate.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input
from zennit.rules import Epsilon, Norm, Pass, ZPlus
from zennit.types import ConvolutionStandard

from pairx.core.errors import ModelError
from pairx.lrp.cone import signed_select
from pairx.lrp.convention import ValueOf, carrier, has_zero, pass_ratio
from pairx.lrp.rule_modules import GeMMean
from pairx.models.graph_ops import GraphGeMMean

__all__ = ["NormRule", "PassRule", "SurrogateRule", "ZPlusConv", "ZPlusRule",
           "surrogate_rule_for"]


def _stabilize(z: torch.Tensor, eps: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """zennit's stabilizer, a new tensor (or ``out``): ``z + eps * sign(z)`` with
    ``sign(0) = +1`` (adding ``0.0`` first turns a negative zero into a positive one)."""
    den = z.detach().add(0.0) if out is None else torch.add(z.detach(), 0.0, out=out)
    return den.add_(torch.copysign(torch.tensor(eps, dtype=z.dtype, device=z.device), den))


def _ratio(y: torch.Tensor, z: torch.Tensor, eps: float,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """``carrier(y) / stabilize(z)`` (detached), computed in place in one new tensor (or
    ``out``)."""
    den = _stabilize(z, eps, out)
    return torch.div(carrier(y), den, out=den)


def _mask_zero_grad(x: torch.Tensor) -> torch.Tensor:
    """Same values; no gradient reaches the elements that are exactly zero."""
    return x * (x.detach() != 0).to(x.dtype)


class SurrogateRule:
    """A forward hook that replaces a module's output by ``ValueOf(surrogate, output)``."""

    mask_input = False
    """Whether a forward pre-hook must stop the gradient at zero input elements."""

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def pre(self, module: nn.Module, inputs: tuple[Any, ...]) -> Any:
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].requires_grad and (
            has_zero(inputs[0])
        ):
            return (_mask_zero_grad(inputs[0]), *inputs[1:])
        return None

    def surrogate(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        if not inputs or not isinstance(inputs[0], torch.Tensor) or not isinstance(
            output, torch.Tensor
        ):
            return None
        x = inputs[0]
        if not (x.requires_grad or output.requires_grad):
            return None
        # the output's own graph gets no gradient (ValueOf routes it all to the surrogate):
        # detached, it is freed at once instead of living as long as the surrogate's
        return ValueOf.apply(self.surrogate(module, x, output), output.detach())


class PassRule(SurrogateRule):
    def surrogate(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x * pass_ratio(x, y)


class NormRule(SurrogateRule):
    """``Norm`` and ``Epsilon``: the module's own Jacobian, output scaled by ``c(y) / s(y)``."""

    mask_input = True

    def surrogate(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y * _ratio(y, y, self.eps)


class ZPlusRule(SurrogateRule):
    """``ZPlus`` for ``Conv1d/2d/3d`` and ``Linear``: positive and negative parts of W."""

    def __init__(self, eps: float) -> None:
        super().__init__(eps)
        self._kept: dict[tuple[Any, ...],
                         tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        self._biases: dict[int, torch.Tensor] = {}
        self._scratch: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def split_weight(self, weight: torch.Tensor, *, negative: bool = True, keep: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W+, W-)`` of a convolution weight (``W-`` only with ``negative``).

        By default they are written into two scratch buffers that every call reuses, so they are
        valid until the next call (a graph keeps no copy of the model's weights, and no
        weight-sized temporaries are left behind in the heap); with ``keep`` they are made once
        and kept while the rule lives, i.e. for one
        :func:`~pairx.lrp.gradient_engine.gradient_lrp_mode` block (the cone
        replay runs the layers below the explained one once per pixel map).
        """
        key = (weight.data_ptr(), tuple(weight.shape), weight.dtype)
        cached = self._kept.get(key)
        if cached is not None:
            return cached[1], cached[2]
        if keep:  # the weight is kept too, so that its address is not reused in the block
            kept = (weight, weight.clamp(min=0), weight.clamp(max=0))
            self._kept[key] = kept
            return kept[1], kept[2]
        if not weight.is_contiguous():
            return weight.clamp(min=0), weight.clamp(max=0) if negative else None
        n = weight.numel()
        slot = (weight.dtype, weight.device)
        buf = self._scratch.get(slot)
        if buf is None or buf.shape[1] < n:
            buf = torch.empty(2, n, dtype=weight.dtype, device=weight.device)
            self._scratch[slot] = buf
        w_pos = torch.clamp(weight, min=0, out=buf[0, :n].view(weight.shape))
        w_neg = (torch.clamp(weight, max=0, out=buf[1, :n].view(weight.shape))
                 if negative else None)
        return w_pos, w_neg

    def _bias_pos(self, module: nn.Module) -> torch.Tensor | None:
        """``b+`` of a module (made once; biases are small)."""
        if module.bias is None:
            return None
        cached = self._biases.get(id(module))
        if cached is None:
            cached = torch.as_tensor(module.bias).detach().clamp(min=0)
            self._biases[id(module)] = cached
        return cached

    def _split(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``W+``, ``W-`` and ``b+`` of a module whose rule is a differentiated surrogate (its
        graph keeps them, so they are made once)."""
        w_pos, w_neg = self.split_weight(torch.as_tensor(module.weight).detach(), keep=True)
        assert w_neg is not None  # kept splits have both parts
        return w_pos, w_neg, self._bias_pos(module)

    def _apply(self, module: nn.Module, x: torch.Tensor, w: torch.Tensor,
               b: torch.Tensor | None) -> torch.Tensor:
        if isinstance(module, nn.Linear):
            return F.linear(x, w, b)
        out: torch.Tensor = module._conv_forward(x, w, b)  # type: ignore[operator]
        return out

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        if (isinstance(module, nn.Conv2d) and module.padding_mode == "zeros"
                and not isinstance(module.padding, str) and inputs
                and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor)
                and inputs[0].requires_grad):
            bias = self._bias_pos(module)
            conv = (tuple(module.stride), tuple(module.padding), tuple(module.dilation),
                    int(module.groups))
            return ZPlusConv.apply(inputs[0], output.detach(),
                                   torch.as_tensor(module.weight).detach(), bias, conv, self.eps,
                                   self.split_weight)
        return super().__call__(module, inputs, output)

    def surrogate(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w_pos, w_neg, b_pos = self._split(module)
        xd = x.detach()
        if xd.numel() == 0 or float(xd.min()) >= 0:  # e.g. after ReLU: relu' is 0 at x == 0
            z = self._apply(module, torch.relu(x), w_pos, b_pos)
        else:
            if has_zero(xd):
                x = _mask_zero_grad(x)
            z = self._apply(module, x.clamp(min=0), w_pos, b_pos)
            z = z.add_(self._apply(module, x.clamp(max=0), w_neg, None))
        return z * _ratio(y, z, self.eps)


class ZPlusConv(torch.autograd.Function):
    """``ZPlus`` for a zero-padded ``Conv2d`` as one autograd node that keeps only what the
    rule needs: the output's value forward; backward, with ``u = g * c(y) / s(z)``,
    ``[x>0] W+^T u + [x<0] W-^T u`` (the same as differentiating the surrogate, whose graph
    would also keep ``x``, ``x+`` and ``x-``). Saved: the (canonized) weight itself, the
    ratio and the sign of ``x`` (one byte per element); ``W+`` and ``W-`` are made from the
    weight when they are needed (``split``, :meth:`ZPlusRule.split_weight`), so a graph holds
    no copy of the model's weights."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                b_pos: torch.Tensor | None,
                conv: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], int],
                eps: float, split: Any) -> torch.Tensor:
        stride, padding, dilation, groups = conv
        xd = x.detach()
        signed = bool(xd.numel()) and float(xd.min()) < 0
        # what the node keeps is allocated before the temporaries, which are then freed in
        # the reverse order: the heap does not fragment into holes below the saved tensors
        ratio = torch.empty_like(y)
        sign = torch.empty(xd.shape, dtype=torch.int8, device=xd.device)
        sign.copy_(torch.sign(xd))
        w_pos, w_neg = split(weight, negative=signed)
        z = F.conv2d(xd.clamp(min=0), w_pos, b_pos, stride, padding, dilation, groups)
        if signed:
            z.add_(F.conv2d(xd.clamp(max=0), w_neg, None, stride, padding, dilation, groups))
        del w_pos, w_neg
        ctx.save_for_backward(weight, _ratio(y, z, eps, out=ratio), sign)
        ctx.signed = signed
        ctx.split = split
        ctx.has_zero = has_zero(xd)
        ctx.conv = conv
        ctx.input_size = tuple(x.shape)
        return y.detach().view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        weight, ratio, sign = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        w_pos, w_neg = ctx.split(weight, negative=ctx.signed)
        u = grad * ratio
        out = conv2d_input(ctx.input_size, w_pos, u, stride, padding, dilation, groups)
        neg = None if not ctx.signed else conv2d_input(ctx.input_size, w_neg, u, stride,
                                                       padding, dilation, groups)
        return (signed_select(sign, out, neg, ctx.has_zero),
                None, None, None, None, None, None)


def surrogate_rule_for(rule: object, module: nn.Module, epsilon: float, stabilizer: float
                       ) -> SurrogateRule:
    """The surrogate of zennit rule ``rule`` (as the composite assigns it to ``module``).

    Raises
    ------
    ModelError
        A rule this engine does not implement for the module.
    """
    if isinstance(rule, Pass):
        return PassRule(0.0)
    if isinstance(rule, Norm):
        return NormRule(1e-30 if isinstance(module, (GeMMean, GraphGeMMean)) else stabilizer)
    if isinstance(rule, Epsilon):
        return NormRule(epsilon)
    if isinstance(rule, ZPlus) and isinstance(module, (ConvolutionStandard, nn.Linear)):
        return ZPlusRule(stabilizer)
    raise ModelError(
        f"the gradient LRP engine has no implementation of rule {type(rule).__name__} for "
        f"{type(module).__name__}; use engine='zennit'"
    )
