"""LRP for networks that are ``torch.fx`` graphs of one-operation modules (family ``onnx_graph``).

A graph imported from ONNX arrives rewritten into the modules of :mod:`pairx.models.graph_ops`
(:mod:`pairx.models.onnx.generic`), each computing one named operation. This module gives them
their rules and registers the graph family:

* :func:`graph_layer_map`: ``ConstantOp``, ``Clamp`` and ``ErfGelu`` pass relevance through (as
  BatchNorm's affine map and ``nn.GELU`` do); ``GraphAvgPool`` takes the sum rule (``Norm``),
  ``GraphGeMMean`` the same with a 1e-30 stabilizer (as the native ``GeMMean``); the types a
  user registered with :func:`pairx.models.graph_ops.register_graph_rule` take their rule;
* :class:`GraphCanonizer` (the family's canonizer, undone exactly): each BatchNorm folded into
  the convolution that feeds it (found by data flow, not module order), every
  ``GatedProduct``'s gate made a constant (:func:`~pairx.lrp.convention.signal_pass`), and
  LayerNorms over the last axis given a detached standard deviation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn
from zennit.layer import Sum

from pairx.lrp.canonizer import Canonizer, ComposedCanonizer
from pairx.lrp.convention import signal_pass
from pairx.lrp.families import family_canonizer
from pairx.lrp.rule_modules import DetachedLayerNorm, merge_conv_bn
from pairx.models.graph_ops import (
    Clamp,
    ConstantOp,
    ErfGelu,
    GatedProduct,
    GraphAvgPool,
    GraphGeMMean,
    registered_graph_rules,
)
from pairx.models.onnx.generic import FAMILY, node_module

__all__ = ["GraphCanonizer", "graph_layer_map"]


def graph_layer_map(epsilon: float, stabilizer: float) -> list[tuple[tuple[type, ...], Any]]:
    """zennit layer-map entries for the graph modules and the user's registered types."""
    from zennit.rules import Epsilon, Norm, Pass

    rules = {"pass": Pass(), "norm": Norm(stabilizer=stabilizer), "epsilon": Epsilon(epsilon)}
    out: list[tuple[tuple[type, ...], Any]] = [
        ((ConstantOp, Clamp, ErfGelu), Pass()),
        ((GraphGeMMean,), Norm(stabilizer=1e-30)),
        ((GraphAvgPool,), Norm(stabilizer=stabilizer)),
    ]
    for cls, rule in registered_graph_rules().items():
        if rule in rules:
            out.append(((cls,), rules[rule]))
    return out


def _signal_only_product(self: GatedProduct, x: torch.Tensor, gate: torch.Tensor
                         ) -> torch.Tensor:
    """``GatedProduct`` with its gate a constant: the value ``x * gate``, all relevance to ``x``.
    ``(B, C, h, w) * (B, C, 1, 1) -> (B, C, h, w)``."""
    return signal_pass(x, x * gate.detach())


class GraphCanonizer(Canonizer):
    """BatchNorm after a convolution folded into it (by data flow); gates made signal-only."""

    def edit(self, net: nn.Module) -> None:
        if not isinstance(net, fx.GraphModule):
            return
        for node in net.graph.nodes:
            bn = node_module(net, node)
            if not isinstance(bn, nn.BatchNorm2d) or not node.args:
                continue
            src = node.args[0]
            if not isinstance(src, fx.Node) or len(src.users) != 1:
                continue
            conv = node_module(net, src)
            if not isinstance(conv, nn.Conv2d):
                continue
            conv_parent, _, conv_name = str(src.target).rpartition(".")
            bn_parent, _, bn_name = str(node.target).rpartition(".")
            self.swap(net.get_submodule(conv_parent), conv_name, merge_conv_bn(conv, bn))
            self.swap(net.get_submodule(bn_parent), bn_name, nn.Identity())
        for module in net.modules():
            if isinstance(module, GatedProduct):
                self.set_attr(module, "signal_only", True)
                self.override_forward(module, _signal_only_product)
        for node in net.graph.nodes:  # LayerNorm over the last axis: standard deviation detached
            norm = node_module(net, node)
            if type(norm) is nn.LayerNorm and len(norm.normalized_shape) == 1:
                parent, _, name = str(node.target).rpartition(".")
                self.swap(net.get_submodule(parent), name, DetachedLayerNorm(norm, -1))


def _is_imported_graph(net: nn.Module) -> bool:
    return isinstance(net, fx.GraphModule) and any(
        isinstance(m, (Sum, ConstantOp, GatedProduct, GraphAvgPool)) for m in net.modules()
    )


# -- the family (its detection order: pairx.lrp.families.DETECTION_ORDER) ---------------------


@family_canonizer(FAMILY, _is_imported_graph, "a graph imported from ONNX (generic route)",
                  overwrite=True)
def _graph_family() -> Canonizer:
    return ComposedCanonizer([GraphCanonizer()])
