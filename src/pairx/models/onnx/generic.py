"""The generic route: any ONNX graph as a ``torch.fx`` graph of modules with one operation each.

``onnx2torch`` converts the graph; pairx then rewrites it, keeping the function (checked against
the file on load) and making each node's meaning explicit with the modules of
:mod:`pairx.models.graph_ops`, each of which has one LRP rule (:mod:`pairx.lrp.traced`):

* ``Add`` of two activations -> zennit ``Sum`` over the stacked operands (residual sum rule);
* ``x * sigmoid(x)`` -> ``nn.SiLU``; ``x * g`` with ``g`` broadcast over positions ->
  :class:`GatedProduct` (signal-only under LRP); ``x op c`` with a constant -> :class:`ConstantOp`;
* ``Pow`` with a constant exponent -> ``Power``, ``Clip`` -> :class:`Clamp`, an average pool after
  a power (GeM) -> :class:`GraphGeMMean`, other global pools -> :class:`GraphAvgPool`.

Any other node that depends on the image and has no rule (a softmax, a product of two
activations, ...) is refused with its name. The ``onnx_graph`` family's canonizer
(:class:`pairx.lrp.traced.GraphCanonizer`) folds each BatchNorm into the convolution feeding it
and switches the gates to signal-only, reversibly, when LRP runs.
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from zennit.layer import Sum
from zennit.types import Activation, AvgPool, BatchNorm, Convolution

from pairx.core.errors import ModelError
from pairx.core.optional import require
from pairx.models.graph_ops import (
    Clamp,
    ConstantOp,
    ErfGelu,
    GatedProduct,
    GraphAvgPool,
    GraphGeMMean,
    Power,
    graph_rule_of,
)
from pairx.models.onnx.graph import OnnxGraph

__all__ = ["FAMILY", "convert_for_lrp", "convert_graph", "node_module"]

FAMILY = "onnx_graph"
"""Canonizer family of networks imported by this route (registered by :mod:`pairx.lrp.traced`)."""

RULE_HINT = (
    "pairx cannot explain this graph faithfully. If the operator has a sound LRP rule, register "
    "it: pairx.models.graph_ops.register_graph_rule(type(module), 'pass'|'norm'|'epsilon'|"
    "'structural'), then load again"
)

_STRUCTURAL = (
    "OnnxReshape", "Flatten", "OnnxFlatten", "OnnxSqueezeStaticAxes", "OnnxSqueezeDynamicAxes",
    "OnnxUnsqueezeStaticAxes", "OnnxUnsqueezeDynamicAxes", "OnnxTranspose", "OnnxConcat",
    "Identity", "Dropout", "MaxPool2d", "OnnxSliceV9", "OnnxSlice", "OnnxSplit", "OnnxSplit13",
)
_OPS = {torch.add: "Add", torch.sub: "Sub", torch.mul: "Mul", torch.div: "Div"}


def convert_graph(graph: OnnxGraph) -> fx.GraphModule:
    """``onnx2torch`` conversion of the normalised graph (a fixed batch of 1 made dynamic).

    Raises
    ------
    ModelError
        An operator or opset the converter does not support (the message names it).
    """
    onnx2torch = require("onnx2torch", "onnx", "converting ONNX graphs")
    model = copy.deepcopy(graph.model)
    if graph.static_batch == 1:
        _free_batch_in_reshapes(model)
    try:
        gm: fx.GraphModule = onnx2torch.convert(model)
    except NotImplementedError as exc:
        raise ModelError(
            f"{graph.path.name} (opset {graph.opset}): onnx2torch cannot convert it: {exc}. "
            "Export with an opset and operators onnx2torch supports, or use an architecture "
            "pairx recognises natively"
        ) from exc
    return gm.eval()


def _free_batch_in_reshapes(model: Any) -> None:
    """``Reshape`` to ``[1, ...]`` in a batch-1 graph -> ``[0, ...]`` (copy the batch size)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]]).copy()
        if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
            shape[0] = 0
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))


