"""Explain ONNX-exported re-ID models: ``pairx.load_model("onnx:PATH")``.

ONNX Runtime has no autograd and no model structure, so LRP cannot run on it. pairx imports
the graph into torch by one of two routes and checks the result against the file on load:

* **exact route** (:mod:`.native`): the graph is recognised as an architecture pairx already
  canonizes (the metadata pairx writes names it; otherwise the catalogue of known timm and
  torchvision architectures is matched operator by operator) and its weights are loaded into
  that native architecture, so every canonizer and both LRP engines apply unchanged;
* **generic route** (:mod:`.generic`): any other graph is converted with ``onnx2torch`` into a
  ``torch.fx`` graph and canonized on the graph, or refused with the node that has no LRP rule.

Verification (:mod:`.verify`): the torch model's embeddings must equal ONNX Runtime's (or, without
it, onnx2torch's) on a probe batch within :data:`.verify.DEFAULT_TOLERANCE`.

Needs the ``onnx`` extra (``pip install 'pairx[onnx]'``); ``pairx[onnxruntime]`` adds the
reference runtime.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pairx.core.errors import ModelError, PairxError
from pairx.models.adapter import ReIDModel
from pairx.models.onnx.graph import ARCHITECTURE_KEY, PREPROCESSING_KEY, read_graph
from pairx.models.onnx.native import Architecture, NoMatch, match_and_build
from pairx.models.onnx.verify import DEFAULT_TOLERANCE, verify
from pairx.models.onnx.weights import load_weights

__all__ = ["ROUTES", "export_onnx", "load_onnx"]

ROUTES = ("auto", "native", "generic")
"""``route`` values of :func:`load_onnx`."""

DOMAIN_KEY = "pairx.domain"
CALIBRATION_KEY = "pairx.calibration"
"""Metadata key: the exported model's similarity calibration (``pairx calibrate`` JSON)."""
LAYERS_KEY = "pairx.layers"
"""Metadata key: JSON list of the model's recommended PAIR-X layers (native names)."""


def _file_layers(metadata: dict[str, str]) -> list[str]:
    try:
        value = json.loads(metadata.get(LAYERS_KEY, "[]"))
    except json.JSONDecodeError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _scope_prefix(native: str) -> str:
    """TorchScript's scope path of native module ``native`` as onnx2torch spells node names:
    an indexed child is named after its container (``blocks.3`` -> ``blocks/blocks.3``), and
    dots become slashes (``backbone.blocks.3`` -> ``backbone/blocks/blocks/3/``)."""
    parts: list[str] = []
    for part in native.split("."):
        parts.append(f"{parts[-1]}.{part}" if part.isdigit() and parts else part)
    return "/".join(parts).replace(".", "/") + "/"


def _graph_layer(net: torch.nn.Module, native: str) -> str | None:
    """The graph module that ends the scope of native layer ``native`` (its output)."""
    from torch import fx

    if not isinstance(net, fx.GraphModule):
        return None
    prefix = _scope_prefix(native)
    found = [str(n.target) for n in net.graph.nodes
             if n.op == "call_module" and str(n.target).startswith(prefix)]
    return found[-1] if found else None


def load_onnx(
    path: str | Path,
    *,
    size: tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    route: str = "auto",
    device: str | torch.device = "cpu",
    tolerance: float = DEFAULT_TOLERANCE,
) -> ReIDModel:
    """Import an ONNX embedder as an explainable :class:`ReIDModel`.

    Parameters
    ----------
    path
        The ``.onnx`` file: one ``(B, 3, H, W)`` input, one ``(B, D)`` output.
    size, mean, std
        Preprocessing; each defaults to the file's metadata (and ``size`` to the graph's fixed
        input size). A missing one is an error that names the option.
    route
        ``"auto"`` (exact route when the architecture is recognised, else generic),
        ``"native"`` (exact route or an error saying why not) or ``"generic"``.
    device
        Where to put the network.
    tolerance
        Verification tolerance (see :func:`pairx.models.onnx.verify.verify`).

    Returns
    -------
    ReIDModel
        ``name="onnx:PATH"``; ``metadata`` records the route, the architecture, the verifying
        runtime and the measured difference.

    Raises
    ------
    ModelError
        Bad file, missing preprocessing, an operator without an LRP rule (generic route), or a
        torch model that does not reproduce the file.
    """
    if route not in ROUTES:
        raise ModelError(f"unknown ONNX route {route!r}; choose one of {', '.join(ROUTES)}")
    start = time.perf_counter()
    graph = read_graph(path)
    preprocessing = graph.preprocessing(size, mean, std)
    hw = preprocessing.size
    meta: dict[str, Any] = {"onnx": str(graph.path), "weights": str(graph.path),
                            "opset": graph.opset, "random_weights": False}
    if graph.metadata.get(DOMAIN_KEY):
        meta["domain"] = graph.metadata[DOMAIN_KEY]
    net: torch.nn.Module | None = None
    family: str | None = None
    if route in ("auto", "native"):
        arch, built, reasons = match_and_build(graph, hw)
        if arch is not None and built is not None:
            try:
                net = built
                load_weights(net, graph, hw)
                family = arch.family(net)
                meta.update(route="native", architecture=arch.describe())
                layers = _file_layers(graph.metadata)
                if not layers and arch.kind == "reidnet" and arch.name == "efficientnetv2_rw_m":
                    from pairx.models.miewid import MIEWID_DEFAULT_LAYERS

                    layers = list(MIEWID_DEFAULT_LAYERS)
                if layers:
                    meta["default_layers"] = layers
            except NoMatch as exc:
                reasons.append(f"{arch.describe()}: {exc}")
                net = None
        if net is None and route == "native":
            raise ModelError(
                f"{graph.path.name} is not an architecture pairx knows natively ("
                + "; ".join(reasons[:3]) + (" ..." if len(reasons) > 3 else "")
                + "); load it with pairx.models.onnx.load_onnx(path, route='generic')"
            )
        if net is None:
            meta["native_mismatch"] = reasons[:3]
    if net is None:
        from pairx.models.onnx.generic import FAMILY, convert_for_lrp

        net = convert_for_lrp(graph, hw)
        family = FAMILY
        meta.update(route="generic", architecture="onnx2torch graph")
        translated = [_graph_layer(net, name) for name in _file_layers(graph.metadata)]
        if any(translated):
            meta["default_layers"] = [t for t in translated if t]
    net.eval()
    meta.update(verify(net, graph, hw, tolerance))
    model = ReIDModel(net=net, preprocessing=preprocessing, name=f"onnx:{graph.path}",
                      family=family, metadata=meta)
    calibration = _carried_calibration(graph.metadata, model)
    if calibration is not None:
        meta["calibration_file"] = calibration
    meta["load_seconds"] = round(time.perf_counter() - start, 3)
    net.to(device)
    return model


