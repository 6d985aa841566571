"""How relevance rides on autograd: the two gradient conventions and the pass-through functions.

pairx runs LRP in two engines that read the backward pass differently:

* zennit's rule hooks (:mod:`pairx.lrp.zennit_engine`, the default convention): the gradient
  arriving at a tensor *is* its relevance;
* the modified-gradient engine (:mod:`pairx.lrp.gradient_engine`), inside
  :func:`gradient_convention`: the gradient is relevance / :func:`carrier` of the activation.

Modules that pass relevance through a constant gate or scale (``y = x * c``) call
:func:`signal_pass`, which builds the right graph for whichever convention is active;
:data:`GRADIENT_CONVENTION` says which one that is (for rules written as autograd functions,
e.g. :mod:`pairx.lrp.attnlrp`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = [
    "GRADIENT_CONVENTION",
    "SignalPass",
    "ValueOf",
    "carrier",
    "gradient_convention",
    "has_zero",
    "pass_ratio",
    "signal_pass",
]

GRADIENT_CONVENTION: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pairx_gradient_convention", default=False
)
"""True inside :func:`gradient_convention` (backward tensors are relevance / activation), false
in zennit's convention (backward tensors are relevance). Read it, never set it directly."""


@contextmanager
def gradient_convention() -> Iterator[None]:
    """Inside the block, :func:`signal_pass` builds graphs for the modified-gradient LRP engine
    (:mod:`pairx.lrp.gradient_engine`), whose backward tensors are relevance / activation."""
    token = GRADIENT_CONVENTION.set(True)
    try:
        yield
    finally:
        GRADIENT_CONVENTION.reset(token)


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
    if GRADIENT_CONVENTION.get():
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
