"""Every explainer measured against the synthetic benchmark's ground truth (``pairx baselines``).

Pairs: sightings of one individual showing the same flank (so true correspondences exist),
sampled with a seed from a ``pairx synth`` dataset. Per pair and method, for both images of the
pair (each against the other), the localisation scores of :mod:`pairx.metrics.localisation`
and the deletion/insertion AUCs of :mod:`pairx.metrics.perturbation` are averaged over the two
images; a random map (uniform noise) is measured beside them as the chance level. Methods that
return matches (PAIR-X, SIFT, LightGlue) are also scored on their top ``n_top`` matches:

* ``pck``: share of matches with a true correspondence whose matched point in B lies within
  ``pck_px`` pixels of the true one (model-input frame);
* ``defined``: share of matches whose point in A has a true correspondence at all, and for the
  others why not: ``why_background``, ``why_occluder`` (A's point is not on the visible
  animal) or ``why_hidden`` (on the animal in A, not visible in B);
* ``res``: the paper's inverted residual mean of all matches under the ground-truth homography;
* ``pck_random``: the same PCK for ``n_top`` random matches (a point of A with a true
  correspondence, paired with a random point on B's animal).

A pair's ``covisible_share`` is the smaller of its two images' co-visible shares of the
animal (what the less-seen image's partner shows of it).

Hard negatives (another individual of the same species and flank, the most similar one) get
the same rows; their deletion/insertion curves say whether a map finds what makes a wrong pair
look alike, and their "true" correspondences are anatomical (the same body point).

Rows are one per pair and method (:data:`ROW_FIELDS`) and are appended to a CSV as they are
computed; :func:`summarise` aggregates them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pairx.core.errors import DatasetError, InputError
from pairx.core.explanation import Explanation
from pairx.core.targets import make_target
from pairx.data.datasets import ReIDDataset
from pairx.explainers.base import PairExplainer
from pairx.metrics.localisation import PairRegions, localisation_scores, pair_regions
from pairx.metrics.perturbation import deletion_insertion

__all__ = ["NEGATIVE_OFFSET", "ROW_FIELDS", "GTPair", "hard_negative_pairs", "match_scores",
           "pair_rows", "same_flank_pairs", "summarise"]

_LOCAL = ("mass_animal", "mass_covisible", "rank_covisible", "pointing_covisible",
          "area_animal", "area_covisible", "pair_specificity")
_MATCH = ("pck", "defined", "why_background", "why_occluder", "why_hidden", "res",
          "pck_random", "n_matches")
ROW_FIELDS = ("pair", "kind", "key_a", "key_b", "species", "method", "similarity",
              "covisible_share", *_LOCAL, "deletion", "insertion", *_MATCH, "seconds")
"""Columns of the per-pair CSV."""


@dataclass(frozen=True)
class GTPair:
    """A pair of sightings: same individual and flank (``kind="positive"``), or a hard negative
    (``"negative"``: another individual of the species and flank, the most similar one)."""

    index: int
    key_a: str
    key_b: str
    species: str
    kind: str = "positive"


NEGATIVE_OFFSET = 1_000_000
"""Pair indices of hard negatives start here (positives count from 0)."""


def hard_negative_pairs(dataset: ReIDDataset, truth: Any, embed: Any, n_pairs: int,
                        seed: int) -> list[GTPair]:
    """``n_pairs`` hard negatives: for random images A, the most similar image (cosine of
    ``embed(image_ids) -> (N, D)`` embeddings) of another individual with the same species
    and flank. Indices start at :data:`NEGATIVE_OFFSET`."""
    ids = [s.image_id for s in dataset]
    gts = [truth.ground_truth(i) for i in ids]
    emb = np.asarray(embed(ids), np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T
    rng = np.random.default_rng(seed + 1)
    out: list[GTPair] = []
    for a in rng.permutation(len(ids)):
        ok = [b for b in range(len(ids)) if gts[b].identity != gts[a].identity
              and gts[b].species == gts[a].species and gts[b].flank == gts[a].flank]
        if not ok:
            continue
        b = max(ok, key=lambda j: sim[a, j])
        out.append(GTPair(NEGATIVE_OFFSET + len(out), ids[a], ids[b], gts[a].species,
                          "negative"))
        if len(out) >= n_pairs:
            break
    return out


def same_flank_pairs(dataset: ReIDDataset, truth: Any, n_pairs: int, seed: int) -> list[GTPair]:
    """``n_pairs`` random same-individual, same-flank pairs (all of them if fewer).

    Raises
    ------
    DatasetError
        The dataset has no such pair.
    """
    by_group: dict[tuple[str, int], list[str]] = {}
    species: dict[str, str] = {}
    for s in dataset:
        gt = truth.ground_truth(s.image_id)
        by_group.setdefault((s.identity, int(gt.flank)), []).append(s.image_id)
        species[s.image_id] = gt.species
    def sighting(image_id: str) -> str:  # a crop of pairx.data.partial shares its sighting
        return image_id.split("~", 1)[0]

    candidates = [(a, b) for ids in by_group.values() for i, a in enumerate(sorted(ids))
                  for b in sorted(ids)[i + 1:] if sighting(a) != sighting(b)]
    if not candidates:
        raise DatasetError(f"{dataset.root} has no two sightings of one individual showing the "
                           "same flank; generate more sightings per individual")
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(candidates))[: max(1, int(n_pairs))]
    return [GTPair(i, candidates[j][0], candidates[j][1], species[candidates[j][0]])
            for i, j in enumerate(pick)]


def _why_undefined(truth: Any, key: str, xy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Per point of A without truth: 0 background, 1 occluder, 2 on the animal, hidden in B."""
    from pairx.metrics.homography import input_to_source

    gt = truth.ground_truth(key)
    mask, occ = np.asarray(gt.part_mask), np.asarray(gt.occluder)
    src = input_to_source(xy, size, truth.dataset.by_id(key), mask.shape[:2])
    c = np.clip(np.round(src[:, 0]).astype(int), 0, mask.shape[1] - 1)
    r = np.clip(np.round(src[:, 1]).astype(int), 0, mask.shape[0] - 1)
    return np.where(mask[r, c] > 0, 2, np.where(occ[r, c], 1, 0))


