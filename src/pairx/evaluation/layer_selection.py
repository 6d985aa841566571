"""The protocol's ``auto`` layer selection (supplement B.4, step 3).

The same top-k pair selection as the evaluation, with the train split as both query and
gallery (a query never pairs with itself), gives ``n_selection_pairs`` pairs
(:func:`selection_pairs`); every candidate layer (:func:`default_candidate_layers`) is measured
on them, and the layer with the best Spearman ``rho_res`` between ``res`` and the similarity
is used (:func:`layer_rhos`, :func:`best_layer`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pairx.data.datasets import Sample
from pairx.evaluation.config import EvaluationConfig
from pairx.evaluation.pairs import Pair, select_pairs
from pairx.metrics.functional import MetricWarning, spearman_rho
from pairx.models.adapter import ReIDModel
from pairx.models.layer_choice import default_layers

__all__ = ["best_layer", "default_candidate_layers", "layer_rhos", "selection_pairs"]


def default_candidate_layers(model: ReIDModel, max_layers: int = 4) -> list[str]:
    """Candidate layers for ``auto`` layer selection.

    The model's recommended layers (``metadata["layers"]``, or
    :data:`pairx.models.default.DEFAULT_LAYERS` for the default model) when known; otherwise
    ``max_layers`` layers spread over the spatial modules whose grid is between 1/32 and 1/4 of
    the input size (the middle of the network, where the paper found the best layers). The one
    layer chooser, :func:`pairx.models.layer_choice.default_layers`, with
    ``candidates=max_layers``.
    """
    return default_layers(model, candidates=max_layers)


def selection_pairs(
    e_train: np.ndarray, train: Sequence[Sample], config: EvaluationConfig, where: str
) -> list[Pair]:
    """The train-vs-train pairs the layer is chosen on.

    Parameters
    ----------
    e_train
        ``(N, D)`` unit-length embeddings of the ``N`` train images.
    train
        The train images.
    config
        ``n_selection_pairs``, the seed (``seed + 1``) and the top-k range.
    where
        Group name for messages.
    """
    sim = e_train @ e_train.T
    np.fill_diagonal(sim, -np.inf)
    return select_pairs(
        sim,
        train,
        train,
        config.n_selection_pairs,
        seed=config.seed + 1,
        k_start=config.k_start,
        k_max=config.k_max,
        where=where,
    )


def layer_rhos(
    rows: Sequence[Mapping[str, Any]], group: str, pairs: Sequence[Pair], layers: Sequence[str]
) -> dict[str, float]:
    """Spearman ``rho`` of ``res`` and the similarity per layer, on the rows of ``pairs``.

    Parameters
    ----------
    rows
        Parsed rows (:func:`pairx.evaluation.rows.read_pairs`); those of other groups or other
        pairs are ignored.
    group
        The group (the ``dataset`` column).
    pairs
        The selection pairs.
    layers
        The candidate layers, in order (the order of the result).
    """
    wanted = {(p.query, p.gallery) for p in pairs}
    mine = [r for r in rows if r["dataset"] == group and (r["query"], r["gallery"]) in wanted]
    out: dict[str, float] = {}
    for layer in layers:
        sub = [r for r in mine if r["layer"] == layer]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricWarning)
            out[layer] = spearman_rho([r["res"] for r in sub], [r["similarity"] for r in sub])
    return out


def best_layer(rhos: Mapping[str, float], candidates: Sequence[str]) -> str:
    """The layer of the highest finite ``rho`` (the first such); the first candidate if none."""
    finite = {k: v for k, v in rhos.items() if math.isfinite(v)}
    return max(finite, key=lambda k: finite[k]) if finite else candidates[0]