class _Recorder(fx.Interpreter):
    """Runs the graph once; keeps every node's output shape and the values of constants."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.dynamic: set[fx.Node] = set()
        self.values: dict[fx.Node, Any] = {}
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        deps = n.all_input_nodes
        if n.op == "placeholder" or any(d in self.dynamic for d in deps):
            self.dynamic.add(n)
        else:
            self.values[n] = out
        if isinstance(out, torch.Tensor):
            self.shapes[n] = tuple(out.shape)
        return out


def node_module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module that ``node`` of ``gm`` calls, or ``None`` for a node that calls none."""
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def convert_for_lrp(graph: OnnxGraph, size: tuple[int, int]) -> fx.GraphModule:
    """Convert and rewrite the graph so every image-dependent node has an LRP rule.

    Raises
    ------
    ModelError
        A node without a rule (named, with how to register one), or a conversion failure.
    """
    gm = convert_graph(graph)
    rec = _Recorder(gm)
    with torch.no_grad():
        rec.run(torch.zeros(1, 3, *size))
    for node in list(gm.graph.nodes):  # products and sums first: they decide what is a gate
        module = node_module(gm, node)
        if node in rec.dynamic and type(module).__name__ == "OnnxBinaryMathOperation":
            _rewrite_binary(gm, node, module, rec, strict=False)  # type: ignore[arg-type]
    path = _relevance_path(gm)
    for node in list(gm.graph.nodes):
        if node in path and node in rec.dynamic and node.op not in ("placeholder", "output"):
            _rewrite(gm, node, rec)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()