def match_scores(truth: Any, pair: GTPair, expl: Explanation, *, n_top: int = 20,
                 pck_px: float = 16.0, rng: np.random.Generator) -> dict[str, float]:
    """The match metrics of one explanation (``nan`` for a method without matches)."""
    from pairx.metrics.functional import inverted_residual_mean

    out = dict.fromkeys(_MATCH, math.nan)
    m = expl.matches
    if m is None:
        return out
    size = (int(expl.image_a.shape[0]), int(expl.image_a.shape[1]))
    out["n_matches"] = float(len(m))
    k = min(n_top, len(m))
    if k:
        xy_a, xy_b = np.asarray(m.xy_a[:k], float), np.asarray(m.xy_b[:k], float)
        true_b = truth.true_points(pair.key_a, pair.key_b, xy_a, size)
        defined = np.isfinite(true_b).all(axis=1)
        out["defined"] = float(defined.mean())
        if defined.any():
            err = np.linalg.norm(true_b[defined] - xy_b[defined], axis=1)
            out["pck"] = float((err <= pck_px).mean())
        why = _why_undefined(truth, pair.key_a, xy_a[~defined], size)
        for code, name in enumerate(("why_background", "why_occluder", "why_hidden")):
            out[name] = float((why == code).sum() / k)
        h = truth.estimate(expl.image_a, expl.image_b, key_a=pair.key_a, key_b=pair.key_b)
        if h is not None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out["res"] = float(inverted_residual_mean(m.xy_a, m.xy_b, h))
    out["pck_random"] = _random_pck(truth, pair, size, n_top, pck_px, rng)
    return out


def _random_pck(truth: Any, pair: GTPair, size: tuple[int, int], n: int, px: float,
                rng: np.random.Generator) -> float:
    from pairx.metrics.faithfulness import on_animal

    h, w = size
    rows, cols = np.mgrid[0:h:4, 0:w:4]
    grid = np.stack([cols.ravel(), rows.ravel()], 1).astype(np.float64)
    true_b = truth.true_points(pair.key_a, pair.key_b, grid, size)
    ok_a = np.flatnonzero(np.isfinite(true_b).all(axis=1))
    ok_b = np.flatnonzero(on_animal(truth, pair.key_b, grid, size))
    if not len(ok_a) or not len(ok_b):
        return math.nan
    ia, ib = rng.choice(ok_a, n), rng.choice(ok_b, n)
    return float((np.linalg.norm(true_b[ia] - grid[ib], axis=1) <= px).mean())


def _map_rows(explainer: PairExplainer, expl: Explanation, xs: tuple[torch.Tensor, ...],
              embeddings: tuple[torch.Tensor, torch.Tensor],
              regions: tuple[PairRegions, PairRegions], steps: int,
              seed: int) -> dict[str, float]:
    """Localisation and deletion/insertion, averaged over both images of the pair
    (``embeddings``: the plain embeddings of both images, computed once per pair)."""
    targets = (make_target(explainer.target, embeddings[1]),
               make_target(explainer.target, embeddings[0]))
    per: list[dict[str, float]] = []
    for side, (x, sal, reg, tgt) in enumerate(zip(xs, (expl.map_a, expl.map_b), regions,
                                                  targets, strict=True)):
        row = localisation_scores(sal, reg)
        net = explainer.model.net
        def score(z: torch.Tensor, tgt: Any = tgt, net: torch.nn.Module = net) -> torch.Tensor:
            out: torch.Tensor = tgt(net(z))
            return out

        d, i, _, _ = deletion_insertion(score, x, sal, steps=steps, seed=seed + side)
        row["deletion"], row["insertion"] = d, i
        per.append(row)
    return {k: float(np.nanmean([p[k] for p in per])) if any(
        not math.isnan(p[k]) for p in per) else math.nan for k in per[0]}


