"""The neck canonizer that :func:`pairx.lrp.families.canonizer_for` adds after every family's.

Re-ID networks end in a pooling neck whatever their backbone: GeM pooling becomes
:class:`~pairx.lrp.rule_modules.CanonicalGeM` (power -> average -> root, each with a rule); a
``BatchNorm1d`` neck keeps the pass rule the engines give BatchNorm.
"""

from __future__ import annotations

from torch import nn

from pairx.lrp.canonizer import Canonizer
from pairx.lrp.rule_modules import CanonicalGeM
from pairx.models.architectures import GeM

__all__ = ["NeckCanonizer", "is_gem"]


class NeckCanonizer(Canonizer):
    """GeM pooling -> :class:`CanonicalGeM`; ``BatchNorm1d`` necks keep the pass rule."""

    def edit(self, net: nn.Module) -> None:
        for parent in list(net.modules()):
            for name, child in list(parent._modules.items()):
                if is_gem(child):
                    assert child is not None
                    self.swap(parent, name, CanonicalGeM(child))


def is_gem(module: nn.Module | None) -> bool:
    """Whether ``module`` is a GeM pooling: pairx's own, or another code base's ``GeM`` with a
    ``p`` (MiewID and others define their own with the same fields)."""
    try:
        if isinstance(module, GeM):
            return True
    except ImportError:  # pragma: no cover
        pass
    return type(module).__name__ == "GeM" and hasattr(module, "p")
