"""PAIR-X's LRP forward passes: one image's (or one batch's) canonized forward pass, kept with
its graph for the backward passes, and the images' activations below the lowest explained layer
shared across passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from pairx.core.errors import InputError, ModelError
from pairx.explainers.base import PreparedImage
from pairx.lrp.gradient_engine import position_pixel_relevance
from pairx.lrp.zennit_engine import capture_layers
from pairx.models.adapter import ReIDModel
from pairx.models.layers import require_spatial_output

__all__ = ["LRPForward", "LRPGraph", "PairResults", "Relevances", "dtype_of", "embeddings"]

Relevances = Sequence[torch.Tensor | None]
"""A pair side's relevance at each explained layer: ``(1, C, h, w)``, ``None`` where the layer
does not influence the embedding."""

PairResults = Callable[[PreparedImage, PreparedImage, float, Relevances, Relevances,
                        dict[str, torch.Tensor], dict[str, torch.Tensor],
                        Callable[[str, torch.Tensor], torch.Tensor]], object]
"""Builds a pair's explanations from ``(a, b, similarity, relevance_a, relevance_b, features_a,
features_b, pixels)``, ``pixels(layer, positions)`` mapping ``(K, 2, 2)`` grid positions to
``(K, 2, H, W)`` pixel relevance."""

DUMMY_SIDE = 64
"""Side of the crop that runs below the cut when a pass has no image it has not seen."""


@dataclass
class LRPGraph:
    """A live LRP forward graph of one image or batch (valid only inside the LRP mode)."""

    x: torch.Tensor  # (B, 3, H, W), requires grad when pixel maps are wanted
    out: torch.Tensor  # (B, D)
    layers: dict[str, torch.Tensor]  # name -> (B, C, h, w) with graph
    maps: dict[tuple[str, int, int], torch.Tensor] = field(default_factory=dict)
    """Pixel maps computed so far, by ``(layer, col, row)``: a map depends on the image and the
    position only, not on the partner, so a query's maps are shared by all its candidates."""
    relevance: dict[tuple[int, int], tuple[float, list[torch.Tensor | None]]] = field(
        default_factory=dict)
    """Similarity and relevance at the layers computed ahead, by ``(pair, side)`` (side 0: the
    image is the pair's first, 1: its second)."""

    def pixel_maps(self, name: str, positions: torch.Tensor, method: str) -> torch.Tensor:
        """``(K, 1, H, W)`` pixel maps of ``(K, 1, 2)`` positions, each computed once."""
        keys = [(name, int(c), int(r)) for c, r in positions[:, 0].tolist()]
        if not keys:
            return torch.zeros(0, 1, *self.x.shape[-2:], dtype=self.x.dtype)
        first: dict[tuple[str, int, int], int] = {}
        for i, k in enumerate(keys):
            if k not in self.maps:
                first.setdefault(k, i)
        todo = list(first.values())
        if todo:
            new = position_pixel_relevance(self.layers[name], self.x, positions[todo],
                                           method=method)
            for j, i in enumerate(todo):
                self.maps[keys[i]] = new[j]
        return torch.stack([self.maps[k] for k in keys])