def _relevance_path(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes relevance flows through: everything the output depends on, except through the gate
    operand of a :class:`GatedProduct` (a constant under LRP)."""
    seen: set[fx.Node] = set()
    stack = [n for n in gm.graph.nodes if n.op == "output"]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        inputs = node.all_input_nodes
        if isinstance(node_module(gm, node), GatedProduct):
            inputs = [node.args[0]]  # type: ignore[list-item, unused-ignore]
        stack.extend(inputs)
    return seen


def _refuse(node: fx.Node, what: str) -> ModelError:
    return ModelError(f"node {node.name!r} ({what}) has no LRP rule; {RULE_HINT}")


def _rewrite(gm: fx.GraphModule, node: fx.Node, rec: _Recorder) -> None:
    module = node_module(gm, node)
    if module is None:
        if node.op == "call_function" and node.target in (operator.getitem, torch.stack):
            return
        raise _refuse(node, f"{node.op} {getattr(node.target, '__name__', node.target)}")
    kind = type(module).__name__
    if graph_rule_of(module) is not None or isinstance(
        module, (Convolution, nn.Linear, BatchNorm, Activation, nn.SiLU, nn.Sigmoid, nn.ReLU6,
                 nn.GELU, AvgPool, Sum, Power, ConstantOp, Clamp, GraphAvgPool, GatedProduct,
                 ErfGelu)
    ) or (type(module) is nn.LayerNorm and len(module.normalized_shape) == 1):
        if isinstance(module, AvgPool) and _after_power(gm, node):
            _replace_module(gm, node, GraphGeMMean(module), rec)
        return
    if kind in _STRUCTURAL:
        return
    if kind == "OnnxPadStatic":
        if getattr(module, "mode", "constant") != "constant" or float(
            getattr(module, "constant_value", 0.0) or 0.0
        ) != 0.0:
            raise _refuse(node, "Pad other than with zeros")
        return
    if kind.startswith("OnnxGlobalAveragePool"):
        cls = GraphGeMMean if _after_power(gm, node) else GraphAvgPool
        _replace_module(gm, node, cls(module), rec)
        return
    if kind == "OnnxClip":
        _replace_module(gm, node, Clamp(module.min_val, module.max_val), rec)  # type: ignore[arg-type]
        return
    if kind == "OnnxPow":
        base, exponent = node.args[0], node.args[1]
        if exponent in rec.dynamic:
            raise _refuse(node, "Pow with an image-dependent exponent")
        value = rec.values.get(exponent) if isinstance(exponent, fx.Node) else exponent
        e = torch.as_tensor(value).reshape(-1)
        if e.numel() != 1:
            raise _refuse(node, "Pow with a non-scalar exponent")
        _replace_call(gm, node, Power(float(e[0])), (base,), rec)
        return
    if kind == "OnnxBinaryMathOperation":
        _rewrite_binary(gm, node, module, rec, strict=True)
        return
    if kind == "OnnxReduceStaticAxes" and _spatial_mean(module):
        cls = GraphGeMMean if _after_power(gm, node) else GraphAvgPool
        _replace_module(gm, node, cls(module), rec)
        return
    raise _refuse(node, kind)


def _spatial_mean(module: nn.Module) -> bool:
    axes = [int(a) % 4 for a in (getattr(module, "axes", None) or [])]
    op = str(getattr(module, "operation_type", ""))
    return op == "ReduceMean" and bool(axes) and set(axes) <= {2, 3}


def _after_power(gm: fx.GraphModule, node: fx.Node) -> bool:
    src = node.args[0] if node.args else None
    return isinstance(src, fx.Node) and isinstance(node_module(gm, src), Power | _OnnxPow())


def _OnnxPow() -> type:
    from onnx2torch.node_converters.pow import OnnxPow

    cls: type = OnnxPow
    return cls


def _replace_module(gm: fx.GraphModule, node: fx.Node, new: nn.Module, rec: _Recorder) -> None:
    _replace_call(gm, node, new, tuple(node.args[:1]), rec)


def _replace_call(gm: fx.GraphModule, node: fx.Node, new: nn.Module, args: tuple[Any, ...],
                  rec: _Recorder) -> None:
    """Replace module node ``node`` by ``new`` under the same name (the ONNX node's name stays
    the layer name), called with ``args``."""
    name = str(node.target)
    gm.add_submodule(name, new)
    with gm.graph.inserting_after(node):
        repl = gm.graph.call_module(name, args)
    node.replace_all_uses_with(repl)
    rec.dynamic.add(repl)
    if node in rec.shapes:
        rec.shapes[repl] = rec.shapes[node]
    gm.graph.erase_node(node)
    repl.name = str(node.name)


def _rewrite_binary(gm: fx.GraphModule, node: fx.Node, module: nn.Module, rec: _Recorder, *,
                    strict: bool) -> None:
    """Rewrite an Add/Sub/Mul/Div node; without ``strict`` leave what has no rule (it may lie
    off the relevance path) for the second pass to refuse."""
    fn: Any = module.math_op_function
    name = str(getattr(fn, "__name__", "?"))
    op = _OPS.get(fn) or {"_onnx_div": "Div"}.get(name, name)
    a, b = node.args[0], node.args[1]
    dyn_a, dyn_b = a in rec.dynamic, b in rec.dynamic
    if dyn_a and dyn_b:
        if op == "Add":
            with gm.graph.inserting_before(node):
                stacked = gm.graph.call_function(torch.stack, ([a, b],), {"dim": -1})
            rec.dynamic.add(stacked)
            _replace_call(gm, node, Sum(), (stacked,), rec)
            return
        if op == "Mul":
            gelu = _erf_gelu(gm, a, b)
            if gelu is not None:
                _replace_call(gm, node, gelu[1], (gelu[0],), rec)
                return
            for x, s in ((a, b), (b, a)):
                sig = node_module(gm, s)  # type: ignore[arg-type]
                if isinstance(sig, nn.Sigmoid) and s.args[0] is x and len(s.users) == 1:  # type: ignore[union-attr]
                    _replace_call(gm, node, nn.SiLU(), (x,), rec)
                    gm.graph.erase_node(s)  # type: ignore[arg-type]
                    return
            sa, sb = rec.shapes.get(a), rec.shapes.get(b)  # type: ignore[arg-type]
            for x, g, sx, sg in ((a, b, sa, sb), (b, a, sb, sa)):
                if sx and sg and len(sx) == len(sg) == 4 and sg[2:] == (1, 1) and sx[2:] != (1, 1):
                    _replace_call(gm, node, GatedProduct(), (x, g), rec)
                    return
            if strict:
                raise _refuse(node, "Mul of two image-dependent tensors, neither SiLU nor a gate")
            return
        if strict:
            raise _refuse(node, f"{op} of two image-dependent tensors")
        return
    const_node = b if dyn_a else a
    value = rec.values.get(const_node) if isinstance(const_node, fx.Node) else const_node
    const = torch.as_tensor(np.asarray(value.detach().numpy() if isinstance(value, torch.Tensor)
                                       else value), dtype=torch.float32)
    _replace_call(gm, node, ConstantOp(fn, const, const_first=dyn_b, op_name=str(op)),
                  (a if dyn_a else b,), rec)


def _scalar(module: nn.Module | None, op: str) -> float | None:
    if not isinstance(module, ConstantOp) or module.op_name != op or module.const_first:
        return None
    const: torch.Tensor = module.const  # type: ignore[assignment]
    return float(const.reshape(-1)[0]) if const.numel() == 1 else None


def _erf_gelu(gm: fx.GraphModule, a: Any, b: Any) -> tuple[fx.Node, ErfGelu] | None:
    """``x * (erf(x / c) + s)`` (either operand order): the exporters' exact GELU."""
    for x, t in ((a, b), (b, a)):
        if not isinstance(t, fx.Node) or not isinstance(x, fx.Node):
            continue
        shift = _scalar(node_module(gm, t), "Add")
        erf = t.args[0] if shift is not None and t.args else None
        if not isinstance(erf, fx.Node) or type(node_module(gm, erf)).__name__ != "OnnxErf":
            continue
        div = erf.args[0] if erf.args else None
        divisor = _scalar(node_module(gm, div), "Div") if isinstance(div, fx.Node) else None
        if divisor is not None and div.args and div.args[0] is x:  # type: ignore[union-attr]
            return x, ErfGelu(divisor, shift)  # type: ignore[arg-type]
    return None
