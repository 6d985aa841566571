"""PAIR-X: pairwise matching of intermediate representations for explainable re-identification.

For a pair of images and a layer: per-position descriptors of the layer's activation are matched
(brute-force L2, cross-checked); LRP relevance at the layer starts from the cosine similarity
(``cos * d(cos)/d(embedding)``); a match's relevance is the product of the two positions'
channel-summed absolute relevances; the top matches are propagated back to pixels by LRP from
the activation masked to the matched position.

Cost: with the default ``engine="gradient"`` (:mod:`pairx.lrp.gradient_engine`) the rules
are linear surrogates built once in an image's LRP forward pass, so that graph serves every
backward pass of every pair the image takes part in: one LRP backward from the embedding to the
layer per pair and image, and one backward pass per pixel map (one transposed operation per
layer below the explained one). :meth:`PairX.explain_layers_pairs` keeps such graphs alive
across the pairs of one call (a query against ``k`` candidates: ``k + 1`` forward passes).
``engine="zennit"`` runs zennit's rule hooks, which store each module's last input (so both
images of a pair share one forward pass) and recompute every rule's modified forward in every
backward pass (same numbers, slower with pixel maps, cheaper forward without them).
Preprocessed inputs and embeddings are cached per image across calls (keyed by path string or an
explicit key); LRP graphs cannot outlive a call, because the model must be restored.
"""

from __future__ import annotations

import bisect
import copy
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pairx.core.calibration import SimilarityCalibration
from pairx.core.errors import InputError, LayerError, ModelError
from pairx.core.results import Matches, PairExplanation
from pairx.explainers.base import ImageInput, PairExplainer, PreparedImage
from pairx.explainers.matching import (
    feature_descriptors,
    grid_centres,
    mutual_nearest_neighbours,
)
from pairx.lrp.gradient_engine import (
    gradient_lrp_mode,
    layer_relevance,
    position_pixel_relevance,
)
from pairx.lrp.zennit_engine import (
    capture_layers,
    lrp_mode,
    pixel_relevance,
    seed_relevance,
)
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.layers import get_layer, require_spatial_output, token_grid

__all__ = ["ENGINES", "PairX", "explain"]

_Image = PreparedImage
_DUMMY_SIDE = 64
"""Side of the crop that runs below the cut when a pass has no image it has not seen."""
_EAGER_PAIRS = 16
"""Gradient engine, one layer: an image's relevance for at most this many of its pairs is
computed as soon as its graph is built, so that the part of the graph above the layer can be
freed at once; an image in more pairs of one call keeps its whole graph while it is needed."""


@dataclass
class _Graph:
    """A live LRP forward graph of one image (valid only inside ``lrp_mode``)."""

    x: torch.Tensor  # (1, 3, H, W), requires grad
    out: torch.Tensor  # (1, D)
    layers: dict[str, torch.Tensor]  # name -> (1, C, h, w) with graph
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


ENGINES = ("auto", "gradient", "zennit")
"""LRP engines of :class:`PairX`."""

PRECISIONS = ("float32", "bfloat16")
"""Number formats of the gradient engine's forward and backward passes (:class:`PairX`)."""

PIXEL_METHODS = ("auto", "cone", "dense")
"""How the gradient engine computes pixel maps (:func:`position_pixel_relevance`)."""


