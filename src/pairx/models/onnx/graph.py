"""Reading an ONNX embedder: validation, preprocessing metadata and a normalised graph.

Everything the two import routes (:mod:`.native`, :mod:`.generic`) share: the file is checked
(an ONNX model, one image input ``(B, 3, H, W)``, one ``(B, D)`` output, an opset the ``onnx``
package knows), its preprocessing is read from the metadata pairx writes
(:data:`PREPROCESSING_KEY`) or taken from the caller, and the graph is normalised so that
constants are initializers (``Constant`` nodes, constant-only subgraphs folded with ONNX's
reference evaluator, empty optional inputs dropped). The normalised graph computes exactly the
same function.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from pairx.core.errors import ModelError
from pairx.core.files import user_path
from pairx.core.optional import require
from pairx.models.adapter import Preprocessing

__all__ = [
    "ARCHITECTURE_KEY",
    "PREPROCESSING_KEY",
    "OnnxGraph",
    "read_graph",
]

PREPROCESSING_KEY = "pairx.preprocessing"
"""Metadata key (JSON: ``size``, ``mean``, ``std``, ``resize_mode``) written by
:func:`pairx.models.onnx.export_onnx`."""

ARCHITECTURE_KEY = "pairx.architecture"
"""Metadata key (JSON of :class:`pairx.models.onnx.native.Architecture`)."""

SIZE_HINT = "pass --size H or --size H,W (API: size=)"
NORM_HINT = (
    "pass --mean R,G,B and --std R,G,B (API: mean=, std=); ImageNet statistics are "
    "--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225"
)


def _onnx() -> Any:
    return require("onnx", "onnx", "reading ONNX models")


@dataclass
class OnnxGraph:
    """A checked, normalised ONNX embedder.

    Attributes
    ----------
    path
        The file it was read from.
    model
        The normalised ``onnx.ModelProto``.
    input_name, output_name
        Names of the image input and the embedding output.
    input_shape
        ``(B, 3, H, W)`` with ``None`` for dynamic dimensions.
    output_dim
        Embedding dimension ``D`` (``None`` if dynamic).
    opset
        Version of the default (``ai.onnx``) operator set.
    metadata
        The file's ``metadata_props``.
    """

    path: Path
    model: Any
    input_name: str
    output_name: str
    input_shape: tuple[int | None, ...]
    output_dim: int | None
    opset: int
    metadata: dict[str, str]

    @cached_property
    def initializers(self) -> dict[str, np.ndarray]:
        """Every initializer as a numpy array (computed once)."""
        numpy_helper = _onnx().numpy_helper
        return {t.name: numpy_helper.to_array(t) for t in self.model.graph.initializer}

    @property
    def static_batch(self) -> int | None:
        """The batch size fixed in the graph, or ``None`` when the batch is dynamic."""
        return self.input_shape[0]

    def preprocessing(
        self,
        size: tuple[int, int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> Preprocessing:
        """The model's preprocessing: the caller's values, else the file's, else an error.

        Raises
        ------
        ModelError
            No size (dynamic height/width and none in the metadata), no normalisation, or a
            size different from the graph's fixed one.
        """
        meta = self._preprocessing_metadata()
        fixed = self.input_shape[2:]
        graph_size = (int(fixed[0]), int(fixed[1])) if None not in fixed else None  # type: ignore[arg-type]
        if size is not None and graph_size is not None and tuple(size) != graph_size:
            raise ModelError(
                f"{self.path.name} takes {graph_size[0]} x {graph_size[1]} inputs (fixed in the "
                f"graph); --size {size[0]},{size[1]} does not fit"
            )
        hw = size or graph_size or _pair(meta.get("size"))
        if hw is None:
            raise ModelError(
                f"{self.path.name} has a dynamic input size and no {PREPROCESSING_KEY} metadata; "
                + SIZE_HINT
            )
        mean3 = _triple(mean, "mean") or _triple(meta.get("mean"), "mean")
        std3 = _triple(std, "std") or _triple(meta.get("std"), "std")
        if mean3 is None or std3 is None:
            raise ModelError(
                f"{self.path.name} does not say how its inputs are normalised (no "
                f"{PREPROCESSING_KEY} metadata); " + NORM_HINT
            )
        if min(std3) <= 0:
            raise ModelError(f"--std must be positive; got {std3}")
        mode = str(meta.get("resize_mode", "stretch"))
        return Preprocessing(size=hw, mean=mean3, std=std3, resize_mode=mode)

    def _preprocessing_metadata(self) -> dict[str, Any]:
        raw = self.metadata.get(PREPROCESSING_KEY)
        if raw is None:
            return {}
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{self.path.name}: {PREPROCESSING_KEY} is not JSON ({exc})") from exc
        return meta if isinstance(meta, dict) else {}


def _pair(value: object) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def _triple(value: object, what: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ModelError(f"{what} needs three values (R,G,B); got {value!r}")
    return float(value[0]), float(value[1]), float(value[2])


def _dims(value_info: Any) -> tuple[int | None, ...] | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in t.shape.dim)


def read_graph(path: str | Path) -> OnnxGraph:
    """Load, check and normalise an ONNX embedder.

    Raises
    ------
    ModelError
        Not an ONNX file, an opset newer than the installed ``onnx`` knows, not exactly one
        image input and one output, or an output that is not ``(B, D)``.
    """
    onnx = _onnx()
    file = user_path(path)
    if not file.is_file():
        raise ModelError(f"ONNX file not found: {file}")
    try:
        model = onnx.load(str(file))
    except Exception as exc:
        raise ModelError(f"{file} is not an ONNX model ({type(exc).__name__}: {exc})") from exc
    if model.ir_version <= 0 or len(model.graph.node) == 0:
        raise ModelError(f"{file} is not an ONNX model (no graph nodes)")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    known = int(onnx.defs.onnx_opset_version())
    if opset > known:
        raise ModelError(
            f"{file.name} uses ONNX opset {opset}, newer than the installed onnx "
            f"{onnx.__version__} knows (up to {known}); upgrade onnx and onnx2torch, or export "
            f"with opset <= {known}"
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{file.name} is not a valid ONNX model: {exc}") from exc
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(
            f"{file.name} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); an "
            "embedder takes one image batch (B, 3, H, W)"
        )
    outputs = list(model.graph.output)
    if len(outputs) != 1:
        raise ModelError(
            f"{file.name} has {len(outputs)} outputs ({', '.join(o.name for o in outputs)}); "
            "pairx explains a graph with one (B, D) embedding output; export the embedding alone"
        )
    in_shape = _dims(inputs[0])
    if in_shape is None or len(in_shape) != 4 or in_shape[1] not in (3, None):
        raise ModelError(
            f"{file.name}: input {inputs[0].name!r} has shape {in_shape}; an embedder takes "
            "(B, 3, H, W) images"
        )
    out_shape = _dims(outputs[0])
    if out_shape is not None and len(out_shape) != 2:
        raise ModelError(
            f"{file.name}: output {outputs[0].name!r} has shape {out_shape}, not (B, D); pairx "
            "needs the embedding itself (add a Flatten before exporting)"
        )
    normalise(model)
    return OnnxGraph(
        path=file,
        model=model,
        input_name=inputs[0].name,
        output_name=outputs[0].name,
        input_shape=in_shape,
        output_dim=None if out_shape is None else out_shape[1],
        opset=int(opset),
        metadata={p.key: p.value for p in model.metadata_props},
    )


def normalise(model: Any) -> None:
    """Rewrite ``model`` in place into the same function with every constant an initializer.

    ``Constant`` nodes become initializers; nodes whose inputs are all constant are evaluated
    once (ONNX's reference evaluator) and replaced by their results; trailing empty optional
    inputs are dropped; ``Reshape(allowzero=1)`` with a shape free of zeros (the same thing)
    becomes ``allowzero=0``.
    """
    onnx = _onnx()
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    const: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    used_outputs = {o.name for o in graph.output}
    kept = []
    for node in graph.node:
        while node.input and node.input[-1] == "":
            node.input.pop()
        inputs_const = all(name == "" or name in const for name in node.input)
        foldable = node.op_type == "Constant" or (
            inputs_const and node.domain in ("", "ai.onnx") and node.input
            and not set(node.output) & used_outputs
        )
        if foldable:
            try:
                single = onnx.helper.make_graph(
                    [node], "fold",
                    [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
                     for n in node.input if n],
                    [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
                     for n in node.output],
                )
                fold_model = onnx.helper.make_model(single, opset_imports=model.opset_import)
                values = ReferenceEvaluator(fold_model).run(
                    None, {n: const[n] for n in node.input if n}
                )
            except Exception:
                kept.append(node)
                continue
            for name, value in zip(node.output, values, strict=True):
                array = np.asarray(value)
                const[name] = array
                graph.initializer.append(numpy_helper.from_array(array, name))
            continue
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    for node in graph.node:
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in const:
            for attr in node.attribute:
                if attr.name == "allowzero" and attr.i == 1 and 0 not in const[node.input[1]]:
                    attr.i = 0
    _drop_unused_initializers(graph)


def _drop_unused_initializers(graph: Any) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
