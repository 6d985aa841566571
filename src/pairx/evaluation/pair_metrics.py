"""The per-pair metrics of the evaluation protocol, and the batch task that computes them.

:class:`PairRunner` turns a chunk of query-gallery pairs of one group into ``pairs.csv`` rows
(one per layer): similarity, ``res`` under the group's homography source, match coverage and,
on the synthetic benchmark, the exact residuals and the ground-truth faithfulness.
:class:`EvaluateTask` is its picklable description, so that ``pairx evaluate --backend ray``
runs the very same computation on Ray workers (:func:`pairx.batch.run_chunk`).
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from pairx.batch.spec import ModelSpec
from pairx.core.images import load_image
from pairx.core.lru import LRUCache
from pairx.data.crops import image_input
from pairx.data.datasets import ReIDDataset
from pairx.evaluation.config import EvaluationConfig
from pairx.evaluation.pairs import Pair
from pairx.metrics.faithfulness import pair_faithfulness
from pairx.metrics.functional import MetricWarning, inverted_residual_mean, match_coverage
from pairx.metrics.homography import (
    GroundTruthHomography,
    HomographySource,
    estimate_at_resolution,
    make_homography_source,
)
from pairx.models.adapter import ReIDModel

if TYPE_CHECKING:  # pragma: no cover
    from pairx.explainers.pairx import PairX

__all__ = ["ANALYSIS_SIDE", "EngineFactory", "EvaluateTask", "PairRunner"]

EngineFactory = Callable[[ReIDModel, Sequence[str], int], "PairX"]
"""``(model, layers, cache_size) -> PairX``: the explainer the protocol measures."""

#: Longest side of the images keypoint homography sources (SIFT, LightGlue) work on.
ANALYSIS_SIDE = 640


class PairRunner:
    """Computes the per-pair metrics of one group with a shared PairX engine."""

    def __init__(
        self,
        model: ReIDModel,
        group: str,
        dataset: ReIDDataset,
        layers: Sequence[str],
        homography: HomographySource,
        truth: GroundTruthHomography | None,
        config: EvaluationConfig,
        extra_sources: dict[str, HomographySource],
        engine_factory: EngineFactory,
        cache_size: int,
    ) -> None:
        self.group = group
        self.dataset = dataset
        self.layers = list(layers)
        self.homography = homography
        self.extra_sources = extra_sources
        self.truth = truth
        self.config = config
        self.engine = engine_factory(model, self.layers, cache_size)
        self._inputs: LRUCache[str, str | np.ndarray] = LRUCache(64)
        self._analysis: LRUCache[str, np.ndarray] = LRUCache(64)

    def _input(self, image_id: str) -> str | np.ndarray:
        """Path of the image, or its bbox crop (a small LRU cache bounds the memory)."""
        return self._inputs.get_or_compute(
            image_id, lambda: image_input(self.dataset.by_id(image_id)))

    def _analysis_image(self, image_id: str) -> np.ndarray:
        """The original (cropped) image, downscaled to at most :data:`ANALYSIS_SIDE` pixels."""
        return self._analysis.get_or_compute(image_id, lambda: self._downscaled(image_id))

    def _downscaled(self, image_id: str) -> np.ndarray:
        src = self._input(image_id)
        rgb = load_image(src) if isinstance(src, str) else src
        scale = ANALYSIS_SIDE / max(rgb.shape[:2])
        if scale < 1:
            size = (max(round(rgb.shape[1] * scale), 1), max(round(rgb.shape[0] * scale), 1))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        return rgb

    def _homography(self, source: HomographySource, pair: Pair, first: Any) -> np.ndarray | None:
        if isinstance(source, GroundTruthHomography):
            return source.estimate(
                first.image_a, first.image_b, key_a=pair.query, key_b=pair.gallery
            )
        # keypoints on the original (cropped) images, at most ANALYSIS_SIDE pixels
        input_size = (int(first.image_a.shape[0]), int(first.image_a.shape[1]))
        return estimate_at_resolution(
            source,
            self._analysis_image(pair.query),
            self._analysis_image(pair.gallery),
            input_size,
            key_a=pair.query,
            key_b=pair.gallery,
        )

    def rows(self, pairs: Sequence[Pair]) -> list[list[dict[str, Any]]]:
        """Metric rows (one per layer) of each pair; one engine call for the whole chunk."""
        expls = self.engine.explain_layers_pairs(
            [(self._input(p.query), self._input(p.gallery)) for p in pairs],
            keys=[(p.query, p.gallery) for p in pairs],
            n_pixel_maps=0,
            progress=False,
        )
        return [self._pair_rows(p, e) for p, e in zip(pairs, expls, strict=True)]

    def _pair_rows(self, pair: Pair, expl: dict[str, Any]) -> list[dict[str, Any]]:
        first = expl[self.layers[0]]
        h = self._homography(self.homography, pair, first)
        extra = {n: self._homography(src, pair, first) for n, src in self.extra_sources.items()}
        rows = []
        for layer in self.layers:
            e = expl[layer]
            m = e.matches
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MetricWarning)
                res = inverted_residual_mean(m.xy_a, m.xy_b, h) if h is not None else math.nan
                mc = match_coverage(e.relevance_a, e.relevance_b, m.grid_a, m.grid_b)
            row: dict[str, Any] = {
                "dataset": self.group,
                "layer": layer,
                "query": pair.query,
                "gallery": pair.gallery,
                "correct": pair.correct,
                "similarity": pair.similarity,
                "res": res,
                "mc": mc,
                "n_matches": len(m),
                "res_exact": math.nan,
                "faithful": math.nan,
                "faithful_defined": math.nan,
                "faithful_random": math.nan,
            }
            for name, h_extra in extra.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MetricWarning)
                    row[f"res_{name}"] = (
                        inverted_residual_mean(m.xy_a, m.xy_b, h_extra)
                        if h_extra is not None
                        else math.nan
                    )
            if self.truth is not None:
                size = (int(e.image_a.shape[0]), int(e.image_a.shape[1]))
                resid = self.truth.true_residuals(pair.query, pair.gallery, m.xy_a, m.xy_b, size)
                ok = np.isfinite(resid)
                if ok.any():
                    total = float(resid[ok].sum())
                    row["res_exact"] = math.inf if total == 0 else float(ok.sum() / total)
                if pair.correct:
                    rng = np.random.default_rng(
                        [
                            self.config.seed,
                            zlib.crc32(f"{pair.query}|{pair.gallery}|{layer}".encode()),
                        ]
                    )
                    f = pair_faithfulness(
                        self.truth, pair.query, pair.gallery, e, n_top=self.config.n_top, rng=rng
                    )
                    row["faithful"] = f.faithful
                    row["faithful_defined"] = f.faithful_defined
                    row["faithful_random"] = f.random
            rows.append(row)
        return rows


def default_engine(model: ReIDModel, layers: Sequence[str], cache_size: int) -> PairX:
    """``PairX(model, layers, n_pixel_maps=0, cache_size=cache_size)`` (the protocol's engine)."""
    from pairx.explainers.pairx import PairX

    # The protocol measures; refusing untrained models is the caller's decision (the CLI does).
    return PairX(model, list(layers), n_pixel_maps=0, cache_size=cache_size,
                 allow_untrained=True)


@dataclass(frozen=True)
class EvaluateTask:
    """The metric rows of one group's pairs, as a batch task (:func:`pairx.batch.run_chunk`).

    A chunk is a sequence of :class:`~pairx.evaluation.pairs.Pair` that never splits a query;
    its records are, per pair, the list of its rows (one per layer).

    Attributes
    ----------
    model
        How workers load the model.
    group
        Group name (the ``dataset`` column).
    dataset
        The group's samples (paths must be readable by every worker: shared storage).
    layers
        Layers measured.
    homographies
        Homography source names, primary first (``res``, then ``res_<name>`` columns).
    with_truth
        Whether to compute the synthetic ground-truth columns.
    config
        The evaluation configuration (seed, ``n_top``).
    cache_size
        Images the engine keeps prepared.
    engine_factory
        The engine (default :func:`default_engine`); must be picklable for Ray.
    homography_source
        Overrides the primary source (e.g. a configured LightGlue); must be picklable for Ray.
    """

    model: ModelSpec
    group: str
    dataset: ReIDDataset
    layers: tuple[str, ...]
    homographies: tuple[str, ...]
    with_truth: bool
    config: EvaluationConfig
    cache_size: int
    engine_factory: EngineFactory | None = None
    homography_source: HomographySource | None = None

    def build(self, model: ReIDModel) -> Callable[[Sequence[Pair]], list[list[dict[str, Any]]]]:
        """The chunk function: a :class:`PairRunner` of this group on ``model``."""
        names = self.homographies
        source = self.homography_source or make_homography_source(
            names[0], self.dataset, device=model.device)
        extra = {n: make_homography_source(n, self.dataset, device=model.device)
                 for n in names[1:]}
        truth = GroundTruthHomography(self.dataset) if self.with_truth else None
        runner = PairRunner(model, self.group, self.dataset, self.layers, source, truth,
                            self.config, extra, self.engine_factory or default_engine,
                            self.cache_size)
        return runner.rows