class PairX(PairExplainer):
    """PAIR-X explainer bound to a model and a set of layers.

    :meth:`explain` and :meth:`explain_pairs` (the common explainer interface) return the
    explanation at the first layer; :meth:`explain_layers` and :meth:`explain_layers_pairs`
    return one per layer.

    Parameters
    ----------
    model
        The embedding model (a :class:`ReIDModel`, or an ``nn.Module`` with ``preprocessing``).
    layers
        ``get_submodule`` names (relative to ``model.net``) of spatial layers to explain at.
    n_matches
        Number of top matches meant to be drawn as lines (all matches are returned).
    n_pixel_maps
        Number of top matches propagated to pixels; ``0`` skips pixel-level LRP.
    cache_size
        Number of images whose inputs and embeddings are kept (LRU).
    family
        Canonizer family, overriding ``model.family`` and detection.
    pixel_chunk
        ``engine="zennit"`` only: pixel maps per batched backward pass (``1``: one pass per map).
    engine
        ``"gradient"``: pairx's modified-gradient LRP (its forward pass costs about 2-3x a plain
        one, then nothing is recomputed per backward pass); ``"zennit"``: zennit's rule hooks
        (cheap forward, every backward pass recomputes the rules); ``"auto"`` (default):
        ``"gradient"`` when pixel maps are asked for, else ``"zennit"``. All give the same
        relevances (float rounding).
    max_graphs
        Gradient engine: single-image LRP graphs kept alive at once within an
        :meth:`explain_layers_pairs` call (at least 2; each holds what the backward passes need
        of one image: about 0.9 GB for a MiewID-sized model at 440 px, 0.4 GB once the part
        above a single explained layer is freed).
    pairs_per_pass
        zennit engine without pixel maps (the evaluation protocol): pairs whose images share
        one LRP forward and one backward pass (default 8: batches of up to 16 images above
        the lowest layer, each distinct image once below it; with the default model about
        1.3x faster than one pair per pass). The relevances are those of one pair per pass to
        float rounding: bit for bit on the CPU measured with 2 threads; with 1 thread a batch
        of 16 differs from a batch of 2 in the last bits (``pairs_per_pass=4`` stays exact
        there).
    allow_untrained
        Explain a model that looks untrained (built without weights, or BatchNorm statistics
        never updated) instead of refusing it; every explanation then carries
        :data:`pairx.models.provenance.RANDOM_WEIGHTS_STAMP` in its ``warnings``.
    calibration
        A :class:`pairx.metrics.calibration.SimilarityCalibration` of this model, or the path of
        one; default: the one shipped beside the model's weights, if any. Each explanation then
        says where its similarity falls (``context``).
    pixel_method
        Gradient engine: ``"cone"`` computes all pixel maps of an image in one backward pass
        restricted to each match's receptive-field cone (:mod:`pairx.lrp.cone`);
        ``"dense"`` runs one full backward pass per map; ``"auto"`` (default) uses the cone
        where the model's graph allows it (never for token models: after one global attention
        layer every cone is the whole image). The maps are the same to float rounding.
    precision
        Gradient engine: ``"float32"`` (default, exact) or ``"bfloat16"`` (opt-in: a bfloat16
        copy of the model runs the LRP forward and every backward pass, about twice as fast
        on CPUs with AVX-512 BF16 and on GPUs; its agreement with float32 is measured per
        family by ``benchmarks/bench_precision.py``). Similarities and maps are returned as
        float32 either way, and the setting is recorded in each explanation's ``options``.

    Raises
    ------
    ModelError
        The model looks untrained (and ``allow_untrained`` is not set), or the calibration
        belongs to other weights.
    """

    name = "pairx"

    def __init__(
        self,
        model: ReIDModel | nn.Module,
        layers: Sequence[str] | str,
        *,
        n_matches: int = 20,
        n_pixel_maps: int = 10,
        cache_size: int = 512,
        family: str | None = None,
        pixel_chunk: int = 1,
        engine: str = "auto",
        max_graphs: int = 2,
        pairs_per_pass: int = 8,
        allow_untrained: bool = False,
        calibration: SimilarityCalibration | str | os.PathLike[str] | None = None,
        target: str = "cosine",
        preprocessing: Preprocessing | None = None,
        match_filter: str | None = None,
        ransac_threshold: float = 16.0,
        pixel_method: str = "auto",
        precision: str = "float32",
    ) -> None:
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got "
                             f"{precision!r}")
        if precision != "float32" and engine == "zennit":
            raise InputError(f"precision {precision!r} needs engine='gradient' (or 'auto')")
        self.precision = precision
        self._reduced: ReIDModel | None = None
        if pixel_method not in PIXEL_METHODS:
            raise InputError(f"pixel_method must be one of {', '.join(PIXEL_METHODS)}; got "
                             f"{pixel_method!r}")
        self.pixel_method = pixel_method
        tokens = token_grid(model) is not None
        self._pixel_method = "dense" if pixel_method == "auto" and tokens else pixel_method
        if match_filter not in (None, "ransac"):
            raise InputError(f"match_filter must be None or 'ransac'; got {match_filter!r}")
        self.match_filter = match_filter
        self.ransac_threshold = float(ransac_threshold)
        if isinstance(layers, str):
            layers = [layers]
        self.layers = list(dict.fromkeys(layers))
        if not self.layers:
            raise InputError("give at least one layer name")
        if n_matches < 0 or n_pixel_maps < 0:
            raise InputError("n_matches and n_pixel_maps must be >= 0")
        if engine not in ENGINES:
            raise InputError(f"unknown LRP engine {engine!r}; choose one of {', '.join(ENGINES)}")
        if int(max_graphs) < 2:
            raise InputError(f"max_graphs must be at least 2 (one pair); got {max_graphs}")
        super().__init__(model, target=target, preprocessing=preprocessing,
                         cache_size=cache_size, allow_untrained=allow_untrained,
                         calibration=calibration)
        for name in self.layers:
            get_layer(self.model, name)
            if tokens:
                from pairx.models.token_models import unused_patch_tokens

                why = unused_patch_tokens(self.model, name)
                if why:
                    raise LayerError(why)
        self.n_matches = int(n_matches)
        self.n_pixel_maps = int(n_pixel_maps)
        self.family = family
        self.pixel_chunk = max(1, int(pixel_chunk))
        self.engine = engine
        self.max_graphs = int(max_graphs)
        if int(pairs_per_pass) < 1:
            raise InputError(f"pairs_per_pass must be at least 1; got {pairs_per_pass}")
        self.pairs_per_pass = int(pairs_per_pass)
        self._dedupe = True  # False once the model cannot share images below the cut
        self._cut_token = object()  # tags this explainer's activations kept with each image
        self._small_dummy = True  # False once the model needs its input size below the cut

    def options(self) -> dict[str, object]:
        """PAIR-X's settings, recorded in every explanation."""
        out: dict[str, object] = {
            "n_matches": self.n_matches, "n_pixel_maps": self.n_pixel_maps,
            "engine": self.engine, "layers": list(self.layers), "target": self.target}
        if self.match_filter is not None:
            out.update(match_filter=self.match_filter, ransac_threshold=self.ransac_threshold)
        if self.precision != "float32":
            out["precision"] = self.precision
        if self.family is not None:  # an explicit canonizer family, e.g. an attention rule
            out["family"] = self.family
        return out

    def _lrp_model(self) -> ReIDModel:
        """The model the gradient engine runs: the model itself, or its reduced-precision copy
        (made once)."""
        if self.precision == "float32":
            return self.model
        if self._reduced is None:
            self._reduced = copy.deepcopy(self.model)
            self._reduced.net.to(getattr(torch, self.precision))
        return self._reduced

    def _forward(
        self, net: torch.nn.Module, model: ReIDModel, states: Sequence[_Image],
        *, to_pixels: bool = True,
    ) -> _Graph:
        """One LRP forward pass of ``states`` as one batch (graph kept for backward passes).

        zennit's rule hooks store each module's last input, so with ``engine="zennit"`` both
        images of a pair must share one forward pass; the gradient engine's graphs are
        independent, so it builds one per image and reuses it across pairs. With
        ``to_pixels=False`` (no pixel maps) the graph starts at the lowest explained layer:
        the forward pass below it records nothing and runs only for images it has not seen
        before, once each; their output at the cut is kept with the image
        (:attr:`PreparedImage.activations`) for later passes and gathered with the kept ones
        into one slot per state (same values; ``x`` gets no gradient). So in an evaluation,
        where a gallery image meets many queries, its layers below the cut run once, not once
        per pass. A new image runs below the cut in a batch of at least two (a batch of one
        may round differently). A model that uses a tensor from below the cut above it cannot
        be gathered that way: the pass is rerun without sharing, and the engine stops trying.
        """
        shapes = {tuple(st.x.shape) for st in states}
        if len(shapes) > 1:
            raise InputError(
                f"both images must have the same input size; got {sorted(shapes)}"
            )
        dtype = _dtype_of(model)
        gather, small = None, False
        if not to_pixels and self._dedupe and len(states) >= 2:
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
                self._small_dummy = False  # a model that needs its input size below the cut
            else:  # a tensor from below the cut is used above it: no sharing for this model
                self._dedupe = False
            return self._forward(net, model, states, to_pixels=to_pixels)
        if not to_pixels and not all(isinstance(t, torch.Tensor) and t.requires_grad
                                     for t in found.values()):
            # a layer that is not downstream of the first one: record the whole pass
            return self._forward(net, model, states, to_pixels=True)
        out = _embeddings(self.model, out)
        layers = {n: require_spatial_output(n, found.get(n), self.model) for n in self.layers}
        for i, st in enumerate(states):
            st.embedding = out[i : i + 1].detach().float()
        return _Graph(x=x, out=out, layers=layers)

    def _cut_gather(
        self, states: Sequence[_Image], dtype: torch.dtype
    ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, bool]:
        """What runs below the cut in this pass, ``x`` ``(n, 3, H', W')``, the function that
        turns its cut output into the batch of all ``states`` (kept activations of the others),
        and whether ``x`` is the small stand-in.

        ``x`` holds the images not seen before, at least two of them (a batch of one rounds
        differently); with none, two small crops run below the cut for nothing (their output
        is not used). Its batch never fits ``states`` unless it is ``states``, so a model that
        uses a tensor from below the cut above it fails instead of mixing images up.
        """
        tag = (self._cut_token, tuple(self.layers), self.family)
        unique = list({id(st): st for st in states}.values())
        new = [st for st in unique if tag not in st.activations]
        if new:
            feed = new * 2 if len(new) == 1 else new
            x = torch.cat([st.x for st in feed])
            same = [id(f) for f in feed] == [id(st) for st in states]
        else:
            side = _DUMMY_SIDE if self._small_dummy else None
            x = unique[0].x[..., :side, :side].expand(2, -1, -1, -1)
            same = False
        if len(x) == len(states) and not same:
            x = torch.cat([x, x[-1:]])

        def gather(out: torch.Tensor) -> torch.Tensor:
            for j, st in enumerate(new):
                st.activations[tag] = out[j].clone()
            return torch.stack([st.activations[tag] for st in states])

        return gather, x.detach().to(dtype), not new and self._small_dummy

    # -- public API ------------------------------------------------------------------------
    def explain_layers(
        self,
        image_a: ImageInput,
        image_b: ImageInput,
        *,
        key_a: Hashable | None = None,
        key_b: Hashable | None = None,
        n_pixel_maps: int | None = None,
    ) -> dict[str, PairExplanation]:
        """Explain one pair at every layer.

        Parameters
        ----------
        image_a, image_b
            Paths, PIL images, ``(H, W, 3)`` uint8 arrays, or preprocessed ``(1, 3, H, W)``.
        key_a, key_b
            Cache keys for non-path inputs.
        n_pixel_maps
            Overrides the instance's ``n_pixel_maps`` for this call.

        Returns
        -------
        dict[str, PairExplanation]
            One explanation per layer.
        """
        return self.explain_layers_pairs([(image_a, image_b)], keys=[(key_a, key_b)],
                                         n_pixel_maps=n_pixel_maps, progress=False)[0]

    def explain_layers_pairs(
        self,
        pairs: Sequence[tuple[ImageInput, ImageInput]],
        *,
        keys: Sequence[tuple[Hashable | None, Hashable | None]] | None = None,
        n_pixel_maps: int | None = None,
        progress: bool = True,
        on_result: Callable[[int, dict[str, PairExplanation]], None] | None = None,
    ) -> list[dict[str, PairExplanation]]:
        """Explain many pairs in one call, at every layer.

        ``on_result(i, explanations)`` (optional) is called as soon as pair ``i`` is done, in
        order, so that a caller can show or store each result while the rest are computed (the
        review app streams a query's candidates this way). An exception it raises stops the
        call (the model is restored all the same).

        The model is canonized once for the whole call and always restored afterwards. With
        the gradient engine each image's LRP forward graph is built once and reused by every
        pair it takes part in while it is live (at most ``max_graphs`` graphs at a time; the
        one needed again latest is dropped first), so a query explained against ``k``
        candidates costs ``k + 1`` forward passes instead of ``2k``, and each of the query's
        pixel maps is computed once per matched position however many candidates match there.
        Images are the same when they have the same path or key. With ``engine="zennit"`` each
        pair is one forward pass of both images.
        """
        states = self._prepare_pairs(pairs, keys)
        return self._layers_prepared(states, n_pixel_maps, progress, on_result)

    def _explain_prepared(
        self, pairs: Sequence[tuple[PreparedImage, PreparedImage]], *, progress: bool
    ) -> list[PairExplanation]:
        first = self.layers[0]
        return [r[first] for r in self._layers_prepared(pairs, None, progress)]

    def _explain(self, a: PreparedImage, b: PreparedImage) -> PairExplanation:
        return self._explain_prepared([(a, b)], progress=False)[0]

    def _layers_prepared(
        self,
        states: Sequence[tuple[PreparedImage, PreparedImage]],
        n_pixel_maps: int | None,
        progress: bool,
        on_result: Callable[[int, dict[str, PairExplanation]], None] | None = None,
    ) -> list[dict[str, PairExplanation]]:
        n_pix = self.n_pixel_maps if n_pixel_maps is None else int(n_pixel_maps)
        engine = self.engine
        if engine == "auto":
            engine = "gradient" if n_pix > 0 else "zennit"
        results: list[dict[str, PairExplanation]] = []
        if engine == "gradient":
            bar = tqdm(states, desc="PAIR-X", disable=not progress or len(states) < 2)
            lrp_model = self._lrp_model()
            with gradient_lrp_mode(lrp_model, family=self.family) as net:
                graphs = _GraphPool(lambda st: self._forward(net, lrp_model, [st]), states,
                                    self.max_graphs)
                outputs = _Outputs(net, lrp_model)
                for i, (sa, sb) in enumerate(bar):
                    results.append(self._explain_separate(i, sa, sb, graphs, outputs, n_pix))
                    graphs.release(i)
                    if on_result is not None:
                        on_result(i, results[-1])
        else:
            bar = tqdm(total=len(states), desc="PAIR-X", disable=not progress or len(states) < 2)
            # without pixel maps several pairs share one forward and one backward pass (the
            # graph starts at the lowest layer); with pixel maps each pair has its own graph
            per_pass = self.pairs_per_pass if n_pix == 0 else 1
            with lrp_mode(self.model, family=self.family) as net:
                for group in _pair_groups(states, per_pass):
                    flat = [st for i in group for st in states[i]]
                    graph = self._forward(net, self.model, flat, to_pixels=n_pix > 0)
                    for i, expl in zip(group, self._explain_batched(
                            [states[i] for i in group], graph, n_pix), strict=True):
                        results.append(expl)
                        bar.update(1)
                        if on_result is not None:
                            on_result(i, expl)
                    del graph
            bar.close()
        return results

    def _explain_separate(
        self, i: int, sa: _Image, sb: _Image, graphs: _GraphPool, outputs: _Outputs,
        n_pix: int,
    ) -> dict[str, PairExplanation]:
        """Pair ``i`` over two single-image graphs of the gradient engine.

        An image's relevance at the layers is computed as soon as its graph exists, the
        partner's output taken from the partner's graph or, where that graph is not built yet,
        from a forward pass without a graph (the same values, a fraction of the cost). With one
        explained layer, the backward pass to it then frees the part of the graph above the
        layer (the pixel maps need only the part below) once no later pair needs it: an image
        in up to :data:`_EAGER_PAIRS` pairs of the call (a query and its candidates) gets its
        relevance for all of them at once. So at most one whole graph is alive at a time (on
        a MiewID-sized model about 0.5 GB less than two).
        """
        first, second = (sb, sa) if graphs.is_live(sa) and not graphs.is_live(sb) else (sa, sb)
        for st in (first, second):
            g = graphs.get(i, st)
            outputs.remember(st, g)
            self._relevance_ahead(i, st, g, graphs, outputs)
        ga, gb = graphs.get(i, sa), graphs.get(i, sb)
        cos, rel_a = ga.relevance.pop((i, 0))
        _, rel_b = gb.relevance.pop((i, 1))

        def pixels(name: str, positions: torch.Tensor) -> torch.Tensor:
            pix_a = ga.pixel_maps(name, positions[:, :1], self._pixel_method)
            pix_b = gb.pixel_maps(name, positions[:, 1:], self._pixel_method)
            return torch.cat([pix_a, pix_b], dim=1)

        return self._explanations(
            sa, sb, cos, rel_a, rel_b, ga.layers, gb.layers, pixels, n_pix
        )

    def _relevance_ahead(self, i: int, st: _Image, g: _Graph, graphs: _GraphPool,
                         outputs: _Outputs) -> None:
        """Fill ``g.relevance`` for pair ``i`` and, where the rest of the graph above the layer
        can then go, for every later pair of ``st`` (see :meth:`_explain_separate`)."""
        todo = [(j, side) for j in graphs.uses_from(i, st)
                for side, other in enumerate(graphs.pairs[j]) if other is st
                and (j, side) not in g.relevance]
        if not todo:
            return
        single = len(self.layers) == 1
        now = (todo if single and len(todo) <= _EAGER_PAIRS
               else [(j, side) for j, side in todo if j == i])
        free = single and now == todo  # no later pair needs the graph above the layer
        targets = list(g.layers.values())
        for n, (j, side) in enumerate(now):
            pa, pb = graphs.pairs[j]
            a_out = g.out.detach() if side == 0 else outputs.of(pa)
            b_out = g.out.detach() if side == 1 else outputs.of(pb)
            cos, r_a, r_b = seed_relevance(self.target, a_out.float(), b_out.float())
            seed = (r_a if side == 0 else r_b).to(g.out.dtype)
            retain = not (free and n + 1 == len(now))
            g.relevance[(j, side)] = (cos, layer_relevance(g.out, seed, targets,
                                                           retain_graph=retain))

    def _explain_batched(
        self, pairs: Sequence[tuple[_Image, _Image]], graph: _Graph, n_pix: int
    ) -> list[dict[str, PairExplanation]]:
        """Pairs over one zennit graph of their images (a batch ``a0, b0, a1, b1, ...``): one
        backward pass with every image's starting relevance (pixel maps: one pair only)."""
        seeds, sims = [], []
        for k in range(len(pairs)):
            cos, r_a, r_b = seed_relevance(self.target, graph.out[2 * k : 2 * k + 1].detach(),
                                          graph.out[2 * k + 1 : 2 * k + 2].detach())
            seeds += [r_a, r_b]
            sims.append(cos)
        targets = list(graph.layers.values())
        rel = torch.autograd.grad(graph.out, targets, grad_outputs=torch.cat(seeds),
                                  retain_graph=n_pix > 0, allow_unused=True)

        def pixels(name: str, positions: torch.Tensor) -> torch.Tensor:
            if len(pairs) > 1:  # several pairs per pass only without pixel maps
                return torch.zeros(0, 2, *graph.x.shape[-2:], dtype=graph.x.dtype)
            return pixel_relevance(graph.layers[name], graph.x, positions,
                                   chunk=self.pixel_chunk)

        out = []
        for k, (sa, sb) in enumerate(pairs):
            a, b = slice(2 * k, 2 * k + 1), slice(2 * k + 1, 2 * k + 2)
            rel_a = [None if r is None else r[a] for r in rel]
            rel_b = [None if r is None else r[b] for r in rel]
            feats_a = {n: f[a] for n, f in graph.layers.items()}
            feats_b = {n: f[b] for n, f in graph.layers.items()}
            out.append(self._explanations(sa, sb, sims[k], rel_a, rel_b, feats_a, feats_b,
                                          pixels, n_pix))
        return out

    def _explanations(
        self,
        sa: _Image,
        sb: _Image,
        cos: float,
        rel_a: Sequence[torch.Tensor | None],
        rel_b: Sequence[torch.Tensor | None],
        feats_a: dict[str, torch.Tensor],
        feats_b: dict[str, torch.Tensor],
        pixels: Callable[[str, torch.Tensor], torch.Tensor],
        n_pix: int,
    ) -> dict[str, PairExplanation]:
        """Matches, relevance maps and pixel maps of one pair at every layer.

        ``rel_a[i]``/``feats_a[name]`` are ``(1, C, h, w)`` per layer (in :attr:`layers`
        order); ``pixels(name, positions)`` maps ``(K, 2, 2)`` grid positions (image a, image
        b) to ``(K, 2, H, W)`` pixel relevance.
        """
        out: dict[str, PairExplanation] = {}
        notes = self.notes(sa, sb)
        context = (self.calibration.context(cos)
                   if self.calibration is not None and self.target == "cosine" else None)
        options = {**self.options(), "n_pixel_maps": n_pix}
        for i, name in enumerate(self.layers):
            fa, fb = feats_a[name].float(), feats_b[name].float()
            map_a = _channel_abs_sum(rel_a[i], fa)
            map_b = _channel_abs_sum(rel_b[i], fb)
            matches = _matches(fa, fb, map_a, map_b, sa.x.shape[-2:], sb.x.shape[-2:])
            if self.match_filter == "ransac":
                matches = ransac_inliers(matches, self.ransac_threshold)
            if len(matches) == 0:
                warnings.warn(
                    f"PAIR-X found no cross-checked matches at layer {name!r}", stacklevel=4
                )
            k = min(n_pix, len(matches))
            positions = torch.from_numpy(
                np.stack([matches.grid_a[:k], matches.grid_b[:k]], axis=1))
            pix = pixels(name, positions)
            out[name] = PairExplanation(
                similarity=cos,
                layer=name,
                matches=matches,
                relevance_a=map_a.numpy(),
                relevance_b=map_b.numpy(),
                pixel_relevance_a=pix[:, 0].detach().float().cpu().numpy(),
                pixel_relevance_b=pix[:, 1].detach().float().cpu().numpy(),
                image_a=sa.rgb,
                image_b=sb.rgb,
                n_matches=self.n_matches,
                frame_a=sa.frame,
                frame_b=sb.frame,
                photo_a=sa.photo,
                photo_b=sb.photo,
                model=self._info,
                options=options,
                warnings=notes,
                context=context,
                target=self.target,
            )
        return out


