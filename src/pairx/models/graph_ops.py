"""Modules that each compute one named operation, which imported graphs are rewritten into.

An imported graph (``torch.fx``, e.g. from ONNX by :mod:`pairx.models.onnx.generic`) spells
operations as generic nodes (``Mul``, ``Add``, ``Pow``, ``Clip``) whose meaning depends on their
operands. The ONNX import rewrites them into these modules, so that every operation of the
network says what it is, and LRP (:mod:`pairx.lrp.traced`) can give each one rule:

* :class:`ConstantOp` (``x op c`` with a constant ``c``), :class:`Clamp`, :class:`Power`,
  :class:`ErfGelu`: elementwise maps of one activation (LRP: pass-through);
* :class:`GraphAvgPool`: an average over positions (LRP: the sum rule), :class:`GraphGeMMean`
  the average inside a GeM pattern (the same with a tiny stabilizer);
* :class:`GatedProduct`: ``x * g`` with a gate ``g`` broadcast over positions
  (squeeze-excitation; under LRP the gate is a constant);
* residual sums use zennit's ``Sum``, SiLU ``nn.SiLU``.

:class:`Power` is also the power step of the native GeM's canonical form
(:class:`pairx.lrp.rule_modules.CanonicalGeM`). :func:`register_graph_rule` names the LRP rule
of another module type, which the import then keeps as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "GRAPH_RULE_KINDS",
    "Clamp",
    "ConstantOp",
    "ErfGelu",
    "GatedProduct",
    "GraphAvgPool",
    "GraphGeMMean",
    "Power",
    "graph_rule_of",
    "register_graph_rule",
    "registered_graph_rules",
]

GRAPH_RULE_KINDS = ("pass", "norm", "epsilon", "structural")
"""Rules :func:`register_graph_rule` accepts: pass-through, sum rule, epsilon rule, or
``"structural"`` (moves values without arithmetic: reshape, slice, concatenation, zero padding;
the plain gradient already keeps relevance)."""

_USER_RULES: dict[type, str] = {}


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


class ConstantOp(nn.Module):
    """``op(x, c)`` or ``op(c, x)`` with a constant tensor ``c`` (rule: pass-through)."""

    def __init__(self, fn: Callable[..., torch.Tensor], const: torch.Tensor, const_first: bool,
                 op_name: str) -> None:
        super().__init__()
        self.fn = fn
        self.register_buffer("const", const.detach().clone())
        self.const_first = const_first
        self.op_name = op_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same shape as the broadcast of ``x`` and ``c``."""
        c: torch.Tensor = self.const  # type: ignore[assignment]
        return self.fn(c, x) if self.const_first else self.fn(x, c)

    def extra_repr(self) -> str:
        const: torch.Tensor = self.const  # type: ignore[assignment]
        return f"{self.op_name}, const shape={tuple(const.shape)}"


class Clamp(nn.Module):
    """``clamp(x, low, high)`` (rule: pass-through, as for :class:`Power`'s clamp in GeM)."""

    def __init__(self, low: float | None, high: float | None) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same shape in and out."""
        return torch.clamp(x, self.low, self.high)


class ErfGelu(nn.Module):
    """``x * (shift + erf(x / divisor))``: exact GELU as exporters spell it (with the outer
    ``* 0.5`` left to a :class:`ConstantOp`); rule: pass-through, as for ``nn.GELU``."""

    def __init__(self, divisor: float, shift: float) -> None:
        super().__init__()
        self.divisor, self.shift = divisor, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same shape in and out."""
        return x * (torch.erf(x / self.divisor) + self.shift)


class GraphAvgPool(nn.Module):
    """An average pooling of the graph, wrapped so it gets the sum rule (``Norm``)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.__dict__["inner"] = inner  # not a child: it must not get a rule of its own

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w) -> (B, C, h', w')``."""
        out: torch.Tensor = self.__dict__["inner"](x)
        return out

    def extra_repr(self) -> str:
        return repr(self.__dict__["inner"])


class GraphGeMMean(GraphAvgPool):
    """The average inside a GeM pattern (``Norm`` with a tiny stabilizer, like the native
    :class:`pairx.lrp.rule_modules.GeMMean`)."""


class GatedProduct(nn.Module):
    """``x * g`` with a gate ``g`` broadcast over positions (e.g. squeeze-excitation).

    :attr:`signal_only` is set while the LRP canonizer of imported graphs
    (:class:`pairx.lrp.traced.GraphCanonizer`) treats the gate as a constant; it then also
    gives the module a forward whose value is unchanged and whose relevance all flows to ``x``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.signal_only = False

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w) * (B, C, 1, 1) -> (B, C, h, w)``."""
        return x * gate


def register_graph_rule(module_type: type, rule: str) -> None:
    """Give modules of ``module_type`` (as found in an imported graph) an LRP rule.

    The ONNX import then keeps such modules as they are, and both LRP engines give them the
    rule (:func:`pairx.lrp.traced.graph_layer_map`).

    Parameters
    ----------
    module_type
        The module class (e.g. an ``onnx2torch`` converter's module).
    rule
        One of :data:`GRAPH_RULE_KINDS`.
    """
    if rule not in GRAPH_RULE_KINDS:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(GRAPH_RULE_KINDS)}")
    _USER_RULES[module_type] = rule


def graph_rule_of(module: nn.Module) -> str | None:
    """The rule a user registered for ``module``'s type, if any."""
    for cls, rule in _USER_RULES.items():
        if isinstance(module, cls):
            return rule
    return None


def registered_graph_rules() -> dict[type, str]:
    """The module types a user gave a rule, in the order of registration (a copy)."""
    return dict(_USER_RULES)