def pair_rows(
    explainers: dict[str, PairExplainer],
    truth: Any,
    pairs: Sequence[GTPair],
    *,
    n_top: int = 20,
    pck_px: float = 16.0,
    steps: int = 20,
    seed: int = 0,
    skip: set[tuple[int, str]] | None = None,
) -> Iterator[dict[str, Any]]:
    """One row per pair and method (and the random map ``"random"``), in pair order; the
    ``(pair index, method)`` rows in ``skip`` are not computed."""
    import time

    from pairx.data.crops import image_input
    from pairx.models.edits import frozen_eval

    skip = skip or set()
    rng = np.random.default_rng(seed)
    for pair in pairs:
        todo = [n for n in (*explainers, "random") if (pair.index, n) not in skip]
        if not todo:
            continue
        inputs = {k: image_input(truth.dataset.by_id(k)) for k in (pair.key_a, pair.key_b)}
        first = next(iter(explainers.values()))
        sa = first.prepare(inputs[pair.key_a], key=pair.key_a)
        sb = first.prepare(inputs[pair.key_b], key=pair.key_b)
        size = (int(sa.rgb.shape[0]), int(sa.rgb.shape[1]))
        embs = (first.model.embed(sa.x), first.model.embed(sb.x))  # once per pair
        regions = (pair_regions(truth, pair.key_a, pair.key_b, size),
                   pair_regions(truth, pair.key_b, pair.key_a, size))
        base = {"pair": pair.index, "kind": pair.kind, "key_a": pair.key_a, "key_b": pair.key_b,
                "species": pair.species,
                "covisible_share": float(np.nanmin([r.covisible_share for r in regions]))}
        for name, ex in explainers.items():
            if name not in todo:
                continue
            start = time.perf_counter()
            expl = ex.explain(inputs[pair.key_a], inputs[pair.key_b], key_a=pair.key_a,
                              key_b=pair.key_b)
            seconds = time.perf_counter() - start
            with frozen_eval(ex.model.net):
                row = _map_rows(ex, expl, (sa.x, sb.x), embs, regions, steps,
                                seed + pair.index)
            row.update(match_scores(truth, pair, expl, n_top=n_top, pck_px=pck_px, rng=rng))
            yield {**base, "method": name, "similarity": expl.similarity, **row,
                   "seconds": seconds}
            if "random" in todo:
                todo.remove("random")
                noise = np.random.default_rng(seed + 7919 * pair.index)
                rand = Explanation(similarity=expl.similarity, method="random",
                                   image_a=expl.image_a, image_b=expl.image_b,
                                   map_a=noise.random(expl.map_a.shape).astype(np.float32),
                                   map_b=noise.random(expl.map_b.shape).astype(np.float32))
                with frozen_eval(ex.model.net):
                    row = _map_rows(ex, rand, (sa.x, sb.x), embs, regions, steps,
                                    seed + pair.index)
                yield {**base, "method": "random", "similarity": expl.similarity, **row,
                       **dict.fromkeys(_MATCH, math.nan), "seconds": 0.0}


def summarise(rows: Sequence[dict[str, Any]], *, band: tuple[float, float] = (0.2, 0.8)
              ) -> list[dict[str, Any]]:
    """Per method: means of every metric, and the pair-specificity share ``> 1`` among pairs
    whose co-visible share lies in ``band``.

    Raises
    ------
    InputError
        No rows.
    """
    if not rows:
        raise InputError("no result rows to summarise")
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    kinds = list(dict.fromkeys(str(r.get("kind") or "positive") for r in rows))
    out = []
    for kind, name in ((k, n) for k in kinds for n in methods):
        mine = [r for r in rows if r["method"] == name
                and str(r.get("kind") or "positive") == kind]
        if not mine:
            continue

        def mean(key: str, rs: Sequence[dict[str, Any]] = mine) -> float:
            vals = [float(r[key]) for r in rs if r.get(key) not in (None, "")
                    and not math.isnan(float(r[key])) and not math.isinf(float(r[key]))]
            return float(np.mean(vals)) if vals else math.nan

        in_band = [r for r in mine if band[0] <= float(r["covisible_share"]) <= band[1]
                   and not math.isnan(float(r["pair_specificity"]))]
        ps_gt1 = (float(np.mean([float(r["pair_specificity"]) > 1 for r in in_band]))
                  if in_band else math.nan)
        summary: dict[str, Any] = {"method": name, "kind": kind, "pairs": len(mine)}
        for key in (*_LOCAL, "deletion", "insertion", *_MATCH, "seconds"):
            summary[key] = mean(key)
        summary["mass_animal_over_area"] = (summary["mass_animal"] / summary["area_animal"]
                                            if summary["area_animal"] else math.nan)
        summary["pair_specificity_gt1_in_band"] = ps_gt1
        summary["pairs_in_band"] = len(in_band)
        out.append(summary)
    return out
