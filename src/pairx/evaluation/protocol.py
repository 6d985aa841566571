"""The dataset evaluation protocol of the PAIR-X paper (supplement B.4), resumable.

Per *group* (a dataset, or one species of a multi-species dataset such as the synthetic
benchmark, mirroring the paper's one-dataset-per-species evaluation):

1. **Embeddings** of every image of the group are computed once, in batches, and cached in
   ``OUT/embeddings/<group>.npz``.
2. **Pair selection**: test-split images are queries, train-split images the gallery. Each
   query's top-``k`` gallery images by cosine similarity form the candidate pairs, with
   ``k = 5`` raised one by one up to 20 until at least ``n_pairs / 2`` correct *and*
   ``n_pairs / 2`` incorrect candidates exist; then up to ``n_pairs / 2`` of each are sampled
   with the seed. Datasets without a split (a folder per identity, or metadata without a
   ``split`` column) are split deterministically: within each identity, images sorted by
   ``image_id`` alternate train, test, train, ... (so identities with two or more images appear
   on both sides, as in a closed-set re-ID split).
3. **Layer selection** (``layers="auto"``): the same top-k procedure with the train split as
   both query and gallery (a query never pairs with itself) gives ``n_selection_pairs`` (500)
   pairs; the candidate layer with the best Spearman ``rho_res`` is used. Candidates are the
   model's recommended layers (:data:`pairx.models.default.DEFAULT_LAYERS` for the default
   model, or ``metadata["layers"]``) or else four spread :func:`~pairx.models.layers.
   candidate_layers` (:mod:`pairx.evaluation.layer_selection`).
4. **Per pair and layer**: similarity, ``res`` (inverted residual mean of all cross-checked
   matches under the pair's homography; ``nan`` when no homography could be estimated; SIFT and
   LightGlue run on the original, bbox-cropped images downscaled to at most 640 pixels, and
   their homography is converted to the model-input frame), ``mc``
   (match coverage), and on the synthetic benchmark ``res_exact`` (the inverted residual mean
   of the exact true residuals) and the ground-truth faithfulness of the top matches and of a
   random-match baseline (:mod:`pairx.metrics.faithfulness`).

PAIR-X runs through :class:`pairx.explainers.pairx.PairX` with ``n_pixel_maps=0`` and the
sample ``image_id`` as cache key: each image is read and preprocessed once, and each pair gets
exactly one forward pass (both images as one batch) and one LRP backward pass for all layers.
Rows are appended to ``OUT/pairs.csv`` (and ``OUT/selection_pairs.csv``) and flushed after
every chunk of pairs; a rerun with the same configuration (``OUT/config.json``) skips the
pairs already there, so an interrupted run resumes without losing work. A partially written
last line is discarded.

This module runs the protocol (:func:`evaluate`); its parts live beside it:
:mod:`~pairx.evaluation.config` (the configuration), :mod:`~pairx.evaluation.pairs` (splits and
pair selection), :mod:`~pairx.evaluation.layer_selection`, :mod:`~pairx.evaluation.chunks`
(resumable chunked computation), :mod:`~pairx.evaluation.pair_metrics` (the per-pair metrics)
and :mod:`~pairx.evaluation.rows` (the row store). The names of those modules that callers
used from here are re-exported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pairx.batch.executors import Executor, LocalExecutor
from pairx.batch.spec import ModelSpec
from pairx.core.errors import DatasetError, InputError
from pairx.core.files import atomic_write_text
from pairx.core.locks import hold_folder
from pairx.data.crops import image_input
from pairx.data.datasets import ReIDDataset, Sample
from pairx.evaluation.chunks import images_of, run_pairs
from pairx.evaluation.config import EvaluationConfig
from pairx.evaluation.layer_selection import (
    best_layer,
    default_candidate_layers,
    layer_rhos,
    selection_pairs,
)
from pairx.evaluation.pair_metrics import ANALYSIS_SIDE, EngineFactory, EvaluateTask
from pairx.evaluation.pairs import (
    Pair,
    Sides,
    candidate_pairs,
    group_dataset,
    group_sides,
    normalise,
    select_pairs,
    split_dataset,
    unique_samples,
)
from pairx.evaluation.plan import UNFINISHED, check_plan, results_started
from pairx.evaluation.rows import PAIR_COLUMNS, PairStore, read_pairs
from pairx.metrics.homography import HomographySource, is_synthetic, make_homography_source
from pairx.models.adapter import ReIDModel

__all__ = [
    "ANALYSIS_SIDE",
    "PAIR_COLUMNS",
    "EvaluationConfig",
    "EvaluationResult",
    "Pair",
    "candidate_pairs",
    "default_candidate_layers",
    "embed_group",
    "evaluate",
    "group_dataset",
    "read_pairs",
    "select_pairs",
    "split_dataset",
]


@dataclass
class EvaluationResult:
    """What :func:`evaluate` produced.

    Attributes
    ----------
    out_dir
        Output folder.
    layers
        Layer(s) evaluated per group.
    selection
        Per group, the ``rho_res`` of each candidate layer (empty without ``auto``).
    n_computed, n_skipped
        Pairs computed in this run and pairs found already done in ``pairs.csv``.
    """

    out_dir: Path
    layers: dict[str, list[str]] = field(default_factory=dict)
    selection: dict[str, dict[str, float]] = field(default_factory=dict)
    n_computed: int = 0
    n_skipped: int = 0


def embed_group(
    model: ReIDModel, dataset: ReIDDataset, cache: Path, batch_size: int, progress: bool
) -> np.ndarray:
    """``(N, D)`` float64 embeddings of every sample, in batches, cached in ``cache`` (.npz)."""
    ids = [s.image_id for s in dataset]
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        if list(data["ids"]) == ids:
            return np.asarray(data["emb"], dtype=np.float64)
    chunks = []
    step = max(batch_size, 1)
    bar = tqdm(total=len(ids), desc=f"embed {cache.stem}", disable=not progress, unit="img")
    for i in range(0, len(ids), step):
        batch = torch.cat([model.to_input(image_input(s)) for s in dataset.samples[i : i + step]])
        chunks.append(model.embed(batch).detach().cpu().double().numpy())
        bar.update(len(batch))
    bar.close()
    emb_all = np.concatenate(chunks, axis=0)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(tmp, ids=np.array(ids), emb=emb_all)
    os.replace(tmp, cache)
    return emb_all


def _check_config(out_dir: Path, config: EvaluationConfig, overwrite: bool) -> None:
    """Refuse results of another configuration (or discard them with ``overwrite``)."""
    cfg_path = out_dir / "config.json"
    if cfg_path.is_file() and not overwrite:
        old = cfg_path.read_text(encoding="utf-8")
        if (old.strip() != config.to_json().strip() and (out_dir / UNFINISHED).is_file()
                and not results_started(out_dir)):
            overwrite = True  # a run of this pairx that failed before computing any pair
        elif old.strip() != config.to_json().strip():
            raise InputError(
                f"{out_dir} holds results of a different configuration ({cfg_path}); use another "
                "output folder, or --overwrite to discard them"
            )
        return
    if overwrite:
        for name in ("pairs.csv", "selection_pairs.csv", "layers.json"):
            (out_dir / name).unlink(missing_ok=True)
        emb = out_dir / "embeddings"
        if emb.is_dir():
            for f in emb.glob("*.npz"):
                f.unlink()
    atomic_write_text(cfg_path, config.to_json() + "\n")
    (out_dir / UNFINISHED).touch()


def _check_homographies(
    config: EvaluationConfig,
    dataset: ReIDDataset,
    model: ReIDModel,
    homography_source: HomographySource | None,
) -> list[str]:
    """The homography source names; an unusable source (truth without ground truth...) fails
    here, before any work."""
    names = config.homographies
    if not names:
        raise InputError("config.homography names no homography source")
    if len(set(names)) != len(names):
        raise InputError(f"homography sources are listed twice: {config.homography!r}")
    for n in names:
        if n != "lightglue" and not (n == names[0] and homography_source is not None):
            make_homography_source(n, dataset, device=model.device)
    return names


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "dataset"


@dataclass
class _Run:
    """One run of the protocol: what every group shares, and the steps of one group."""

    model: ReIDModel
    out: Path
    config: EvaluationConfig
    homographies: list[str]
    synthetic: bool
    executor: Executor
    spec: ModelSpec
    engine_factory: EngineFactory | None
    homography_source: HomographySource | None
    batch_size: int
    chunk_size: int
    progress: bool
    store: PairStore
    selection_store: PairStore
    chosen: dict[str, Any]
    result: EvaluationResult

    @property
    def layers_path(self) -> Path:
        return self.out / "layers.json"

    def task(self, name: str, group: ReIDDataset, layers: Sequence[str],
             homographies: Sequence[str], with_truth: bool, cache_size: int) -> EvaluateTask:
        """The batch task computing the rows of ``group``'s pairs at ``layers``."""
        return EvaluateTask(self.spec, name, group, tuple(layers), tuple(homographies),
                            with_truth, self.config, cache_size, self.engine_factory,
                            self.homography_source)

    def evaluate_group(self, name: str, group: ReIDDataset) -> None:
        """Embed, choose the layer, select the pairs and compute them, for one group."""
        sides = group_sides(name, group)
        e_train, e_query, e_gallery = self.embed(name, group, sides)
        if self.config.auto_layers:
            layers = [self.choose_layer(name, group, sides.train, e_train)]
        else:
            layers = list(self.config.layers)
        self.result.layers[name] = layers
        pairs = select_pairs(
            e_query @ e_gallery.T,
            sides.queries,
            sides.gallery,
            self.config.n_pairs,
            seed=self.config.seed,
            k_start=self.config.k_start,
            k_max=self.config.k_max,
            where=name,
        )
        task = self.task(name, group, layers, self.homographies, self.synthetic,
                         images_of(pairs))
        n_new, n_old = run_pairs(task, self.executor, pairs, self.store, f"evaluate {name}",
                                 self.progress, self.chunk_size)
        self.result.n_computed += n_new
        self.result.n_skipped += n_old

    def embed(self, name: str, group: ReIDDataset,
              sides: Sides) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit-length embeddings of the train images (empty without layer selection), the
        queries and the gallery; each image is embedded once (and cached on disk)."""
        auto = self.config.auto_layers
        # train images are embedded only when needed (layer selection or as the gallery)
        needed: list[Sample] = (sides.train if auto else []) + sides.queries + sides.gallery
        sub = ReIDDataset(group.root, unique_samples(needed))
        cache = self.out / "embeddings" / f"{_safe(name)}.npz"
        emb = normalise(embed_group(self.model, sub, cache, self.batch_size, self.progress))
        row_of = {s.image_id: i for i, s in enumerate(sub)}
        e_train = emb[[row_of[s.image_id] for s in sides.train]] if auto else emb[:0]
        e_query = emb[[row_of[s.image_id] for s in sides.queries]]
        e_gallery = emb[[row_of[s.image_id] for s in sides.gallery]]
        return e_train, e_query, e_gallery

    def choose_layer(self, name: str, group: ReIDDataset, train: Sequence[Sample],
                     e_train: np.ndarray) -> str:
        """The group's layer: the one stored in ``layers.json``, else the candidate with the
        best ``rho_res`` on the selection pairs (computed into ``selection_pairs.csv``)."""
        if name in self.chosen:
            self.result.selection[name] = self.chosen[name]["rho_res"]
            return str(self.chosen[name]["layer"])
        cands = default_candidate_layers(self.model)
        pairs = selection_pairs(e_train, train, self.config, where=f"{name} (layer selection)")
        task = self.task(name, group, cands, self.homographies[:1], False, images_of(pairs))
        run_pairs(task, self.executor, pairs, self.selection_store, f"select layer {name}",
                  self.progress, self.chunk_size)
        rhos = layer_rhos(read_pairs(self.selection_store.path), name, pairs, cands)
        layer = best_layer(rhos, cands)
        self.chosen[name] = {"layer": layer, "rho_res": rhos}
        self.result.selection[name] = rhos
        atomic_write_text(self.layers_path, json.dumps(self.chosen, indent=2) + "\n")
        return layer


def evaluate(
    dataset: ReIDDataset,
    model: ReIDModel,
    out_dir: str | Path,
    config: EvaluationConfig,
    *,
    overwrite: bool = False,
    batch_size: int = 32,
    chunk_size: int = 16,
    progress: bool = True,
    homography_source: HomographySource | None = None,
    engine_factory: EngineFactory | None = None,
    executor: Executor | None = None,
    model_spec: ModelSpec | None = None,
) -> EvaluationResult:
    """Run the protocol and write ``config.json``, ``pairs.csv`` and ``selection_pairs.csv``.

    Parameters
    ----------
    dataset
        The dataset (metadata, folder per identity or synthetic benchmark).
    model
        The re-ID model (eval mode, on its device).
    out_dir
        Output folder; an existing one with the same ``config.json`` is resumed.
    config
        Protocol settings.
    overwrite
        Discard results of a different configuration instead of raising.
    batch_size
        Embedding batch size.
    chunk_size
        Pairs per PAIR-X engine call; results are flushed after each call (the resume
        granularity).
    progress
        Show tqdm progress bars.
    homography_source
        Overrides the source named by ``config.homography`` (e.g. a configured LightGlue).
    engine_factory
        ``(model, layers, cache_size) -> PairX`` (its ``explain_layers_pairs`` is called);
        defaults to ``PairX(model, layers, n_pixel_maps=0, cache_size=cache_size)``, with a cache
        large enough for every image of the pairs (each image is preprocessed once).
    executor
        Where the pairs are computed (:mod:`pairx.batch.executors`); default this process,
        with ``model``. Every executor writes the same files.
    model_spec
        How workers load ``model`` (:meth:`pairx.batch.ModelSpec.of`); needed by executors
        that run elsewhere (Ray).

    Returns
    -------
    EvaluationResult

    Raises
    ------
    DatasetError
        Empty dataset, no test split, too few pairs, ``truth`` on a non-synthetic dataset.
    """
    if len(dataset) == 0:
        raise DatasetError(f"dataset {dataset.root} is empty")
    names = _check_homographies(config, dataset, model, homography_source)
    groups = check_plan(config, dataset, model)
    out = Path(out_dir)
    with hold_folder(out, "evaluation output folder"):
        _check_config(out, config, overwrite)
        return _start(dataset, model, out, config, groups, names, batch_size=batch_size,
                          chunk_size=chunk_size, progress=progress,
                          homography_source=homography_source, engine_factory=engine_factory,
                          executor=executor, model_spec=model_spec)


def _start(dataset: ReIDDataset, model: ReIDModel, out: Path, config: EvaluationConfig,
           groups: dict[str, ReIDDataset], names: list[str], *, batch_size: int,
           chunk_size: int, progress: bool, homography_source: HomographySource | None,
           engine_factory: EngineFactory | None, executor: Executor | None,
           model_spec: ModelSpec | None) -> EvaluationResult:
    """:func:`evaluate` once the plan is checked and ``out`` is held."""
    synthetic = is_synthetic(dataset)
    executor = executor or LocalExecutor(model)
    spec = model_spec or ModelSpec(spec=model.name, device=str(model.device))
    layers_path = out / "layers.json"
    chosen: dict[str, Any] = (
        json.loads(layers_path.read_text(encoding="utf-8")) if layers_path.is_file() else {}
    )
    run = _Run(
        model=model,
        out=out,
        config=config,
        homographies=names,
        synthetic=synthetic,
        executor=executor,
        spec=spec,
        engine_factory=engine_factory,
        homography_source=homography_source,
        batch_size=batch_size,
        chunk_size=chunk_size,
        progress=progress,
        store=PairStore(out / "pairs.csv", PAIR_COLUMNS + tuple(f"res_{n}" for n in names[1:])),
        selection_store=PairStore(out / "selection_pairs.csv"),
        chosen=chosen,
        result=EvaluationResult(out),
    )
    try:
        for name, group in groups.items():
            run.evaluate_group(name, group)
    finally:
        run.store.close()
        run.selection_store.close()
    (out / UNFINISHED).unlink(missing_ok=True)
    return run.result
