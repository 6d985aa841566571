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

import copy
import os
import warnings
from collections.abc import Callable, Hashable, Sequence
from functools import partial

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pairx.core.calibration import SimilarityCalibration
from pairx.core.errors import LayerError
from pairx.core.results import PairExplanation
from pairx.explainers.base import ImageInput, PairExplainer, PreparedImage, as_reid_model
from pairx.explainers.pairx_forward import LRPForward, LRPGraph, Relevances
from pairx.explainers.pairx_gradient import GradientPairs, GraphPool, NetworkOutputs
from pairx.explainers.pairx_matches import build_matches, channel_abs_sum, ransac_inliers
from pairx.explainers.pairx_options import ENGINES, PIXEL_METHODS, PRECISIONS, check_options
from pairx.explainers.pairx_zennit import ZennitPairs, pair_groups
from pairx.explainers.registry import register
from pairx.lrp.gradient_engine import gradient_lrp_mode
from pairx.lrp.zennit_engine import lrp_mode
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.layer_choice import default_layers
from pairx.models.layers import get_layer, token_grid
from pairx.models.token_models import unused_patch_tokens

__all__ = ["ENGINES", "PIXEL_METHODS", "PRECISIONS", "PairX", "explain", "ransac_inliers"]


@register
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
    summary = "PAIR-X: matched intermediate features, LRP relevance, per-match pixel maps"
    matches = True
    multi_layer = True

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
        layers = check_options(
            layers, n_matches=n_matches, n_pixel_maps=n_pixel_maps, engine=engine,
            max_graphs=max_graphs, pairs_per_pass=pairs_per_pass, match_filter=match_filter,
            pixel_method=pixel_method, precision=precision)
        self.precision = precision
        self._reduced: ReIDModel | None = None
        self.pixel_method = pixel_method
        tokens = token_grid(model) is not None
        self._pixel_method = "dense" if pixel_method == "auto" and tokens else pixel_method
        self.match_filter = match_filter
        self.ransac_threshold = float(ransac_threshold)
        self.layers = layers
        super().__init__(model, target=target, preprocessing=preprocessing,
                         cache_size=cache_size, allow_untrained=allow_untrained,
                         calibration=calibration)
        for name in self.layers:
            get_layer(self.model, name)
            if tokens:
                why = unused_patch_tokens(self.model, name)
                if why:
                    raise LayerError(why)
        self.n_matches = int(n_matches)
        self.n_pixel_maps = int(n_pixel_maps)
        self.family = family
        self.pixel_chunk = max(1, int(pixel_chunk))
        self.engine = engine
        self.max_graphs = int(max_graphs)
        self.pairs_per_pass = int(pairs_per_pass)
        self._passes = LRPForward(self.model, self.layers, family)

    @classmethod
    def create(cls, model: ReIDModel | nn.Module, layer: str | Sequence[str] | None = None,
               **options: object) -> PairX:
        """The registry's constructor: ``layer`` (one or several) defaults to the model's
        recommended layers (:func:`pairx.models.layer_choice.default_layers`)."""
        if layer is None:
            pre = options.get("preprocessing")
            layer = default_layers(as_reid_model(model, pre))  # type: ignore[arg-type]
        return cls(model, layer, **options)  # type: ignore[arg-type]

    # the forward passes' sharing state (read by tests and benchmarks)
    @property
    def _dedupe(self) -> bool:
        return self._passes.dedupe

    @property
    def _small_dummy(self) -> bool:
        return self._passes.small_dummy

    @property
    def _cut_token(self) -> object:
        return self._passes.token

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
        self, net: torch.nn.Module, model: ReIDModel, states: Sequence[PreparedImage],
        *, to_pixels: bool = True,
    ) -> LRPGraph:
        """One LRP forward pass of ``states`` as one batch (see
        :class:`~pairx.explainers.pairx_forward.LRPForward`); every pass of both engines goes
        through here."""
        return self._passes(net, model, states, to_pixels=to_pixels)

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
        build = partial(self._explanations, n_pix=n_pix)
        if engine == "gradient":
            bar = tqdm(states, desc="PAIR-X", disable=not progress or len(states) < 2)
            lrp_model = self._lrp_model()
            with gradient_lrp_mode(lrp_model, family=self.family) as net:
                graphs = GraphPool(lambda st: self._forward(net, lrp_model, [st]), states,
                                   self.max_graphs)
                driver = GradientPairs(graphs, NetworkOutputs(net, lrp_model),
                                       target=self.target, single_layer=len(self.layers) == 1,
                                       pixel_method=self._pixel_method, results=build)
                for i, (sa, sb) in enumerate(bar):
                    results.append(driver.explain(i, sa, sb))  # type: ignore[arg-type]
                    graphs.release(i)
                    if on_result is not None:
                        on_result(i, results[-1])
        else:
            bar = tqdm(total=len(states), desc="PAIR-X", disable=not progress or len(states) < 2)
            # without pixel maps several pairs share one forward and one backward pass (the
            # graph starts at the lowest layer); with pixel maps each pair has its own graph
            per_pass = self.pairs_per_pass if n_pix == 0 else 1
            zennit = ZennitPairs(target=self.target, pixel_chunk=self.pixel_chunk,
                                 results=build)
            with lrp_mode(self.model, family=self.family) as net:
                for group in pair_groups(states, per_pass):
                    flat = [st for i in group for st in states[i]]
                    graph = self._forward(net, self.model, flat, to_pixels=n_pix > 0)
                    for i, expl in zip(group, zennit.explain(
                            [states[i] for i in group], graph, n_pix), strict=True):
                        results.append(expl)  # type: ignore[arg-type]
                        bar.update(1)
                        if on_result is not None:
                            on_result(i, expl)  # type: ignore[arg-type]
                    del graph
            bar.close()
        return results

    def _explanations(
        self,
        sa: PreparedImage,
        sb: PreparedImage,
        cos: float,
        rel_a: Relevances,
        rel_b: Relevances,
        feats_a: dict[str, torch.Tensor],
        feats_b: dict[str, torch.Tensor],
        pixels: Callable[[str, torch.Tensor], torch.Tensor],
        n_pix: int,
    ) -> dict[str, PairExplanation]:
        """Matches, relevance maps and pixel maps of one pair at every layer.

        ``rel_a[i]``/``feats_a[name]`` are ``(1, C, h, w)`` per layer (in :attr:`layers`
        order); ``pixels(name, positions)`` maps ``(K, 2, 2)`` grid positions (image a, image
        b) to ``(K, 2, H, W)`` pixel relevance. Each explanation is built by the base class
        (:meth:`PairExplainer._result`), like every other method's.
        """
        out: dict[str, PairExplanation] = {}
        for i, name in enumerate(self.layers):
            fa, fb = feats_a[name].float(), feats_b[name].float()
            map_a = channel_abs_sum(rel_a[i], fa)
            map_b = channel_abs_sum(rel_b[i], fb)
            matches = build_matches(fa, fb, map_a, map_b, sa.x.shape[-2:], sb.x.shape[-2:])
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
            out[name] = self._result(
                sa, sb, similarity=cos, matches=matches, layer=name,
                extra={"n_pixel_maps": n_pix}, result_type=PairExplanation,
                relevance_a=map_a.numpy(), relevance_b=map_b.numpy(),
                pixel_relevance_a=pix[:, 0].detach().float().cpu().numpy(),
                pixel_relevance_b=pix[:, 1].detach().float().cpu().numpy(),
                n_matches=self.n_matches,
            )
        return out


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
