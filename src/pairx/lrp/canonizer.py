"""The canonizer base: a reversible model edit that puts a network in LRP-ready form.

LRP rules are defined per module, so a network must first be put in a *canonical* form in which
every operation that redistributes relevance is a module with a rule (the replacement modules of
:mod:`pairx.lrp.rule_modules`, zennit's ``Sum`` for residual additions, ...).

Every canonizer is a model edit that is undone exactly: modules are swapped for new ones and the
originals put back, instance ``forward`` overrides and helper submodules are deleted. Use
:meth:`Canonizer.applied` (a context manager) so the edit is undone even on error. The model
families and their canonizers are in :mod:`pairx.lrp.families` (registry),
:mod:`pairx.lrp.cnn`, :mod:`pairx.lrp.vit`, :mod:`pairx.lrp.swin` and :mod:`pairx.lrp.traced`.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from pairx.core.errors import CanonizerError
from pairx.lrp.rule_modules import DetachedLayerNorm

__all__ = ["Canonizer", "ComposedCanonizer"]

_NO_ATTR = object()


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
