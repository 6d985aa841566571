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
   candidate_layers`.
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
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pairx.core.errors import DatasetError, InputError
from pairx.core.files import atomic_write_text
from pairx.data.crops import image_input
from pairx.data.datasets import ReIDDataset, Sample
from pairx.evaluation.pair_metrics import ANALYSIS_SIDE, EngineFactory, EvaluateTask
from pairx.metrics.functional import MetricWarning, spearman_rho
from pairx.metrics.homography import HomographySource, is_synthetic, make_homography_source
from pairx.models.adapter import ReIDModel

if TYPE_CHECKING:  # pragma: no cover
    from pairx.batch.executors import Executor
    from pairx.batch.spec import ModelSpec

__all__ = [
    "ANALYSIS_SIDE",
    "PAIR_COLUMNS",
    "EvaluationConfig",
    "Pair",
    "candidate_pairs",
    "default_candidate_layers",
    "evaluate",
    "group_dataset",
    "select_pairs",
    "split_dataset",
]

#: Columns of ``pairs.csv`` and ``selection_pairs.csv`` (one row per pair and layer).
PAIR_COLUMNS: tuple[str, ...] = (
    "dataset",
    "layer",
    "query",
    "gallery",
    "correct",
    "similarity",
    "res",
    "mc",
    "n_matches",
    "res_exact",
    "faithful",
    "faithful_defined",
    "faithful_random",
)
#: Fewest correct (and incorrect) pairs a group needs to be evaluated.
MIN_PAIRS_PER_SIDE = 3


@dataclass(frozen=True)
class EvaluationConfig:
    """Everything that determines the results of an evaluation (stored in ``config.json``).

    Attributes
    ----------
    dataset
        Resolved dataset folder.
    model
        Model spec or name.
    layers
        Explicit layers, or ``("auto",)`` for layer selection.
    n_pairs
        Pairs per group (half correct, half incorrect, at most).
    homography
        ``"sift"``, ``"lightglue"`` or ``"truth"``; a comma-separated list (e.g.
        ``"truth,sift"``) computes ``res`` with the first and adds a ``res_<name>`` column for
        each other source, on the very same matches (to compare sources).
    seed
        Seed of the pair sampling and of the random-match baseline.
    k_start, k_max
        Top-k range of the pair selection (5 and 20 in the paper).
    n_selection_pairs
        Train-vs-train pairs used to select the layer (500 in the paper).
    n_top
        Top matches checked by the ground-truth faithfulness.
    group_by
        ``"species"`` (each annotated species is its own group) or ``"none"``.
    """

    dataset: str
    model: str
    layers: tuple[str, ...] = ("auto",)
    n_pairs: int = 2000
    homography: str = "sift"
    seed: int = 0
    k_start: int = 5
    k_max: int = 20
    n_selection_pairs: int = 500
    n_top: int = 20
    group_by: str = "species"

    def to_json(self) -> str:
        """Stable JSON text of the configuration."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @property
    def homographies(self) -> list[str]:
        """The homography source names, primary first."""
        return [h.strip() for h in self.homography.split(",") if h.strip()]

    @property
    def digest(self) -> str:
        """Short hash of the configuration."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Pair:
    """One query-gallery pair of a group."""

    query: str
    gallery: str
    correct: bool
    similarity: float


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


# ------------------------------------------------------------------------------- datasets


def split_dataset(dataset: ReIDDataset) -> ReIDDataset:
    """Return the dataset with a train/test split, creating one where there is none.

    A dataset with any ``split`` value keeps it (``val`` images are ignored by the protocol).
    Otherwise, within each identity, images sorted by ``image_id`` alternate train, test,
    train, ... so every identity with at least two images is on both sides.
    """
    if any(s.split for s in dataset):
        return dataset
    by_id: dict[str, list[Sample]] = {}
    for s in dataset:
        by_id.setdefault(s.identity, []).append(s)
    out: list[Sample] = []
    for ident in sorted(by_id):
        for i, s in enumerate(sorted(by_id[ident], key=lambda x: x.image_id)):
            out.append(_with_split(s, "train" if i % 2 == 0 else "test"))
    return ReIDDataset(dataset.root, out)


def _with_split(s: Sample, split: str) -> Sample:
    return Sample(s.image_id, s.identity, s.path, split, s.species, s.orientation, s.bbox)


def group_dataset(dataset: ReIDDataset, group_by: str) -> dict[str, ReIDDataset]:
    """Split a dataset into evaluation groups.

    Parameters
    ----------
    dataset
        The dataset.
    group_by
        ``"species"``: one group per annotated species when there are several; ``"none"``:
        one group named after the dataset folder.
    """
    if group_by not in ("species", "none"):
        raise InputError(f"group_by must be 'species' or 'none'; got {group_by!r}")
    species = [s for s in dataset.species if s]
    if group_by == "species" and len(species) > 1:
        return {sp: dataset.subset(species=[sp]) for sp in species}
    return {dataset.root.name or "dataset": dataset}


# --------------------------------------------------------------------------- pair selection


def _normalise(emb: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    return np.asarray(emb / np.maximum(norm, 1e-12))


def candidate_pairs(
    sim: np.ndarray,
    query_ids: Sequence[str],
    gallery_ids: Sequence[str],
    query_identity: Sequence[str],
    gallery_identity: Sequence[str],
    k: int,
) -> list[Pair]:
    """Top-``k`` gallery images of every query.

    Parameters
    ----------
    sim
        ``(Q, G)`` cosine similarities; entries set to ``-inf`` are never selected (used to
        exclude a query from its own gallery).
    query_ids, gallery_ids
        ``Q`` and ``G`` image ids.
    query_identity, gallery_identity
        Their identities.
    k
        Gallery images per query.

    Returns
    -------
    list[Pair]
        ``Q * min(k, G)`` pairs (minus excluded entries), query by query, best first.
    """
    out: list[Pair] = []
    kk = min(k, sim.shape[1])
    if kk == 0:
        return out
    order = np.argsort(-sim, axis=1, kind="stable")[:, :kk]
    for qi, row in enumerate(order):
        for gi in row:
            s = float(sim[qi, gi])
            if not math.isfinite(s):
                continue
            out.append(
                Pair(
                    query_ids[qi],
                    gallery_ids[gi],
                    query_identity[qi] == gallery_identity[gi],
                    s,
                )
            )
    return out


def select_pairs(
    sim: np.ndarray,
    query: Sequence[Sample],
    gallery: Sequence[Sample],
    n_pairs: int,
    *,
    seed: int,
    k_start: int = 5,
    k_max: int = 20,
    where: str = "",
) -> list[Pair]:
    """The paper's pair selection: top-k with k raised until enough pairs, then sampling.

    Parameters
    ----------
    sim
        ``(Q, G)`` cosine similarities of queries and gallery (``-inf`` = excluded).
    query, gallery
        The samples.
    n_pairs
        Requested pairs: up to ``n_pairs // 2`` correct and ``n_pairs - n_pairs // 2``
        incorrect.
    seed
        Sampling seed.
    k_start, k_max
        Range of k.
    where
        Group name for messages.

    Returns
    -------
    list[Pair]
        Sampled pairs, correct ones first, each side in candidate order.

    Raises
    ------
    DatasetError
        Fewer than 3 correct or 3 incorrect candidate pairs even at ``k_max``.
    """
    if n_pairs < 2 * MIN_PAIRS_PER_SIDE:
        raise InputError(f"n_pairs must be at least {2 * MIN_PAIRS_PER_SIDE}; got {n_pairs}")
    n_cor, n_inc = n_pairs // 2, n_pairs - n_pairs // 2
    args = (
        [s.image_id for s in query],
        [s.image_id for s in gallery],
        [s.identity for s in query],
        [s.identity for s in gallery],
    )
    cands: list[Pair] = []
    for k in range(k_start, k_max + 1):
        cands = candidate_pairs(sim, *args, k=k)
        if sum(p.correct for p in cands) >= n_cor and sum(not p.correct for p in cands) >= n_inc:
            break
    cor = [p for p in cands if p.correct]
    inc = [p for p in cands if not p.correct]
    if len(cor) < MIN_PAIRS_PER_SIDE or len(inc) < MIN_PAIRS_PER_SIDE:
        raise DatasetError(
            f"{where}: too few pairs to evaluate: {len(cor)} correct and {len(inc)} incorrect "
            f"among the top-{k_max} gallery images of {len(query)} queries (need at least "
            f"{MIN_PAIRS_PER_SIDE} of each); the dataset needs more images per identity and "
            "more identities"
        )
    if len(cor) < n_cor or len(inc) < n_inc:
        warnings.warn(
            f"{where}: only {len(cor)} correct and {len(inc)} incorrect pairs at k={k_max}; "
            "using a smaller sample, as the paper does for small datasets",
            MetricWarning,
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    pick_c = np.sort(rng.choice(len(cor), size=min(n_cor, len(cor)), replace=False))
    pick_i = np.sort(rng.choice(len(inc), size=min(n_inc, len(inc)), replace=False))
    return [cor[i] for i in pick_c] + [inc[i] for i in pick_i]


# --------------------------------------------------------------------------- layers


def default_candidate_layers(model: ReIDModel, max_layers: int = 4) -> list[str]:
    """Candidate layers for ``auto`` layer selection.

    The model's recommended layers (``metadata["layers"]``, or
    :data:`pairx.models.default.DEFAULT_LAYERS` for the default model) when known; otherwise
    ``max_layers`` layers spread over the spatial modules whose grid is between 1/32 and 1/4 of
    the input size (the middle of the network, where the paper found the best layers).
    """
    meta = model.metadata.get("layers") if isinstance(model.metadata, dict) else None
    if isinstance(meta, (list, tuple)) and meta:
        return [str(x) for x in meta]
    if model.name == "default":
        from pairx.models.default import DEFAULT_LAYERS

        return list(DEFAULT_LAYERS)
    from pairx.models.layers import candidate_layers

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


# --------------------------------------------------------------------------- incremental store


class PairStore:
    """Append-only CSV of per-pair results that survives interruption.

    Parameters
    ----------
    path
        CSV file (created with the :data:`PAIR_COLUMNS` header).
    """

    def __init__(self, path: Path, columns: Sequence[str] = PAIR_COLUMNS) -> None:
        self.path = path
        self.columns = tuple(columns)
        self.done: set[tuple[str, str, str, str]] = set()
        self._recover()
        self._fh = self.path.open("a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh)

    def _recover(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            with self.path.open("w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerow(self.columns)
            return
        text = self.path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        header = next(csv.reader([lines[0]])) if lines else []
        if tuple(header) != self.columns:
            raise InputError(
                f"{self.path} has columns {header}, expected {list(self.columns)}; it was not "
                "written by this version of 'pairx evaluate'; use another output folder"
            )
        if not lines[-1].endswith("\n"):  # interrupted mid-line: drop the partial row
            lines = lines[:-1]
            atomic_write_text(self.path, "".join(lines))
        for row in csv.DictReader(lines):
            self.done.add((row["dataset"], row["layer"], row["query"], row["gallery"]))

    def has(self, group: str, layers: Sequence[str], pair: Pair) -> bool:
        """Whether every layer of this pair is already stored."""
        return all((group, layer, pair.query, pair.gallery) in self.done for layer in layers)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append the rows of one pair and flush them to disk."""
        for row in rows:
            key = (row["dataset"], row["layer"], row["query"], row["gallery"])
            if key in self.done:  # a layer row kept from an interrupted earlier run
                continue
            self._writer.writerow([_fmt(row.get(c, "")) for c in self.columns])
            self.done.add(key)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return repr(float(v))
    return str(v)


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``pairs.csv`` with numbers parsed (``correct`` as bool)."""
    out: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            parsed: dict[str, Any] = dict(row)
            parsed["correct"] = row["correct"] == "1"
            for c in list(row)[5:]:
                parsed[c] = float(row[c]) if row[c] not in ("", "nan") else math.nan
            out.append(parsed)
    return out


# --------------------------------------------------------------------------- evaluation


def _embed_group(
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


def _n_images(pairs: Sequence[Pair]) -> int:
    """Cache size that keeps every image of ``pairs`` (no per-image work is ever redone)."""
    return len({p.query for p in pairs} | {p.gallery for p in pairs}) + 1


def _query_chunks(pairs: Sequence[Pair], size: int) -> Iterator[list[Pair]]:
    """Consecutive runs of ``pairs`` (sorted by query) of at least ``size`` pairs (the last may
    be shorter) that end at a change of query."""
    chunk: list[Pair] = []
    for i, pair in enumerate(pairs):
        chunk.append(pair)
        last = i + 1 == len(pairs)
        if last or (len(chunk) >= size and pairs[i + 1].query != pair.query):
            yield chunk
            chunk = []


def _run_pairs(
    task: EvaluateTask,
    executor: Executor,
    pairs: Sequence[Pair],
    store: PairStore,
    desc: str,
    progress: bool,
    chunk_size: int,
) -> tuple[int, int]:
    """Compute and store the pairs not yet in ``store``, about ``chunk_size`` pairs per chunk.

    Pairs are processed query by query and a chunk never splits a query's pairs (so the
    engine sees all pairs of a query together and can reuse its per-image work); the executor
    gives the chunks' rows back in order and they are flushed to disk after every chunk (the
    resume granularity), so every backend writes the same file.
    """
    todo = [p for p in pairs if not store.has(task.group, task.layers, p)]
    todo.sort(key=lambda p: (p.query, p.gallery))
    chunks = list(_query_chunks(todo, chunk_size))
    bar = tqdm(total=len(todo), desc=desc, disable=not progress, unit="pair")
    for chunk, chunk_rows in zip(chunks, executor.map(task, chunks), strict=True):
        for rows in chunk_rows:
            store.write(rows)
        bar.update(len(chunk))
    bar.close()
    return len(todo), len(pairs) - len(todo)


def _iter_layers_rho(
    rows: Sequence[dict[str, Any]], layers: Sequence[str]
) -> Iterator[tuple[str, float]]:
    for layer in layers:
        sub = [r for r in rows if r["layer"] == layer]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricWarning)
            rho = spearman_rho([r["res"] for r in sub], [r["similarity"] for r in sub])
        yield layer, rho


def _check_config(out_dir: Path, config: EvaluationConfig, overwrite: bool) -> None:
    cfg_path = out_dir / "config.json"
    if cfg_path.is_file() and not overwrite:
        old = cfg_path.read_text(encoding="utf-8")
        if old.strip() != config.to_json().strip():
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, config, overwrite)
    synthetic = is_synthetic(dataset)
    names = config.homographies
    if not names:
        raise InputError("config.homography names no homography source")
    if len(set(names)) != len(names):
        raise InputError(f"homography sources are listed twice: {config.homography!r}")
    for n in names:  # an unusable source (truth without ground truth...) fails before any work
        if n != "lightglue" and not (n == names[0] and homography_source is not None):
            make_homography_source(n, dataset, device=model.device)
    from pairx.batch.executors import LocalExecutor
    from pairx.batch.spec import ModelSpec

    executor = executor or LocalExecutor(model)
    spec = model_spec or ModelSpec(spec=model.name, device=str(model.device))

    def task(name: str, group: ReIDDataset, layers: Sequence[str], homographies: Sequence[str],
             with_truth: bool, cache_size: int) -> EvaluateTask:
        return EvaluateTask(spec, name, group, tuple(layers), tuple(homographies), with_truth,
                            config, cache_size, engine_factory, homography_source)

    dataset = split_dataset(dataset)
    groups = group_dataset(dataset, config.group_by)
    layers_path = out / "layers.json"
    chosen: dict[str, Any] = (
        json.loads(layers_path.read_text(encoding="utf-8")) if layers_path.is_file() else {}
    )
    result = EvaluationResult(out)
    store = PairStore(out / "pairs.csv", PAIR_COLUMNS + tuple(f"res_{n}" for n in names[1:]))
    sel_store = PairStore(out / "selection_pairs.csv")
    try:
        for name, group in groups.items():
            train = [s for s in group if s.split == "train"]
            test = [s for s in group if s.split == "test"]
            if not test:
                raise DatasetError(
                    f"{name}: no test-split images to use as queries; the protocol needs a "
                    "'split' column with train and test images"
                )
            if not train:
                raise DatasetError(f"{name}: no train-split images to use as the gallery")
            queries, gallery = test, train
            if not {s.identity for s in test} & {s.identity for s in train}:
                # identity-disjoint split (e.g. the synthetic benchmark): no query could have a
                # correct match; evaluate on the unseen test individuals, split within each
                # identity into query and gallery halves
                halves = split_dataset(ReIDDataset(group.root, [_with_split(s, "") for s in test]))
                queries = [s for s in halves if s.split == "test"]
                gallery = [s for s in halves if s.split == "train"]
            auto = config.layers == ("auto",)
            # train images are embedded only when needed (layer selection or as the gallery)
            sub = ReIDDataset(group.root, _unique((train if auto else []) + queries + gallery))
            emb = _normalise(
                _embed_group(
                    model, sub, out / "embeddings" / f"{_safe(name)}.npz", batch_size, progress
                )
            )
            row_of = {s.image_id: i for i, s in enumerate(sub)}
            e_train = emb[[row_of[s.image_id] for s in train]] if auto else emb[:0]
            e_query = emb[[row_of[s.image_id] for s in queries]]
            e_gallery = emb[[row_of[s.image_id] for s in gallery]]
            if auto:
                if name in chosen:
                    layer = chosen[name]["layer"]
                    result.selection[name] = chosen[name]["rho_res"]
                else:
                    cands = default_candidate_layers(model)
                    sim_tt = e_train @ e_train.T
                    np.fill_diagonal(sim_tt, -np.inf)
                    sel_pairs = select_pairs(
                        sim_tt,
                        train,
                        train,
                        config.n_selection_pairs,
                        seed=config.seed + 1,
                        k_start=config.k_start,
                        k_max=config.k_max,
                        where=f"{name} (layer selection)",
                    )
                    sel_task = task(name, group, cands, names[:1], False, _n_images(sel_pairs))
                    _run_pairs(sel_task, executor, sel_pairs, sel_store, f"select layer {name}",
                               progress, chunk_size)
                    rows = [
                        r
                        for r in read_pairs(sel_store.path)
                        if r["dataset"] == name
                        and (r["query"], r["gallery"]) in {(p.query, p.gallery) for p in sel_pairs}
                    ]
                    rhos = dict(_iter_layers_rho(rows, cands))
                    finite = {k: v for k, v in rhos.items() if math.isfinite(v)}
                    layer = max(finite, key=lambda k: finite[k]) if finite else cands[0]
                    chosen[name] = {"layer": layer, "rho_res": rhos}
                    result.selection[name] = rhos
                    atomic_write_text(layers_path, json.dumps(chosen, indent=2) + "\n")
                layers = [layer]
            else:
                layers = list(config.layers)
            result.layers[name] = layers
            pairs = select_pairs(
                e_query @ e_gallery.T,
                queries,
                gallery,
                config.n_pairs,
                seed=config.seed,
                k_start=config.k_start,
                k_max=config.k_max,
                where=name,
            )
            main = task(name, group, layers, names, synthetic, _n_images(pairs))
            n_new, n_old = _run_pairs(main, executor, pairs, store, f"evaluate {name}",
                                      progress, chunk_size)
            result.n_computed += n_new
            result.n_skipped += n_old
    finally:
        store.close()
        sel_store.close()
    return result


def _unique(samples: Sequence[Sample]) -> list[Sample]:
    seen: dict[str, Sample] = {}
    for s in samples:
        seen.setdefault(s.image_id, s)
    return list(seen.values())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "dataset"
