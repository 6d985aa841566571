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

The surrogates are in :mod:`pairx.lrp.surrogates`. The rule for each module is the one zennit's
composite assigns (:func:`pairx.lrp.zennit_engine.lrp_composite`), so both engines agree to
float rounding (tested per model family).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from zennit.core import Composite

from pairx.core.errors import ModelError
from pairx.lrp.cone import ConePlan, ConeUnsupported
from pairx.lrp.convention import carrier, gradient_convention
from pairx.lrp.surrogates import SurrogateRule, ZPlusRule, surrogate_rule_for
from pairx.lrp.zennit_engine import canonized, lrp_composite
from pairx.models.adapter import ReIDModel

__all__ = [
    "cone_plan", "gradient_lrp_mode", "layer_relevance", "output_seed",
    "position_pixel_relevance",
]


def _assign_rules(
    net: nn.Module, epsilon: float, stabilizer: float
) -> list[tuple[nn.Module, SurrogateRule]]:
    composite: Composite = lrp_composite(epsilon, stabilizer)
    ctx: dict[str, Any] = {}
    zplus = ZPlusRule(stabilizer)  # one instance shares the W+/W- cache
    out = []
    for name, module in net.named_modules():
        template = composite.module_map(ctx, name, module)
        if template is None:
            continue
        rule = surrogate_rule_for(template, module, epsilon, stabilizer)
        out.append((module, zplus if isinstance(rule, ZPlusRule) else rule))
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