class _GraphPool:
    """Live single-image graphs of one :meth:`PairX.explain_layers_pairs` call.

    Pair ``i`` asks for the graphs of its two images with :meth:`get` (built on a miss) and
    hands them back with :meth:`release`: a graph no later pair needs is dropped at once; when
    ``capacity`` graphs are live, the one whose next use is furthest away goes first (Belady).
    """

    def __init__(
        self,
        build: Callable[[_Image], _Graph],
        pairs: Sequence[tuple[_Image, _Image]],
        capacity: int,
    ) -> None:
        self.build = build
        self.capacity = max(2, int(capacity))
        self.uses: dict[int, list[int]] = {}
        for i, (sa, sb) in enumerate(pairs):
            for key in {id(sa), id(sb)}:
                self.uses.setdefault(key, []).append(i)
        self.live: OrderedDict[int, _Graph] = OrderedDict()
        self.pairs = pairs

    def _next_use(self, key: int, now: int) -> float:
        later = self.uses[key]
        j = bisect.bisect_right(later, now)
        return float(later[j]) if j < len(later) else math.inf

    def get(self, i: int, st: _Image) -> _Graph:
        key = id(st)
        if key in self.live:
            return self.live[key]
        current = {id(self.pairs[i][0]), id(self.pairs[i][1])}
        while len(self.live) >= self.capacity:
            spare = [k for k in self.live if k not in current]
            if not spare:
                break
            del self.live[max(spare, key=lambda k: self._next_use(k, i))]
        graph = self.build(st)
        self.live[key] = graph
        return graph

    def is_live(self, st: _Image) -> bool:
        """Whether the graph of ``st`` is built and kept."""
        return id(st) in self.live

    def uses_from(self, i: int, st: _Image) -> list[int]:
        """The pairs from pair ``i`` on that use ``st`` (ascending)."""
        later = self.uses[id(st)]
        return later[bisect.bisect_left(later, i):]

    def release(self, i: int) -> None:
        for key in [k for k in self.live if self._next_use(k, i) == math.inf]:
            del self.live[key]


