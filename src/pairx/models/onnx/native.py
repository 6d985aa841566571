"""The exact route: recognise a known architecture in an ONNX graph (its weights: :mod:`.weights`).

A candidate :class:`Architecture` is built on the ``meta`` device and run once with hooks; the
order and geometry of its parameterised operations (convolutions with their kernel, stride,
padding, dilation and groups; dense layers; BatchNorms; GeM exponents) form a signature that is
compared with the ONNX graph's operators in topological order. Exporters trace the same Python
code, so a match identifies the architecture, and weights are then assigned operator by
operator (names are never needed: ``torch.onnx`` renames folded weights ``onnx::Conv_123``).

BatchNorm folded into a convolution by the exporter (``W' = W s``, ``b' = (b - mu) s + beta``)
is loaded as ``conv(W')`` followed by a BatchNorm with unit scale, zero mean, ``var + eps == 1``
and shift ``b'``: the same function, and pairx's canonizer then folds it back into exactly
``conv(W', b')``. Every canonizer and both LRP engines of the native family apply unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairx.models.architectures import ReIDNet
from pairx.models.checkpoints import config_of, timm_family
from pairx.models.export import DEFAULT_WEIGHTS
from pairx.models.onnx.graph import ARCHITECTURE_KEY, OnnxGraph

__all__ = [
    "CATALOGUE",
    "Architecture",
    "NoMatch",
    "architecture_of",
    "match_and_build",
    "match_architecture",
    "native_ops",
    "onnx_ops",
]


@dataclass(frozen=True)
class Architecture:
    """A native architecture pairx can build and canonize.

    Attributes
    ----------
    kind
        ``"reidnet"`` (a timm backbone + GeM + BatchNorm neck, :class:`ReIDNet`: the default
        model, MiewID) or ``"torchvision"`` (a torchvision ResNet).
    name
        timm backbone name or torchvision architecture name.
    kwargs
        Extra ``timm.create_model`` arguments (``ReIDNet``).
    head
        torchvision only: ``"identity"`` (pooled features), ``"batchnorm"`` or ``"linear:D"``.
    """

    kind: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    head: str = "identity"

    def build(self) -> nn.Module:
        """A freshly initialised network of this architecture (on the current default device)."""
        if self.kind == "reidnet":
            return ReIDNet(self.name, pretrained=False, **self.kwargs)
        import torchvision

        net: nn.Module = getattr(torchvision.models, self.name)(weights=None)
        features = int(net.fc.in_features)  # type: ignore[union-attr, arg-type]
        if self.head == "batchnorm":
            net.fc = nn.BatchNorm1d(features)
        elif self.head.startswith("linear:"):
            net.fc = nn.Linear(features, int(self.head.split(":")[1]))
        else:
            net.fc = nn.Identity()
        return net

    def family(self, net: nn.Module) -> str | None:
        """The canonizer family of a built network."""
        if self.kind == "torchvision":
            return "torchvision_resnet"
        return timm_family(net.backbone)  # type: ignore[arg-type]

    def describe(self) -> str:
        """``timm:NAME`` / ``torchvision:NAME`` with arguments."""
        text = f"{'timm' if self.kind == 'reidnet' else 'torchvision'}:{self.name}"
        if self.kwargs:
            text += f" {json.dumps(self.kwargs, sort_keys=True)}"
        return text + (f" ({self.head} head)" if self.kind == "torchvision" else "")

    def to_json(self) -> str:
        """For :data:`~pairx.models.onnx.graph.ARCHITECTURE_KEY` metadata."""
        return json.dumps(asdict(self), sort_keys=True)


def _catalogue() -> list[Architecture]:
    out = []
    try:
        cfg = config_of(DEFAULT_WEIGHTS)
        out.append(Architecture("reidnet", str(cfg["backbone"]), dict(cfg.get("timm_kwargs", {}))))
    except Exception:
        pass
    timm_names = [
        "efficientnetv2_rw_m", "efficientnetv2_rw_s", "efficientnetv2_rw_t",
        "tf_efficientnetv2_s", "tf_efficientnetv2_m", "tf_efficientnetv2_b0",
        "tf_efficientnetv2_b1", "tf_efficientnetv2_b2", "tf_efficientnetv2_b3",
        "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
        "tf_efficientnet_b0", "tf_efficientnet_b3", "resnet18", "resnet34", "resnet50",
        "resnet101", "resnet10t", "resnet18d", "resnet50d", "seresnet50",
        "convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano", "convnext_tiny",
        "convnext_small", "convnext_base",
    ]
    out += [Architecture("reidnet", n) for n in timm_names]
    for name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        out += [Architecture("torchvision", name, head=h) for h in ("identity", "batchnorm")]
    return out


CATALOGUE: list[Architecture] = []
"""Architectures tried, in order, for a file without :data:`ARCHITECTURE_KEY` metadata (filled
on first use; append to it to teach pairx another one)."""


class NoMatch(Exception):
    """The graph is not the architecture tried (the message says where they differ)."""


# -- signatures ---------------------------------------------------------------------------------


@dataclass
class NativeOp:
    name: str  # get_submodule name
    kind: str  # conv | bn | linear | gem
    key: tuple[Any, ...]
    after_conv: bool = False  # bn: its input is the previous conv's output


def native_ops(net: nn.Module, size: tuple[int, int]) -> list[NativeOp]:
    """Parameterised operations of ``net`` in execution order (one forward pass)."""
    ops: list[NativeOp] = []
    last_conv_out: list[Any] = [None]
    keep: list[torch.Tensor] = []

    def hook(name: str) -> Any:
        def fn(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            x = inputs[0] if inputs else None
            if isinstance(module, nn.Conv2d):
                pad = module.padding if isinstance(module.padding, tuple) else (0, 0)
                ops.append(NativeOp(name, "conv", (
                    tuple(module.weight.shape), tuple(module.stride), tuple(pad),
                    tuple(module.dilation), module.groups)))
                last_conv_out[0] = output
                keep.append(output)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                ops.append(NativeOp(name, "bn", (module.num_features,),
                                     after_conv=x is not None and x is last_conv_out[0]))
            elif isinstance(module, nn.Linear):
                ops.append(NativeOp(name, "linear", (tuple(module.weight.shape),)))
            elif isinstance(module, nn.LayerNorm):
                ops.append(NativeOp(name, "ln", (tuple(module.normalized_shape),)))
            elif type(module).__name__ == "GeM" and hasattr(module, "p"):
                ops.append(NativeOp(name, "gem", ()))
            gamma = getattr(module, "gamma", None)  # ConvNeXt's layer scale, a bare parameter
            if isinstance(gamma, nn.Parameter):
                ops.append(NativeOp(name, "gamma", (int(gamma.numel()),)))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in net.named_modules()]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, *size, device=next(net.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return ops


@dataclass
class OnnxOp:
    node: Any
    kind: str
    key: tuple[Any, ...]
    after_conv: bool = False


def onnx_attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def onnx_ops(graph: OnnxGraph) -> list[OnnxOp]:
    inits = graph.initializers
    conv_outputs: set[str] = set()
    ops: list[OnnxOp] = []
    for node in graph.model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            w = inits[node.input[1]]
            pads = list(onnx_attr(node, "pads", [0, 0, 0, 0]))
            auto_pad = onnx_attr(node, "auto_pad", b"NOTSET")
            if pads[:2] != pads[2:] or auto_pad not in (b"NOTSET", "NOTSET"):
                pad: tuple[Any, ...] = ("asymmetric", *pads)
            else:
                pad = tuple(int(p) for p in pads[:2])
            ops.append(OnnxOp(node, "conv", (
                tuple(w.shape), tuple(onnx_attr(node, "strides", [1, 1])), pad,
                tuple(onnx_attr(node, "dilations", [1, 1])), int(onnx_attr(node, "group", 1)))))
            conv_outputs.add(node.output[0])
        elif node.op_type == "BatchNormalization" and node.input[1] in inits:
            ops.append(OnnxOp(node, "bn", (int(inits[node.input[1]].shape[0]),),
                               after_conv=node.input[0] in conv_outputs))
        elif node.op_type == "Gemm" and node.input[1] in inits:
            w = inits[node.input[1]]
            shape = tuple(w.shape) if onnx_attr(node, "transB", 0) else tuple(w.shape[::-1])
            ops.append(OnnxOp(node, "linear", (shape,)))
        elif node.op_type == "MatMul" and node.input[1] in inits:
            ops.append(OnnxOp(node, "linear", (tuple(inits[node.input[1]].shape[::-1]),)))
        elif node.op_type == "Pow" and node.input[1] in inits:
            ops.append(OnnxOp(node, "pow", ()))
        elif node.op_type == "LayerNormalization" and node.input[1] in inits:
            ops.append(OnnxOp(node, "ln", (tuple(inits[node.input[1]].shape),)))
        elif node.op_type == "Mul":
            const = [n for n in node.input if n in inits and inits[n].size > 1]
            if len(const) == 1 and len(node.input) == 2:
                ops.append(OnnxOp(node, "gamma", (int(inits[const[0]].size),)))
    return ops


def _compare(native: list[NativeOp], graph_ops: list[OnnxOp], kind: str) -> None:
    a = [op.key for op in native if op.kind == kind]
    b = [op.key for op in graph_ops if op.kind == kind]
    if len(a) != len(b):
        raise NoMatch(f"{len(a)} {kind} operators in the architecture, {len(b)} in the graph")
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            raise NoMatch(f"{kind} #{i}: architecture {x}, graph {y}")


def _count_cache_file() -> Path:
    import os

    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "pairx" / "onnx-conv-counts.json"


def _cache_key(arch: Architecture) -> str:
    import timm
    import torchvision

    return f"{arch.to_json()}|timm {timm.__version__}|torchvision {torchvision.__version__}"


_CONV_COUNTS: dict[str, int] = {}


def conv_count(arch: Architecture) -> int:
    """Number of ``Conv2d`` modules of ``arch`` (built on ``meta`` once per installation; the
    counts are kept in ``~/.cache/pairx``, keyed by the timm and torchvision versions)."""
    key = _cache_key(arch)
    if not _CONV_COUNTS:
        try:
            _CONV_COUNTS.update(json.loads(_count_cache_file().read_text()))
        except (OSError, ValueError):
            pass
    if key not in _CONV_COUNTS:
        with torch.device("meta"):
            try:
                net = arch.build()
            except Exception as exc:
                raise NoMatch(f"cannot build {arch.describe()}: {exc}") from exc
        _CONV_COUNTS[key] = sum(isinstance(m, nn.Conv2d) for m in net.modules())
        try:
            path = _count_cache_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(_CONV_COUNTS))
            tmp.replace(path)
        except OSError:
            pass
    return _CONV_COUNTS[key]


def small_size(size: tuple[int, int]) -> tuple[int, int]:
    """Execution order does not depend on the input size: record it on a small input."""
    return min(size[0], 64), min(size[1], 64)


def signature_matches(arch: Architecture, graph: OnnxGraph, size: tuple[int, int]) -> nn.Module:
    """``arch`` built (randomly initialised) if ``graph`` has its operators, else
    :class:`NoMatch`. Candidates are first filtered by their number of convolutions."""
    n_conv = conv_count(arch)
    n_graph = sum(n.op_type == "Conv" for n in graph.model.graph.node)
    if n_conv != n_graph:
        raise NoMatch(f"{n_conv} convolutions in the architecture, {n_graph} in the graph")
    try:
        net = arch.build()
    except Exception as exc:
        raise NoMatch(f"cannot build {arch.describe()}: {exc}") from exc
    native = native_ops(net, small_size(size))
    graph_ops = onnx_ops(graph)
    for kind in ("conv", "linear", "ln", "gamma"):
        _compare(native, graph_ops, kind)
    n_gem = sum(op.kind == "gem" for op in native)
    if sum(op.kind == "pow" for op in graph_ops) != 2 * n_gem:
        raise NoMatch("GeM pooling differs")
    return net


def architecture_of(graph: OnnxGraph) -> Architecture | None:
    """The architecture named in the file's metadata, if any."""
    raw = graph.metadata.get(ARCHITECTURE_KEY)
    if raw is None:
        return None
    data = json.loads(raw)
    return Architecture(str(data["kind"]), str(data["name"]), dict(data.get("kwargs", {})),
                        str(data.get("head", "identity")))


def candidates(graph: OnnxGraph) -> Iterator[Architecture]:
    """The metadata's architecture first, then :data:`CATALOGUE`."""
    named = architecture_of(graph)
    if named is not None:
        yield named
    if not CATALOGUE:
        CATALOGUE.extend(_catalogue())
    yield from (a for a in CATALOGUE if a != named)


def match_and_build(
    graph: OnnxGraph, size: tuple[int, int]
) -> tuple[Architecture | None, nn.Module | None, list[str]]:
    """The first candidate whose signature matches, built, and why the others did not."""
    reasons = []
    for arch in candidates(graph):
        try:
            net = signature_matches(arch, graph, size)
        except NoMatch as exc:
            reasons.append(f"{arch.describe()}: {exc}")
            continue
        return arch, net, reasons
    return None, None, reasons


def match_architecture(
    graph: OnnxGraph, size: tuple[int, int]
) -> tuple[Architecture | None, list[str]]:
    """The first candidate whose signature matches, and why the others did not."""
    arch, _, reasons = match_and_build(graph, size)
    return arch, reasons
