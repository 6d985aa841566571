"""Which layer a method explains at when the user names none.

* :func:`default_layers`: PAIR-X's layer, as the model recommends it (its metadata, or the
  shipped default model's choice); with ``candidates=n``, the candidate layers of the
  evaluation protocol's ``auto`` layer selection instead (every recommended layer, or ``n``
  spread over the middle of the network). The two answers differ on purpose (one layer to
  explain at, against a short list to choose from), so they are two modes of one function.
* :func:`pool_input_layer`: the module whose output feeds the global pooling, the usual layer
  of the CAM family and of Zhu et al.'s decomposition (the last convolutional feature map).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pairx.core.errors import LayerError, ModelError
from pairx.models.adapter import ReIDModel
from pairx.models.default import DEFAULT_LAYERS
from pairx.models.layers import candidate_layers, token_grid
from pairx.models.token_models import unused_patch_tokens

__all__ = ["block_layers", "default_layers", "is_block", "pool_input_layer"]


def is_block(module: nn.Module) -> bool:
    """A block or stage: a container holding a spatial (kernel > 1) convolution."""
    if next(module.children(), None) is None:
        return False
    return any(
        isinstance(m, nn.modules.conv._ConvNd) and max(m.kernel_size) > 1 for m in module.modules()
    )


def block_layers(model: ReIDModel) -> list[str]:
    """Candidate layers at block granularity with a grid of at least 2 x 2, in order.

    For a module tree: the containers holding a spatial convolution (:func:`is_block`); for a
    token model (ViT), its transformer blocks. For a flat imported graph (``torch.fx``, e.g.
    from ONNX): the outputs of residual blocks (a residual ``Sum``, or the activation right
    after it).
    """
    from torch import fx
    from zennit.layer import Sum

    infos = [i for i in candidate_layers(model) if min(i.grid) >= 2]
    net = model.net
    if token_grid(net) is not None:
        blocks = {id(b) for m in net.modules() for b in _children(getattr(m, "blocks", None))}
        return [i.name for i in infos if id(net.get_submodule(i.name)) in blocks
                and unused_patch_tokens(model, i.name) is None]
    if not isinstance(net, fx.GraphModule):
        return [i.name for i in infos if is_block(net.get_submodule(i.name))]
    ends: set[str] = set()
    for node in net.graph.nodes:
        if node.op != "call_module" or not isinstance(net.get_submodule(node.target), Sum):
            continue
        users = [u for u in node.users if u.op == "call_module"]
        after = [u for u in users if len(node.users) == 1 and not isinstance(
            net.get_submodule(u.target), Sum) and len(u.all_input_nodes) == 1]
        ends.add(str(after[0].target if after else node.target))
    return [i.name for i in infos if i.name in ends]


def _children(module: object) -> list[nn.Module]:
    return list(module.children()) if isinstance(module, nn.Sequential) else []


def default_layers(model: ReIDModel, *, candidates: int | None = None) -> list[str]:
    """The PAIR-X layer to explain at when the user names none, or the candidates to choose from.

    Parameters
    ----------
    model
        A loaded model; its metadata may recommend layers (``"default_layers"`` or
        ``"layers"``, written by the loaders and by ``pairx train``).
    candidates
        ``None``: the one layer PAIR-X explains at (see Returns). A number ``n``: the candidate
        layers of the evaluation protocol's ``auto`` layer selection
        (:func:`pairx.evaluation.layer_selection.default_candidate_layers`).

    Returns
    -------
    list[str]
        Without ``candidates``, the first recommended layer (``"default_layers"``, else
        ``"layers"``, else the default model's :data:`pairx.models.default.DEFAULT_LAYERS`).
        With ``candidates=n``: every layer of ``metadata["layers"]``, or the default model's
        :data:`~pairx.models.default.DEFAULT_LAYERS`, when known; otherwise ``n`` layers spread
        over the spatial modules whose grid is between 1/32 and 1/4 of the input size (the
        middle of the network, where the paper found the best layers), one per stage.

    Raises
    ------
    LayerError
        Without ``candidates``: the model recommends no layer; the message lists candidate
        layers.
    """
    if candidates is not None:
        return _selection_candidates(model, candidates)
    for key in ("default_layers", "layers"):
        value = model.metadata.get(key)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            return [str(value[0])]
    if model.name == "default":
        return [DEFAULT_LAYERS[0]]
    names = block_layers(model)
    shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
    raise LayerError(
        f"model {model.name!r} recommends no PAIR-X layer; pass one or more --layer NAME "
        f"(layers near the middle of the network work best). Candidates: {shown}"
    )


def _selection_candidates(model: ReIDModel, max_layers: int) -> list[str]:
    """:func:`default_layers` with ``candidates=max_layers``."""
    meta = model.metadata.get("layers") if isinstance(model.metadata, dict) else None
    if isinstance(meta, (list, tuple)) and meta:
        return [str(x) for x in meta]
    if model.name == "default":
        return list(DEFAULT_LAYERS)
    infos = candidate_layers(model)
    h_in = model.preprocessing.size[0]
    mid = [i for i in infos if h_in / 32 <= i.grid[0] <= h_in / 4] or infos
    # one module per distinct (grid, channels) stage: the last module of each run
    stages: list[str] = []
    for i, info in enumerate(mid):
        nxt = mid[i + 1] if i + 1 < len(mid) else None
        if nxt is None or (nxt.grid, nxt.channels) != (info.grid, info.channels):
            stages.append(info.name)
    if len(stages) <= max_layers:
        return stages
    idx = np.linspace(0, len(stages) - 1, max_layers).round().astype(int)
    return [stages[i] for i in sorted(set(idx.tolist()))]


def pool_input_layer(model: ReIDModel) -> str:
    """The named module whose output is the input of the global pooling.

    One forward pass of a zero image finds the first module (in execution order) that takes a
    ``(B, C, h, w)`` map with ``h * w > 1`` and returns a pooled ``(B, C)`` or
    ``(B, C, 1, 1)`` tensor; of the modules that produced exactly that input tensor, the one
    with the shortest name that is not an ``Identity`` and holds no ``Identity`` producer
    (``backbone.layer4``, not ``backbone.layer4.1.act2`` or ``backbone``).

    Raises
    ------
    ModelError
        The network has no global pooling of a spatial map.
    """
    net = model.net
    producers: dict[int, list[str]] = {}
    pooled: list[tuple[str, torch.Tensor]] = []
    kept: list[torch.Tensor] = []
    handles = []

    def hook(name: str) -> Callable[[nn.Module, tuple[object, ...], object], None]:
        def record(module: nn.Module, inputs: tuple[object, ...], output: object) -> None:
            if isinstance(output, torch.Tensor):
                kept.append(output)  # keep it alive, so that its id is not reused
                producers.setdefault(id(output), []).append(name)
            x = inputs[0] if inputs else None
            if (not pooled and isinstance(x, torch.Tensor) and x.dim() == 4
                    and x.shape[-1] * x.shape[-2] > 1 and isinstance(output, torch.Tensor)
                    and output.shape[0] == x.shape[0]
                    and (output.dim() == 2 or (output.dim() == 4
                                               and output.shape[-1] * output.shape[-2] == 1))):
                pooled.append((name, x))
        return record

    for name, module in net.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name)))
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            kept.append(net(torch.zeros(1, 3, *model.preprocessing.size, device=model.device)))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    if not pooled:
        raise ModelError(f"model {model.name!r} has no global pooling of a spatial feature map; "
                         "name the layer to explain (see `pairx layers MODEL`)")
    pool_name, x = pooled[0]
    names = producers.get(id(x), [])
    identity = {n for n in names if isinstance(net.get_submodule(n), nn.Identity)}
    good = [n for n in names if n not in identity
            and not any(i.startswith(n + ".") for i in identity)]
    if not good:
        raise ModelError(f"cannot name the module feeding {pool_name!r} in model "
                         f"{model.name!r}; pass the layer explicitly")
    return min(good, key=lambda n: (n.count("."), names.index(n)))
