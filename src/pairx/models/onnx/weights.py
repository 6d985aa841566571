"""The exact route's second half: assign an ONNX graph's weights to the matched architecture.

Operators are paired kind by kind in execution order (:func:`.native.native_ops` against
:func:`.native.onnx_ops`): convolutions, BatchNorms (those the exporter kept, and those it folded
into the preceding convolution), dense layers, LayerNorms, ConvNeXt layer scales and GeM
exponents. A folded BatchNorm becomes unit scale, zero mean, ``float32(var + eps) == 1`` and the
folded shift, so the function is unchanged and the canonizer folds it back exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from pairx.models.onnx.graph import OnnxGraph
from pairx.models.onnx.native import NoMatch, OnnxOp, native_ops, onnx_attr, onnx_ops, small_size

__all__ = ["load_weights"]


def _unit_variance(eps: float) -> float:
    """A float32 ``v`` with ``float32(v + eps) == 1`` exactly."""
    v = np.float32(1.0) - np.float32(eps)
    for _ in range(8):
        total = np.float32(v) + np.float32(eps)
        if total == np.float32(1.0):
            break
        v = np.nextafter(v, np.float32(2.0) if total < 1 else np.float32(0.0), dtype=np.float32)
    return float(v)


def load_weights(net: nn.Module, graph: OnnxGraph, size: tuple[int, int]) -> None:
    """Assign the graph's weights to ``net`` (an instance of the matched architecture).

    Raises
    ------
    NoMatch
        The operators do not pair up (BatchNorms, dense layers, GeM exponents).
    """
    inits = graph.initializers
    native = native_ops(net, small_size(size))
    graph_ops = onnx_ops(graph)
    convs = [op for op in graph_ops if op.kind == "conv"]
    free_bns = [op for op in graph_ops if op.kind == "bn" and not op.after_conv]
    conv_bns = {op.node.input[0]: op for op in graph_ops if op.kind == "bn" and op.after_conv}
    linears = [op for op in graph_ops if op.kind == "linear"]
    pows = [op for op in graph_ops if op.kind == "pow"]
    norms = [op for op in graph_ops if op.kind == "ln"]
    gammas = [op for op in graph_ops if op.kind == "gamma"]
    i_conv = i_bn = i_lin = i_gem = i_ln = i_gamma = 0
    pending_bias: np.ndarray | None = None
    pending_bn: OnnxOp | None = None

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=np.float32))

    with torch.no_grad():
        for op in native:
            module = net.get_submodule(op.name)
            if op.kind == "conv":
                node = convs[i_conv].node
                i_conv += 1
                assert isinstance(module, nn.Conv2d)
                module.weight.copy_(t(inits[node.input[1]]))
                bias = inits[node.input[2]] if len(node.input) > 2 else None
                pending_bn = conv_bns.get(node.output[0])
                pending_bias = None
                if module.bias is not None:
                    module.bias.copy_(
                        t(bias) if bias is not None else torch.zeros_like(module.bias)
                    )
                elif bias is not None:
                    pending_bias = bias  # a BatchNorm folded into this convolution
            elif op.kind == "bn":
                assert isinstance(module, nn.modules.batchnorm._BatchNorm)
                source = pending_bn if op.after_conv else None
                if source is None and not op.after_conv:
                    if i_bn >= len(free_bns):
                        raise NoMatch(f"BatchNorm {op.name} has no counterpart in the graph")
                    source = free_bns[i_bn]
                    i_bn += 1
                if source is not None:
                    scale, shift, mean, var = (inits[n] for n in source.node.input[1:5])
                    module.eps = float(onnx_attr(source.node, "epsilon", 1e-5))
                    module.weight.copy_(t(scale))
                    module.bias.copy_(t(shift))
                    module.running_mean.copy_(t(mean))  # type: ignore[union-attr]
                    module.running_var.copy_(t(var))  # type: ignore[union-attr]
                else:  # folded by the exporter: identity with the folded shift
                    module.weight.fill_(1.0)
                    module.bias.copy_(t(pending_bias) if pending_bias is not None
                                      else torch.zeros_like(module.bias))
                    module.running_mean.zero_()  # type: ignore[union-attr]
                    module.running_var.fill_(_unit_variance(module.eps))  # type: ignore[union-attr]
                pending_bn, pending_bias = None, None
            elif op.kind == "linear":
                _load_linear(module, linears[i_lin].node, inits, graph)
                i_lin += 1
            elif op.kind == "ln":
                assert isinstance(module, nn.LayerNorm)
                node = norms[i_ln].node
                i_ln += 1
                module.eps = float(onnx_attr(node, "epsilon", 1e-5))
                module.weight.copy_(t(inits[node.input[1]]))
                if module.bias is not None:
                    module.bias.copy_(t(inits[node.input[2]]) if len(node.input) > 2
                                      else torch.zeros_like(module.bias))
            elif op.kind == "gamma":
                node = gammas[i_gamma].node
                i_gamma += 1
                const = next(n for n in node.input if n in inits)
                gamma: nn.Parameter = module.gamma  # type: ignore[assignment]
                gamma.copy_(t(inits[const]).reshape(gamma.shape))
            elif op.kind == "gem":
                p_node, root_node = pows[2 * i_gem].node, pows[2 * i_gem + 1].node
                i_gem += 1
                p = float(np.asarray(inits[p_node.input[1]]).reshape(-1)[0])
                root = float(np.asarray(inits[root_node.input[1]]).reshape(-1)[0])
                if abs(root * p - 1) > 1e-5:
                    raise NoMatch(f"GeM exponents {p} and {root} are not reciprocal")
                module.p.data.fill_(p)  # type: ignore[union-attr, operator, unused-ignore]
    if i_bn != len(free_bns):
        raise NoMatch(f"{len(free_bns) - i_bn} BatchNorm operators of the graph are left over")


def _load_linear(module: nn.Module, node: Any, inits: dict[str, np.ndarray],
                 graph: OnnxGraph) -> None:
    assert isinstance(module, nn.Linear)
    w = inits[node.input[1]]
    if node.op_type == "Gemm":
        weight = w if onnx_attr(node, "transB", 0) else w.T
        bias = inits.get(node.input[2]) if len(node.input) > 2 else None
    else:  # MatMul (+ Add of a constant)
        weight = w.T
        bias = None
        for other in graph.model.graph.node:
            if other.op_type == "Add" and node.output[0] in other.input:
                names = [n for n in other.input if n != node.output[0]]
                bias = inits.get(names[0]) if names else None
    module.weight.copy_(torch.from_numpy(np.array(weight, dtype=np.float32)))
    if module.bias is not None:
        module.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32))
                          if bias is not None else torch.zeros_like(module.bias))