def _carried_calibration(metadata: dict[str, str], model: ReIDModel) -> Any:
    """The calibration written by :func:`export_onnx`, re-keyed to the imported weights.

    The file computes the exported model's similarities (checked on load up to float rounding),
    so its calibration holds; only the weight digest (of another representation of the same
    weights, e.g. with BatchNorm folded) is replaced, and ``source`` says so.
    """
    raw = metadata.get(CALIBRATION_KEY)
    if raw is None:
        return None
    from dataclasses import replace

    from pairx.core.calibration import SimilarityCalibration
    from pairx.models.provenance import weight_digest

    try:
        cal = SimilarityCalibration.from_dict(json.loads(raw))
    except (ValueError, PairxError):
        return None  # a damaged calibration is dropped, never trusted
    return replace(cal, model_digest=weight_digest(model),  # cached in the model: computed once
                   source=f"{cal.source}; carried in the ONNX file (exported from weights "
                          f"{cal.model_digest[:19]}...)")


def _architecture_of_model(model: ReIDModel) -> Architecture | None:
    net = model.net
    if hasattr(net, "backbone_name") and hasattr(net, "timm_kwargs"):
        kwargs: Any = net.timm_kwargs
        return Architecture("reidnet", str(net.backbone_name), dict(kwargs))
    if model.name.startswith("torchvision:"):
        neck = str(model.metadata.get("neck", "identity"))
        fc = getattr(net, "fc", None)
        head = f"linear:{fc.out_features}" if isinstance(fc, torch.nn.Linear) else neck
        return Architecture("torchvision", model.name.split(":", 1)[1], head=head)
    return None


def export_onnx(
    model: ReIDModel, path: str | Path, *, opset: int = 17, dynamo: bool = False,
    dynamic_batch: bool | None = None,
) -> Path:
    """Export ``model`` to ONNX with pairx's metadata (preprocessing, architecture, domain).

    Parameters
    ----------
    model
        The model to export (its network is put in ``eval()`` mode).
    path
        The ``.onnx`` file to write.
    opset
        ONNX opset version.
    dynamo
        Use torch's ``dynamo`` exporter (needs ``onnxscript``) instead of the TorchScript one.
    dynamic_batch
        Leave the batch dimension dynamic; default: with the ``dynamo`` exporter only (the
        TorchScript exporter cannot keep GeM's whole-map pooling kernel static otherwise). pairx
        reads batch-1 files as well, feeding them one image at a time where needed.
    """
    if dynamic_batch is None:
        dynamic_batch = dynamo
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pre = model.preprocessing
    x = torch.zeros(1, 3, *pre.size, device=model.device)
    model.net.eval()
    axes = {"images": {0: "batch"}, "embedding": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs: dict[str, Any] = {"dynamic_axes": axes} if not dynamo else {}
        if dynamo and dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        torch.onnx.export(model.net, (x,), str(out), input_names=["images"],
                          output_names=["embedding"], opset_version=opset, dynamo=dynamo,
                          **kwargs)
    import onnx

    proto = onnx.load(str(out))
    props = {
        PREPROCESSING_KEY: json.dumps({"size": list(pre.size), "mean": list(pre.mean),
                                       "std": list(pre.std), "resize_mode": pre.resize_mode}),
    }
    from pairx.core.errors import LayerError
    from pairx.models.layer_choice import default_layers

    try:
        props[LAYERS_KEY] = json.dumps(default_layers(model))
    except LayerError:
        pass
    arch = _architecture_of_model(model)
    if arch is not None:
        props[ARCHITECTURE_KEY] = arch.to_json()
    if model.metadata.get("domain"):
        props[DOMAIN_KEY] = str(model.metadata["domain"])
    cal_file = model.metadata.get("calibration_file")
    if isinstance(cal_file, (str, Path)) and Path(cal_file).is_file():
        props[CALIBRATION_KEY] = Path(cal_file).read_text()
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(out))
    return out
