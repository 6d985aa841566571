"""Temporary, always-undone edits of a network that explainers need (eval mode, frozen
parameters, out-of-place activations)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["frozen_eval"]


@contextmanager
def frozen_eval(net: nn.Module, *, out_of_place: bool = False) -> Iterator[nn.Module]:
    """``net`` in eval mode with frozen parameters (and, if asked, out-of-place activations)
    for the block; each module's training and ``inplace`` flag and each parameter's
    ``requires_grad`` flag are restored on exit, normal or not."""
    modes = [(m, m.training) for m in net.modules()]
    flags = [(p, p.requires_grad) for p in net.parameters()]
    inplace: list[tuple[nn.Module, bool]] = [
        (m, bool(getattr(m, "inplace", False))) for m in net.modules()
        if out_of_place and isinstance(getattr(m, "inplace", None), bool)
    ]
    try:
        net.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        for m, _ in inplace:
            setattr(m, "inplace", False)  # noqa: B010
        yield net
    finally:
        for m, flag in inplace:
            setattr(m, "inplace", flag)  # noqa: B010
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)
