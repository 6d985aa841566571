"""Layer-wise relevance propagation (LRP) for embedding networks, via zennit.

The composite is EpsilonPlus: ``ZPlus`` for convolutions (:class:`NonNegativeZPlus`, zennit's
rule computed at half the cost where the input is non-negative), ``Epsilon`` for dense layers
(and the detached-std LayerNorm of canonized ConvNeXts and ViTs, and a ViT's attention with
constant weights), ``Norm`` for sums and average pools (also over tokens), and pass-through for
activations, BatchNorm and GeM's power steps. In zennit's convention the gradient that flows
backwards *is* the relevance, so the relevance at any tensor of the forward graph is
``torch.autograd.grad(output, tensor, grad_outputs=relevance_at_output)``.

:func:`lrp_mode` puts a model in that state for a ``with`` block (eval mode, parameters frozen,
family canonizer applied, rule hooks registered) and restores everything afterwards, even when
an exception is raised inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from zennit.composites import EpsilonPlus
from zennit.core import ParamMod
from zennit.rules import Epsilon, Norm, Pass, ZPlus
from zennit.types import BatchNorm, Convolution

from pairx.core.errors import ModelError
from pairx.core.targets import target_relevance
from pairx.lrp.families import canonizer_for, check_lrp_support
from pairx.lrp.rule_modules import DetachedLayerNorm, GeMMean
from pairx.lrp.swin import WindowAttentionMix
from pairx.lrp.traced import graph_layer_map
from pairx.lrp.vit import AggregationMix, AttentionMix, PointwiseProjection, TokenMean
from pairx.models.adapter import ReIDModel
from pairx.models.edits import frozen_eval
from pairx.models.graph_ops import Power
from pairx.models.layers import capture_layers, require_spatial_output

__all__ = [
    "RULE_TYPES",
    "NonNegativeZPlus",
    "canonized",
    "capture_layers",
    "frozen_eval",
    "input_relevance",
    "lrp_composite",
    "lrp_mode",
    "pixel_relevance",
    "seed_relevance",
    "similarity_relevance",
]

RULE_TYPES: tuple[type, ...] = (Convolution, nn.Linear, BatchNorm, DetachedLayerNorm, Power,
                                PointwiseProjection)
"""Module types with parameters that the composite gives an LRP rule."""


def _extra_activations() -> tuple[type, ...]:
    """timm activation modules that zennit does not list as activations."""
    import timm.layers.activations as acts

    names = ("Swish", "Mish", "HardSwish", "HardSigmoid", "GELU", "GELUTanh", "QuickGELU",
             "Sigmoid", "Tanh", "PReLU")
    return tuple(getattr(acts, n) for n in names if isinstance(getattr(acts, n, None), type))


class _RuleOutput(torch.autograd.Function):
    """The output of a module whose rule computes the relevance at its input: backward hands
    the rule the gradient at the output and the input a zero (which the rule's hook on the
    input replaces), so the module's own backward pass, whose result would be thrown away,
    never runs."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, out: torch.Tensor, hook: Any) -> torch.Tensor:
        ctx.hook, ctx.shape = hook, x.shape
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        ctx.hook.stored_tensors["grad_output"] = (grad,)
        return grad.new_zeros(()).expand(ctx.shape), None, None


class NonNegativeZPlus(ZPlus):
    """zennit's ``ZPlus`` rule, without its negative-input branch where the input has no
    negative value (a convolution after a ReLU, most of a CNN's).

    ``ZPlus`` propagates ``R_in = x+ * g(w+, x+) + x- * g(w-, x-)`` with ``z = z+ + z-`` in the
    denominator. For an input ``x >= 0`` the second branch is a convolution of zeros (``z- =
    0`` exactly, its bias zeroed) whose product with ``x- = 0`` adds only a zero, so this rule
    computes the first branch alone: the same values (at most the sign of a zero differs),
    half the convolutions of the rule. Inputs with a negative value, NaN or other modifiers
    take zennit's own path. And the convolution's own backward pass, which zennit computes and
    then replaces by the rule's relevance, is skipped (:class:`_RuleOutput`).
    """

    def post_forward(self, module: nn.Module, input: Any, output: Any) -> Any:
        x = input[0] if isinstance(input, tuple) and input else None
        if (not isinstance(output, torch.Tensor) or output.grad_fn is None
                or not isinstance(x, torch.Tensor) or not x.requires_grad):
            return super().post_forward(module, input, output)
        return _RuleOutput.apply(x, output.detach(), self)

    def backward(self, module: nn.Module, grad_input: Any, grad_output: Any) -> Any:
        original = self.stored_tensors["input"][0]
        if not bool((original >= 0).all()):
            return super().backward(module, grad_input, grad_output)
        x = original.clone().requires_grad_()
        with ParamMod.ensure(self.param_modifiers[0])(module) as modified, \
                torch.autograd.enable_grad():
            z = modified.forward(x)
        # zennit's mapper on (z+, z- = 0): the same stabilised denominator, bit for bit
        seed = self.gradient_mapper(grad_output[0], [z, torch.zeros_like(z)])[0]
        (gradient,) = torch.autograd.grad(z, x, grad_outputs=seed,
                                          create_graph=grad_output[0].requires_grad)
        relevance = x * gradient
        return tuple(relevance if g.shape == relevance.shape else None for g in grad_input)


