"""The same LRP (EpsilonPlus) as :mod:`pairx.lrp.zennit_engine`, as modified gradients.

zennit implements a rule as a backward hook that, on *every* backward pass, re-runs the module's
modified forward (for ``ZPlus`` two extra convolutions) and differentiates it, while autograd
also runs the module's ordinary backward, which is then discarded. PAIR-X needs many backward
passes over one forward graph (one per pixel map), so that recomputation dominates its cost.

This engine instead writes each rule as a *linear* surrogate built once, in the forward pass,
whose ordinary gradient is the rule. With ``g = R / c(a)``, relevance divided by the carrier
``c(a) = a`` (``1`` where ``a == 0``, so that zero activations, to which zennit's pass-through
rules can hand relevance, carry it themselves), every EpsilonPlus rule is linear in ``g`` with
coefficients fixed by the forward pass (``[x != 0]`` masks the input gradient, ``s`` is zennit's
sign-preserving stabilizer, factors are detached):

* ``ZPlus`` (convolutions), ``z = W+ x+ + b+ + W- x-``: the gradient of
  ``z([x != 0] x) * c(y) / s(z)``, i.e. ``[x>0] W+^T u + [x<0] W-^T u`` with
  ``u = g_out c(y) / s(z)``;
* ``Epsilon`` (dense layers, detached-std LayerNorm) and ``Norm`` (sums, average pools): the
  gradient of ``y([x != 0] x) * c(y) / s(y)``;
* pass-through (activations, BatchNorm, GeM powers, constant gates): the gradient of
  ``x * c(y) / c(x)``.

Each module's output keeps its exact value (:class:`~pairx.lrp.convention.ValueOf`); only the
gradient is routed through the surrogate. A backward pass then costs one transposed operation
per layer (two for ``ZPlus`` with signed inputs) and nothing is recomputed. The relevance of a
graph tensor ``a`` is ``c(a) * grad``; the output is seeded with ``R / c(y)``.

The rule for each module is the one zennit's composite assigns (:func:`lrp.lrp_composite`), so
both engines agree to float rounding (tested per model family).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input
from zennit.core import Composite
from zennit.rules import Epsilon, Norm, Pass, ZPlus
from zennit.types import ConvolutionStandard

from pairx.core.errors import ModelError
from pairx.lrp.cone import ConePlan, ConeUnsupported, signed_select
from pairx.lrp.convention import ValueOf, carrier, gradient_convention, has_zero, pass_ratio
from pairx.lrp.rule_modules import GeMMean
from pairx.lrp.zennit_engine import canonized, lrp_composite
from pairx.models.adapter import ReIDModel
from pairx.models.graph_ops import GraphGeMMean

__all__ = [
    "ZPlusConv", "cone_plan", "gradient_lrp_mode", "layer_relevance", "output_seed",
    "position_pixel_relevance",
]


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


class _Rule:
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


class _PassRule(_Rule):
    def surrogate(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x * pass_ratio(x, y)


class _NormRule(_Rule):
    """``Norm`` and ``Epsilon``: the module's own Jacobian, output scaled by ``c(y) / s(y)``."""

    mask_input = True

    def surrogate(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y * _ratio(y, y, self.eps)


class _ZPlusRule(_Rule):
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
        and kept while the rule lives, i.e. for one :func:`gradient_lrp_mode` block (the cone
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
    weight when they are needed (``split``, :meth:`_ZPlusRule.split_weight`), so a graph holds
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


def _rule_for(rule: object, module: nn.Module, epsilon: float, stabilizer: float) -> _Rule:
    if isinstance(rule, Pass):
        return _PassRule(0.0)
    if isinstance(rule, Norm):
        return _NormRule(1e-30 if isinstance(module, (GeMMean, GraphGeMMean)) else stabilizer)
    if isinstance(rule, Epsilon):
        return _NormRule(epsilon)
    if isinstance(rule, ZPlus) and isinstance(module, (ConvolutionStandard, nn.Linear)):
        return _ZPlusRule(stabilizer)
    raise ModelError(
        f"the gradient LRP engine has no implementation of rule {type(rule).__name__} for "
        f"{type(module).__name__}; use engine='zennit'"
    )


def _assign_rules(
    net: nn.Module, epsilon: float, stabilizer: float
) -> list[tuple[nn.Module, _Rule]]:
    composite: Composite = lrp_composite(epsilon, stabilizer)
    ctx: dict[str, Any] = {}
    zplus = _ZPlusRule(stabilizer)  # one instance shares the W+/W- cache
    out = []
    for name, module in net.named_modules():
        template = composite.module_map(ctx, name, module)
        if template is None:
            continue
        rule = _rule_for(template, module, epsilon, stabilizer)
        out.append((module, zplus if isinstance(rule, _ZPlusRule) else rule))
    return out


@contextmanager
def gradient_lrp_mode(
    model: ReIDModel | nn.Module,
    *,
    family: str | None = None,
    epsilon: float = 1e-6,
    stabilizer: float = 1e-6,
) -> Iterator[nn.Module]:
    """Canonize ``model`` and register the modified-gradient rule hooks for the block.

    Inside the block, the gradient flowing back to any tensor ``a`` of a forward graph is
    ``relevance(a) / carrier(a)``: seed the output with :func:`output_seed` and multiply the
    gradient by ``carrier(a)`` (:func:`layer_relevance` does both). In-place activations are
    made out-of-place for the duration. On exit (normal or not) everything is restored: hooks,
    canonizer edits, ``inplace`` flags, training modes and ``requires_grad`` flags.

    Yields
    ------
    nn.Module
        The (temporarily canonized) network.
    """
    handles = []
    try:
        with canonized(model, family=family, out_of_place=True) as net, gradient_convention():
            for module, rule in _assign_rules(net, epsilon, stabilizer):
                if rule.mask_input:
                    handles.append(module.register_forward_pre_hook(rule.pre))
                handles.append(module.register_forward_hook(rule))
            yield net
    finally:
        for handle in handles:
            handle.remove()


def output_seed(output: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """The backward seed ``relevance / carrier(output)``."""
    return relevance.detach() / carrier(output)


def position_pixel_relevance(
    layer_output: torch.Tensor,
    x: torch.Tensor,
    positions: torch.Tensor,
    *,
    retain_graph: bool = True,
    method: str = "auto",
) -> torch.Tensor:
    """Per-position LRP from a layer back to the pixels over one graph built in
    :func:`gradient_lrp_mode`; nothing is recomputed.

    Parameters
    ----------
    layer_output
        ``(B, C, h, w)`` activation (graph attached).
    x
        ``(B, 3, H, W)`` input with ``requires_grad``.
    positions
        ``(K, B, 2)`` int ``(col, row)`` grid positions, one per map and batch item.
    retain_graph
        Keep the graph after the last backward pass (the cone replay always keeps it).
    method
        ``"cone"``: all maps in one replay of the backward pass restricted to each position's
        receptive-field cone (:mod:`pairx.lrp.cone`); ``"dense"``: one ordinary backward
        pass per map; ``"auto"`` (default): the cone replay where the graph allows it, else
        dense (with a warning naming the node that prevents it). Both give the same maps.

    Returns
    -------
    torch.Tensor
        ``(K, B, H, W)`` pixel relevance, summed over RGB and made absolute: for map ``k`` the
        LRP of the activation of item ``b`` masked to ``positions[k, b]`` (all channels).
    """
    if method not in ("auto", "cone", "dense"):
        raise ValueError(f"method must be 'auto', 'cone' or 'dense'; got {method!r}")
    k, b = int(positions.shape[0]), int(positions.shape[1])
    if b != layer_output.shape[0]:
        raise ValueError(f"positions have {b} batch items, the activation {layer_output.shape[0]}")
    active = layer_output.detach() / carrier(layer_output)  # seed = activation / carrier
    xd = carrier(x)
    if k == 0:
        return torch.zeros(0, b, *x.shape[-2:], dtype=x.dtype, device=x.device)
    if method != "dense":
        try:
            plan = cone_plan(layer_output, x)
        except ConeUnsupported as err:
            if method == "cone":
                raise ModelError(f"no cone-restricted pixel maps for this model: {err}") from err
            _warn_dense(str(err))
        else:
            return plan.run(active, positions, xd)
    out = torch.zeros(k, b, *x.shape[-2:], dtype=x.dtype, device=x.device)
    items = torch.arange(b, device=x.device)
    for i in range(k):
        seed = torch.zeros_like(active)
        cols = positions[i, :, 0].long().to(x.device)
        rows = positions[i, :, 1].long().to(x.device)
        seed[items, :, rows, cols] = active[items, :, rows, cols]
        (grad,) = torch.autograd.grad(layer_output, x, grad_outputs=seed,
                                      retain_graph=retain_graph or i + 1 < k)
        out[i] = (xd * grad).sum(dim=1).abs()
    return out


_WARNED: set[str] = set()


def cone_plan(layer_output: torch.Tensor, x: torch.Tensor) -> ConePlan:
    """The :class:`~pairx.lrp.cone.ConePlan` of ``layer_output`` down to ``x``, built
    once per graph (kept on the activation tensor, so it lives as long as the graph; so is
    the reason when the graph cannot be replayed).

    Raises
    ------
    ConeUnsupported
        The graph has a node the cone replay does not implement.
    """
    cached: tuple[torch.Tensor, ConePlan | ConeUnsupported] | None = getattr(
        layer_output, "_pairx_cone_plan", None)
    if cached is None or cached[0] is not x:  # a graph that cannot be replayed is walked once
        try:
            found: ConePlan | ConeUnsupported = ConePlan(layer_output, x)
        except ConeUnsupported as err:
            found = err
        cached = (x, found)
        layer_output._pairx_cone_plan = cached  # type: ignore[attr-defined]
    if isinstance(cached[1], ConeUnsupported):
        raise cached[1]
    return cached[1]


def _warn_dense(reason: str) -> None:
    if reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(f"pixel maps use the dense backward pass (slower, same maps): {reason}",
                      stacklevel=4)


def layer_relevance(
    output: torch.Tensor,
    relevance: torch.Tensor,
    targets: Sequence[torch.Tensor],
    *,
    retain_graph: bool = True,
) -> list[torch.Tensor | None]:
    """Relevance at ``targets`` (graph tensors) of ``relevance`` given at ``output``."""
    grads = torch.autograd.grad(output, list(targets), grad_outputs=output_seed(output, relevance),
                                retain_graph=retain_graph, allow_unused=True)
    return [None if g is None else carrier(t) * g for t, g in zip(targets, grads, strict=True)]