class LRPForward:
    """LRP forward passes of one explainer's model at its layers.

    zennit's rule hooks store each module's last input, so with the zennit engine both images
    of a pair must share one forward pass; the gradient engine's graphs are independent, so it
    builds one per image and reuses it across pairs. Without pixel maps the graph starts at the
    lowest explained layer: the forward pass below it records nothing and runs only for images
    it has not seen before, once each; their output at the cut is kept with the image
    (:attr:`PreparedImage.activations`) for later passes and gathered with the kept ones into
    one slot per state (same values; ``x`` gets no gradient). So in an evaluation, where a
    gallery image meets many queries, its layers below the cut run once, not once per pass. A
    new image runs below the cut in a batch of at least two (a batch of one may round
    differently). A model that uses a tensor from below the cut above it cannot be gathered
    that way: the pass is rerun without sharing, and sharing stops for this model.

    Parameters
    ----------
    model
        The explained model (names and shapes in error messages).
    layers
        The explained layers.
    family
        The canonizer family in use (part of the key the kept activations are stored under).
    """

    def __init__(self, model: ReIDModel, layers: Sequence[str], family: str | None) -> None:
        self.model = model
        self.layers = list(layers)
        self.family = family
        self.dedupe = True  # False once the model cannot share images below the cut
        self.token = object()  # tags this explainer's activations kept with each image
        self.small_dummy = True  # False once the model needs its input size below the cut

    def __call__(
        self, net: nn.Module, model: ReIDModel, states: Sequence[PreparedImage],
        *, to_pixels: bool = True,
    ) -> LRPGraph:
        """One LRP forward pass of ``states`` as one batch (graph kept for backward passes).

        Parameters
        ----------
        net
            The canonized network of ``model`` (inside its LRP mode).
        model
            The model ``net`` belongs to (the explained model or its reduced-precision copy).
        states
            The images, each ``(1, 3, H, W)``, all of one size.
        to_pixels
            Record the graph from the input (pixel maps), else from the lowest layer.
        """
        shapes = {tuple(st.x.shape) for st in states}
        if len(shapes) > 1:
            raise InputError(
                f"both images must have the same input size; got {sorted(shapes)}"
            )
        dtype = dtype_of(model)
        gather, small = None, False
        if not to_pixels and self.dedupe and len(states) >= 2:
            gather, x, small = self._cut_gather(states, dtype)
        else:
            x = torch.cat([st.x for st in states]).detach().to(dtype).requires_grad_(to_pixels)
        try:
            with capture_layers(model, self.layers, cut=not to_pixels, gather=gather) as found, \
                    torch.enable_grad():
                out = net(x)
        except RuntimeError:
            if gather is None:
                raise
            if small:
                self.small_dummy = False  # a model that needs its input size below the cut
            else:  # a tensor from below the cut is used above it: no sharing for this model
                self.dedupe = False
            return self(net, model, states, to_pixels=to_pixels)
        if not to_pixels and not all(isinstance(t, torch.Tensor) and t.requires_grad
                                     for t in found.values()):
            # a layer that is not downstream of the first one: record the whole pass
            return self(net, model, states, to_pixels=True)
        out = embeddings(self.model, out)
        layers = {n: require_spatial_output(n, found.get(n), self.model) for n in self.layers}
        for i, st in enumerate(states):
            st.embedding = out[i : i + 1].detach().float()
        return LRPGraph(x=x, out=out, layers=layers)

    def _cut_gather(
        self, states: Sequence[PreparedImage], dtype: torch.dtype
    ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, bool]:
        """What runs below the cut in this pass, ``x`` ``(n, 3, H', W')``, the function that
        turns its cut output into the batch of all ``states`` (kept activations of the others),
        and whether ``x`` is the small stand-in.

        ``x`` holds the images not seen before, at least two of them (a batch of one rounds
        differently); with none, two small crops run below the cut for nothing (their output
        is not used). Its batch never fits ``states`` unless it is ``states``, so a model that
        uses a tensor from below the cut above it fails instead of mixing images up.
        """
        tag = (self.token, tuple(self.layers), self.family)
        unique = list({id(st): st for st in states}.values())
        new = [st for st in unique if tag not in st.activations]
        if new:
            feed = new * 2 if len(new) == 1 else new
            x = torch.cat([st.x for st in feed])
            same = [id(f) for f in feed] == [id(st) for st in states]
        else:
            side = DUMMY_SIDE if self.small_dummy else None
            x = unique[0].x[..., :side, :side].expand(2, -1, -1, -1)
            same = False
        if len(x) == len(states) and not same:
            x = torch.cat([x, x[-1:]])

        def gather(out: torch.Tensor) -> torch.Tensor:
            for j, st in enumerate(new):
                st.activations[tag] = out[j].clone()
            return torch.stack([st.activations[tag] for st in states])

        return gather, x.detach().to(dtype), not new and self.small_dummy


def dtype_of(model: ReIDModel) -> torch.dtype:
    """The number format of the model's parameters (float32 for a model without any)."""
    return next((p.dtype for p in model.net.parameters()), torch.float32)


def embeddings(model: ReIDModel, out: object) -> torch.Tensor:
    """``out`` if it is a ``(B, D)`` tensor of embeddings.

    Raises
    ------
    ModelError
        The model returned something else.
    """
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ModelError(
            f"model {model.name!r} must return (B, D) embeddings; got "
            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
        )
    return out
