"""Check on load that the torch model computes what the ONNX file computes.

The reference is ONNX Runtime where it is installed (``pip install 'pairx[onnxruntime]'``),
otherwise onnx2torch's conversion of the same graph (an independent interpreter of its
operators). Both run on a fixed probe batch; a difference above the tolerance fails the load.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch
from torch import nn

from pairx.core.errors import ModelError
from pairx.models.onnx.graph import OnnxGraph

__all__ = ["DEFAULT_TOLERANCE", "probe_batch", "reference_embeddings", "verify"]

DEFAULT_TOLERANCE = 1e-4
"""Largest accepted ``max |e_torch - e_onnx| / max(1, max |e_onnx|)`` on the probe batch."""


def probe_batch(size: tuple[int, int], n: int = 2, seed: int = 0) -> torch.Tensor:
    """``(n, 3, H, W)`` normalised-image-like inputs (smooth noise, fixed seed)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 3, max(2, size[0] // 16), max(2, size[1] // 16), generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear",
                                             align_corners=False)
    return smooth + 0.25 * torch.randn(n, 3, *size, generator=gen)


def _run_ort(graph: OnnxGraph, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 3
    session = ort.InferenceSession(graph.model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    if graph.static_batch is not None:
        items = [session.run(None, {graph.input_name: x[i : i + 1]})[0] for i in range(len(x))]
        return np.concatenate(items)
    out: Any = session.run(None, {graph.input_name: x})[0]
    return np.asarray(out)


def reference_embeddings(graph: OnnxGraph, x: torch.Tensor) -> tuple[np.ndarray, str]:
    """Embeddings of ``x`` by the reference runtime, and its name."""
    xs = x.detach().cpu().numpy().astype(np.float32)
    if importlib.util.find_spec("onnxruntime") is not None:
        return _run_ort(graph, xs), "onnxruntime"
    from pairx.models.onnx.generic import convert_graph

    net = convert_graph(graph)
    with torch.no_grad():
        items = [net(x[i : i + 1].cpu()) for i in range(len(x))]
    return torch.cat(items).numpy(), "onnx2torch"


def verify(
    net: nn.Module, graph: OnnxGraph, size: tuple[int, int], tolerance: float = DEFAULT_TOLERANCE
) -> dict[str, object]:
    """Compare ``net`` with the ONNX graph on :func:`probe_batch`.

    Returns
    -------
    dict
        ``verified_with``, ``max_abs_diff``, ``tolerance`` (for the model's metadata).

    Raises
    ------
    ModelError
        A difference above ``tolerance`` (the message gives it), or an output of another shape.
    """
    x = probe_batch(size)
    ref, runtime = reference_embeddings(graph, x)
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    with torch.no_grad():
        ours = net(x.to(device)).detach().cpu().double().numpy()
    if ours.shape != ref.shape:
        raise ModelError(
            f"{graph.path.name}: the torch model gives embeddings of shape {ours.shape}, "
            f"{runtime} {ref.shape}"
        )
    diff = float(np.abs(ours - ref).max())
    scale = max(1.0, float(np.abs(ref).max()))
    if not np.isfinite(diff) or diff / scale > tolerance:
        raise ModelError(
            f"{graph.path.name}: the imported torch model differs from {runtime} by up to "
            f"{diff:.3g} (relative {diff / scale:.3g} > tolerance {tolerance:g}) on a probe "
            "batch; refusing to explain a different function"
        )
    return {"verified_with": runtime, "max_abs_diff": diff, "tolerance": tolerance}
