"""Canonical modules for networks imported as graphs (``torch.fx``, e.g. from ONNX).

An imported graph spells operations as generic nodes (``Mul``, ``Add``, ``Pow``, ``Clip``) whose
LRP rule depends on what they mean. :mod:`pairx.models.onnx.generic` rewrites them into these
modules, each with one rule, and :func:`graph_layer_map` adds the rules to pairx's LRP
composite (both engines read it):

* :class:`ConstantOp` (``x op c`` with a constant ``c``) and :class:`Clamp`: pass-through, as for
  BatchNorm's affine map;
* :class:`GraphAvgPool`: ``Norm`` (sum rule), :class:`GraphGeMMean` the same with a tiny
  stabilizer, like :class:`pairx.lrp.rule_modules.GeMMean`;
* :class:`GatedProduct` ``x * g`` with a broadcast gate ``g`` (squeeze-excitation): the gate
  is a constant under LRP (signal-only), switched on by the family canonizer;
* residual sums use zennit's ``Sum`` (``Norm``), SiLU ``nn.SiLU`` (pass-through).

:func:`register_graph_rule` lets a user give another module type a rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pairx.lrp.convention import signal_pass

__all__ = [
    "GRAPH_RULE_KINDS",
    "Clamp",
    "ConstantOp",
    "ErfGelu",
    "GatedProduct",
    "GraphAvgPool",
    "GraphGeMMean",
    "graph_layer_map",
    "graph_rule_of",
    "register_graph_rule",
]

GRAPH_RULE_KINDS = ("pass", "norm", "epsilon", "structural")
"""Rules :func:`register_graph_rule` accepts: pass-through, sum rule, epsilon rule, or
``"structural"`` (moves values without arithmetic: reshape, slice, concatenation, zero padding;
the plain gradient already keeps relevance)."""

_USER_RULES: dict[type, str] = {}


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
    """``clamp(x, low, high)`` (rule: pass-through, as for :class:`~pairx.lrp.rule_modules.Power`'s
    clamp in GeM)."""

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
    """The average inside a GeM pattern (``Norm`` with a tiny stabilizer, like ``GeMMean``)."""


class GatedProduct(nn.Module):
    """``x * g`` with a gate ``g`` broadcast over positions (e.g. squeeze-excitation).

    With :attr:`signal_only` set (by the LRP canonizer) the gate is a constant: the value is
    unchanged and all relevance flows to ``x``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.signal_only = False

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w) * (B, C, 1, 1) -> (B, C, h, w)``."""
        if self.signal_only:
            return signal_pass(x, x * gate.detach())
        return x * gate


def register_graph_rule(module_type: type, rule: str) -> None:
    """Give modules of ``module_type`` (as found in an imported graph) an LRP rule.

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


def graph_layer_map(epsilon: float, stabilizer: float) -> list[tuple[tuple[type, ...], Any]]:
    """zennit layer-map entries for these modules and the user's registered types."""
    from zennit.rules import Epsilon, Norm, Pass

    rules = {"pass": Pass(), "norm": Norm(stabilizer=stabilizer), "epsilon": Epsilon(epsilon)}
    out: list[tuple[tuple[type, ...], Any]] = [
        ((ConstantOp, Clamp, ErfGelu), Pass()),
        ((GraphGeMMean,), Norm(stabilizer=1e-30)),
        ((GraphAvgPool,), Norm(stabilizer=stabilizer)),
    ]
    for cls, rule in _USER_RULES.items():
        if rule in rules:
            out.append(((cls,), rules[rule]))
    return out