def lrp_composite(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> EpsilonPlus:
    """The EpsilonPlus composite extended with rules for pairx's canonical modules (and
    :class:`NonNegativeZPlus` for its convolutions)."""
    layer_map = [
        ((Power,), Pass()),
        ((GeMMean,), Norm(stabilizer=1e-30)),
        ((DetachedLayerNorm, AttentionMix, WindowAttentionMix, AggregationMix,
          PointwiseProjection),
         Epsilon(epsilon=epsilon)),
        ((TokenMean,), Norm(stabilizer=stabilizer)),
        (_extra_activations(), Pass()),
        *graph_layer_map(epsilon, stabilizer),
        ((Convolution,), NonNegativeZPlus(stabilizer=stabilizer)),
    ]
    return EpsilonPlus(epsilon=epsilon, stabilizer=stabilizer, layer_map=layer_map)


def _net(model: ReIDModel | nn.Module) -> nn.Module:
    return model.net if isinstance(model, ReIDModel) else model


@contextmanager
def lrp_mode(
    model: ReIDModel | nn.Module,
    *,
    family: str | None = None,
    epsilon: float = 1e-6,
    stabilizer: float = 1e-6,
) -> Iterator[nn.Module]:
    """Canonize ``model`` and register LRP rule hooks for the duration of the block.

    Inside the block, gradients of the network's output are LRP relevances. On exit (normal or
    not) hooks and canonizer edits are removed and each module's training flag and each
    parameter's ``requires_grad`` flag are restored.

    Yields
    ------
    nn.Module
        The (temporarily canonized) network.
    """
    with canonized(model, family=family) as net, lrp_composite(epsilon, stabilizer).context(net):
        yield net


@contextmanager
def canonized(
    model: ReIDModel | nn.Module, *, family: str | None = None, out_of_place: bool = False
) -> Iterator[nn.Module]:
    """The network in :func:`frozen_eval` state with its family canonizer applied and checked
    to leave no module without an LRP rule; both undone on exit, normal or not (the common
    part of both LRP engines' modes).

    Yields
    ------
    nn.Module
        The (temporarily canonized) network.
    """
    net = _net(model)
    canonizer = canonizer_for(model, family)
    with frozen_eval(net, out_of_place=out_of_place), canonizer.applied(net):
        check_lrp_support(net, RULE_TYPES, canonizer.handled_types)
        yield net


def similarity_relevance(
    e_a: torch.Tensor, e_b: torch.Tensor
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Cosine similarity and the starting relevance ``cos * d(cos)/d(e)`` for each embedding.

    Parameters
    ----------
    e_a, e_b
        ``(1, D)`` embeddings.

    Returns
    -------
    tuple
        ``(cos, r_a, r_b)`` with ``r_a``, ``r_b`` of shape ``(1, D)``.

    Raises
    ------
    ModelError
        An embedding is NaN/inf or has (numerically) zero norm.
    """
    for name, e in (("first", e_a), ("second", e_b)):
        if not torch.isfinite(e).all():
            raise ModelError(f"the model produced NaN or infinite values in the {name} embedding")
        if float(e.detach().double().norm()) < 1e-12:
            raise ModelError(
                f"the {name} embedding has zero norm, so the cosine similarity is undefined"
            )
    a = e_a.detach().clone().requires_grad_(True)
    b = e_b.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        cos = F.cosine_similarity(a, b, dim=1)
        r_a, r_b = torch.autograd.grad(cos, (a, b), grad_outputs=cos.detach())
    return float(cos.detach()[0]), r_a, r_b


def seed_relevance(
    target: str, e_a: torch.Tensor, e_b: torch.Tensor
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The similarity and LRP's starting relevance ``s * ds/de`` of each ``(1, D)`` embedding
    for the named target, the partner held fixed (cosine: :func:`similarity_relevance`; other
    targets: :func:`pairx.core.targets.target_relevance`)."""
    if target == "cosine":
        return similarity_relevance(e_a, e_b)

    return target_relevance(target, e_a, e_b)


def _position_seeds(act: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``(K, B, C, h, w)`` starting relevances: activation of item b masked to position k."""
    k, b = int(positions.shape[0]), int(positions.shape[1])
    seeds = torch.zeros(k, *act.shape, dtype=act.dtype, device=act.device)
    items = torch.arange(b, device=act.device)
    for i in range(k):
        cols = positions[i, :, 0].long().to(act.device)
        rows = positions[i, :, 1].long().to(act.device)
        seeds[i, items, :, rows, cols] = act[items, :, rows, cols]
    return seeds


def pixel_relevance(
    layer_output: torch.Tensor,
    x: torch.Tensor,
    positions: torch.Tensor,
    *,
    retain_graph: bool = True,
    chunk: int | None = 10,
) -> torch.Tensor:
    """Per-position LRP from a layer's activation back to the input pixels, one graph reused.

    For map ``k`` and batch item ``b`` the starting relevance is the activation of item ``b``
    masked to position ``positions[k, b]`` (all channels); the input relevance is summed over
    RGB and made absolute. Batch items never mix (every module acts per item), so one backward
    pass yields map ``k`` of every item. The ``K`` maps are computed as batched vector-Jacobian
    products over the single forward graph (``chunk`` maps per backward pass; ``None`` or ``1``:
    one backward pass per map, as the reference implementation does).

    Parameters
    ----------
    layer_output
        ``(B, C, h, w)`` activation captured inside :func:`lrp_mode` (graph attached).
    x
        ``(B, 3, H, W)`` input with ``requires_grad``.
    positions
        ``(K, B, 2)`` int ``(col, row)`` grid positions (or ``(K, 2)`` when ``B == 1``).
    retain_graph
        Keep the graph after the last backward pass.
    chunk
        Maps per batched backward pass (memory grows with it).

    Returns
    -------
    torch.Tensor
        ``(K, B, H, W)`` (or ``(K, H, W)`` for ``(K, 2)`` positions) pixel relevance.
    """
    squeeze = positions.dim() == 2
    if squeeze:
        positions = positions[:, None, :]
    k, b = int(positions.shape[0]), int(positions.shape[1])
    if b != layer_output.shape[0]:
        raise ValueError(f"positions have {b} batch items, the activation {layer_output.shape[0]}")
    out = torch.zeros(k, b, *x.shape[-2:], dtype=x.dtype, device=x.device)
    seeds = _position_seeds(layer_output.detach(), positions)
    step = max(1, chunk or 1)
    for start in range(0, k, step):
        part = seeds[start:start + step]
        keep = retain_graph or start + step < k
        if part.shape[0] > 1:
            (grad,) = torch.autograd.grad(
                layer_output, x, grad_outputs=part, retain_graph=keep, is_grads_batched=True
            )
        else:
            (grad,) = torch.autograd.grad(layer_output, x, grad_outputs=part[0], retain_graph=keep)
            grad = grad[None]
        out[start:start + part.shape[0]] = grad.sum(dim=2).abs()
    return out[:, 0] if squeeze else out


def input_relevance(
    model: ReIDModel | nn.Module,
    x: torch.Tensor,
    relevance_out: torch.Tensor | None = None,
    *,
    layer: str | None = None,
    family: str | None = None,
    epsilon: float = 1e-6,
    stabilizer: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LRP of ``relevance_out`` from the network output back to the input (or to a layer).

    Parameters
    ----------
    model
        Network or :class:`ReIDModel`.
    x
        ``(B, 3, H, W)`` input.
    relevance_out
        ``(B, D)`` relevance at the output; defaults to the output itself.
    layer
        If given, return the relevance at this layer's output instead of at the input.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        ``(relevance, output)``: relevance shaped like ``x`` (or the layer output) and the
        network output ``(B, D)`` computed by the canonized network.
    """
    x = x.detach().clone().requires_grad_(True)
    with lrp_mode(model, family=family, epsilon=epsilon, stabilizer=stabilizer) as net:
        names = [layer] if layer is not None else []
        with capture_layers(model, names) as found, torch.enable_grad():
            out = net(x)
        if relevance_out is None:
            relevance_out = out.detach()
        target = (
            require_spatial_output(layer, found.get(layer), model) if layer is not None else x
        )
        (rel,) = torch.autograd.grad(out, target, grad_outputs=relevance_out)
    return rel.detach(), out.detach()