class _Outputs:
    """The LRP network's outputs of the images of one gradient-engine call, for the starting
    relevance of their partners: from an image's graph once it has one (:meth:`remember`), else
    from a forward pass of the canonized network without a graph (the same values: recording a
    graph does not change the arithmetic), remembered for the call."""

    def __init__(self, net: nn.Module, model: ReIDModel) -> None:
        self.net = net
        self.model = model
        self.known: dict[int, torch.Tensor] = {}

    def remember(self, st: _Image, graph: _Graph) -> None:
        self.known[id(st)] = graph.out.detach()

    def of(self, st: _Image) -> torch.Tensor:
        """``(1, D)`` output of ``st`` in the LRP network's number format (detached)."""
        if id(st) not in self.known:
            with torch.no_grad():
                out = _embeddings(self.model, self.net(st.x.detach().to(_dtype_of(self.model))))
            self.known[id(st)] = out
            st.embedding = out.float()
        return self.known[id(st)]


def _dtype_of(model: ReIDModel) -> torch.dtype:
    """The number format of the model's parameters (float32 for a model without any)."""
    return next((p.dtype for p in model.net.parameters()), torch.float32)


def _embeddings(model: ReIDModel, out: object) -> torch.Tensor:
    """``out`` if it is a ``(B, D)`` tensor of embeddings."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ModelError(
            f"model {model.name!r} must return (B, D) embeddings; got "
            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
        )
    return out


def _pair_groups(
    states: Sequence[tuple[_Image, _Image]], size: int
) -> list[list[int]]:
    """Consecutive pair indices, at most ``size`` per group, one input size per group."""
    groups: list[list[int]] = []
    shape: tuple[int, ...] | None = None
    for i, (sa, sb) in enumerate(states):
        here = (*sa.x.shape, *sb.x.shape)
        if not groups or len(groups[-1]) >= size or here != shape:
            groups.append([])
            shape = here
        groups[-1].append(i)
    return groups


def _channel_abs_sum(rel: torch.Tensor | None, feature: torch.Tensor) -> torch.Tensor:
    """``(1, C, h, w)`` relevance -> ``(h, w)`` float32 absolute value summed over channels."""
    if rel is None:  # the layer does not influence the embedding
        return torch.zeros(feature.shape[-2:], dtype=torch.float32)
    return rel.detach()[0].abs().sum(dim=0).float().cpu()


def _matches(
    fa: torch.Tensor,
    fb: torch.Tensor,
    map_a: torch.Tensor,
    map_b: torch.Tensor,
    size_a: tuple[int, int] | torch.Size,
    size_b: tuple[int, int] | torch.Size,
) -> Matches:
    idx_a, idx_b, dist = mutual_nearest_neighbours(
        feature_descriptors(fa.detach()), feature_descriptors(fb.detach())
    )
    if idx_a.numel() == 0:
        return Matches.empty()
    wa, wb = fa.shape[-1], fb.shape[-1]
    rel = map_a.reshape(-1)[idx_a].double() * map_b.reshape(-1)[idx_b].double()
    order = np.argsort(-rel.numpy(), kind="stable")
    idx_a, idx_b = idx_a[order], idx_b[order]
    grid_a = torch.stack([idx_a % wa, idx_a // wa], dim=1)
    grid_b = torch.stack([idx_b % wb, idx_b // wb], dim=1)
    grid_shape_a = (int(fa.shape[-2]), int(fa.shape[-1]))
    grid_shape_b = (int(fb.shape[-2]), int(fb.shape[-1]))
    xy_a = grid_centres(grid_shape_a, (int(size_a[0]), int(size_a[1])))[idx_a]
    xy_b = grid_centres(grid_shape_b, (int(size_b[0]), int(size_b[1])))[idx_b]
    return Matches(
        grid_a=grid_a.numpy(),
        grid_b=grid_b.numpy(),
        xy_a=xy_a.numpy(),
        xy_b=xy_b.numpy(),
        distance=dist[order].numpy(),
        relevance=rel[order].numpy(),
    )


def ransac_inliers(matches: Matches, threshold: float) -> Matches:
    """The matches that are inliers of a RANSAC homography fitted to all of them (order kept;
    all of them when fewer than 4 or no homography is found)."""
    import cv2

    if len(matches) < 4:
        return matches
    cv2.setRNGSeed(0)  # the same matches give the same inliers
    _, mask = cv2.findHomography(matches.xy_a.astype(np.float64),
                                 matches.xy_b.astype(np.float64), cv2.RANSAC, float(threshold),
                                 maxIters=2000, confidence=0.995)
    if mask is None:
        return matches
    keep = mask.ravel().astype(bool)
    return Matches(**{f: getattr(matches, f)[keep] for f in
                      ("grid_a", "grid_b", "xy_a", "xy_b", "distance", "relevance")})


def explain(
    model: ReIDModel,
    image_a: ImageInput,
    image_b: ImageInput,
    *,
    layer: str | Sequence[str],
    n_matches: int = 20,
    n_pixel_maps: int = 10,
    allow_untrained: bool = False,
) -> PairExplanation | dict[str, PairExplanation]:
    """Explain why ``model`` finds ``image_a`` and ``image_b`` similar (PAIR-X).

    Parameters
    ----------
    model
        The embedding model (see :func:`pairx.load_model`).
    image_a, image_b
        Paths, PIL images, ``(H, W, 3)`` uint8 arrays, or preprocessed ``(1, 3, H, W)`` tensors.
    layer
        One layer name, or several (then a dict keyed by layer is returned).
    n_matches
        Number of top matches meant to be drawn as lines.
    n_pixel_maps
        Number of top matches propagated back to pixels (``0``: none).
    allow_untrained
        Explain a model that looks untrained instead of refusing it (outputs are stamped).

    Returns
    -------
    PairExplanation or dict[str, PairExplanation]
    """
    layers = [layer] if isinstance(layer, str) else list(layer)
    result = PairX(model, layers, n_matches=n_matches, n_pixel_maps=n_pixel_maps,
                   cache_size=0, allow_untrained=allow_untrained).explain_layers(image_a, image_b)
    return result[layer] if isinstance(layer, str) else result
