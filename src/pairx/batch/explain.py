"""``pairx explain-batch``: PAIR-X records for every pair of a pairs file, resumable, any backend.

The pairs are sorted by query and cut into chunks that never split a query, so each query's
LRP graph is built once per chunk (the engine's graph sharing); each pair becomes one record
of the result store (``OUT/results.jsonl``, :class:`~pairx.batch.store.JsonlStore`), written
by the driver alone in chunk order. A pair whose image cannot be read, or whose explanation
fails, is stored with ``"status": "failed"`` and the reason, and the job goes on.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from pairx.batch.spec import ModelSpec
from pairx.batch.store import JsonlStore
from pairx.core.errors import InputError
from pairx.core.files import atomic_write_text, user_path
from pairx.core.locks import hold_folder
from pairx.core.tables import read_csv_rows
from pairx.data.datasets import ReIDDataset, Sample

if TYPE_CHECKING:  # pragma: no cover
    from pairx.batch.executors import Executor
    from pairx.core.results import PairExplanation
    from pairx.models.adapter import ReIDModel

__all__ = ["BatchResult", "ExplainTask", "PairItem", "explain_batch", "read_pairs_file"]

PAIR_FILE_COLUMNS = ("image_a", "image_b")
RESULTS = "results.jsonl"


@dataclass(frozen=True)
class PairItem:
    """One pair of a pairs file.

    Attributes
    ----------
    key
        ``"<image_a>\\t<image_b>"`` as written in the file (the store's key).
    row
        1-based data row of the pairs file.
    image_a, image_b
        The file's values.
    source_a, source_b
        What to read: a path, or a dataset :class:`Sample` (its bbox crop); ``None`` when the
        value names no image (``error`` says why).
    error
        Why the pair cannot be explained before anything runs (``None``: it can be tried).
    """

    key: str
    row: int
    image_a: str
    image_b: str
    source_a: str | Sample | None
    source_b: str | Sample | None
    error: str | None = None


def _resolve(value: str, base: Path, dataset: ReIDDataset | None) -> tuple[Any, str | None]:
    if dataset is not None:
        try:
            return dataset.by_id(value), None
        except Exception:  # not an id: maybe a path
            pass
    path = user_path(value)
    for cand in ([path] if path.is_absolute() else [base / path, Path.cwd() / path]):
        if cand.is_file():
            return str(cand.resolve()), None
    what = f"neither an image id of {dataset.root} nor" if dataset is not None else "not"
    return None, (f"{value!r} is {what} an image file (relative paths are read from "
                  f"{base.resolve()})")


def read_pairs_file(path: str | Path, dataset: ReIDDataset | None = None) -> list[PairItem]:
    """The pairs of a CSV file with columns ``image_a, image_b`` (paths or ``dataset`` ids).

    Relative paths are read from the file's folder (then the working folder). A repeated pair
    is kept once. Unknown ids and missing files become pairs with an ``error`` (stored as
    failed rows) unless no pair at all names two images, which is refused.

    Raises
    ------
    InputError
        Unreadable file, missing columns, no pairs, or no pair naming two images.
    """
    p = Path(path)
    _, table = read_csv_rows(
        p, required=PAIR_FILE_COLUMNS, what="pairs file", error=InputError,
        hint="paths, or image ids of --data")
    items: dict[str, PairItem] = {}
    for entry in table:
        n, a, b = entry.line - 1, entry.values["image_a"], entry.values["image_b"]
        if not a and not b:
            continue
        key = f"{a}\t{b}"
        if key in items:
            continue
        (sa, ea), (sb, eb) = _resolve(a, p.parent, dataset), _resolve(b, p.parent, dataset)
        items[key] = PairItem(key, n, a, b, sa, sb, ea or eb)
    if not items:
        raise InputError(f"{p}: no pairs (the file has a header but no rows)")
    if all(it.error for it in items.values()):
        first = next(iter(items.values()))
        raise InputError(f"{p}: no pair names two images; the first: {first.error}"
                         + ("" if dataset else " (pass --data DIR for dataset ids)"))
    return list(items.values())


def _figure_name(item: PairItem, layer: str) -> str:
    digest = hashlib.sha256(item.key.encode()).hexdigest()[:10]

    def stem(v: str) -> str:
        s = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(v).stem)
        return s[:40] or "image"

    lay = "".join(c if c.isalnum() or c in "-_" else "-" for c in layer)
    return f"figures/{stem(item.image_a)}__{stem(item.image_b)}_{digest}_{lay}.png"


@dataclass(frozen=True)
class ExplainTask:
    """PAIR-X records of pairs, as a batch task (:func:`pairx.batch.run_chunk`).

    Attributes
    ----------
    model
        How workers load the model.
    layers
        Layers matched.
    n_matches
        Top matches kept per record (and drawn).
    n_pixel_maps
        Top matches traced back to pixels (needed by figures; 0 is fastest).
    figures
        Whether records carry a PNG of each layer's explanation (``"_png"``).
    cache_size
        Images the engine keeps prepared per worker.
    """

    model: ModelSpec
    layers: tuple[str, ...]
    n_matches: int = 20
    n_pixel_maps: int = 0
    figures: bool = False
    cache_size: int = 64

    def build(self, model: ReIDModel) -> Callable[[Sequence[PairItem]], list[dict[str, Any]]]:
        """The chunk function: one PairX engine on ``model``."""
        from pairx.explainers.pairx import PairX

        engine = PairX(model, list(self.layers), n_matches=self.n_matches,
                       n_pixel_maps=self.n_pixel_maps, cache_size=self.cache_size,
                       allow_untrained=True)
        return lambda chunk: _explain_chunk(self, engine, chunk)


def _read(source: str | Sample) -> str | np.ndarray:
    from pairx.core.images import load_image
    from pairx.data.crops import image_input

    if isinstance(source, Sample):
        return image_input(source)
    load_image(source)  # decodes: an unreadable file fails here, for this pair only
    return source


def _failed(item: PairItem, reason: str) -> dict[str, Any]:
    return {"key": item.key, "row": item.row, "image_a": item.image_a, "image_b": item.image_b,
            "status": "failed", "error": reason}


def _record(task: ExplainTask, item: PairItem, expls: dict[str, PairExplanation]
            ) -> dict[str, Any]:
    from pairx.metrics.functional import match_coverage

    first = next(iter(expls.values()))
    rec: dict[str, Any] = {
        "key": item.key, "row": item.row, "image_a": item.image_a, "image_b": item.image_b,
        "status": "ok", "similarity": float(first.similarity),
        "input_size": [int(first.image_a.shape[0]), int(first.image_a.shape[1])],
        "warnings": list(first.warnings), "layers": {},
    }
    for name, e in expls.items():
        m = e.matches
        k = min(task.n_matches, len(m))
        orig_a, orig_b = e.original_xy()
        top = {f: getattr(m, f)[:k] for f in ("grid_a", "grid_b", "xy_a", "xy_b", "relevance",
                                              "distance")}
        rec["layers"][name] = {
            "grid": list(e.relevance_a.shape), "n_matches": len(m),
            "mc": float(match_coverage(e.relevance_a, e.relevance_b, m.grid_a, m.grid_b)),
            "matches": {**top, "xy_a_original": orig_a[:k], "xy_b_original": orig_b[:k]},
        }
        if task.figures:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(e.render()).save(buf, format="PNG")
            rec.setdefault("_png", {})[name] = buf.getvalue()
            rec.setdefault("figures", {})[name] = _figure_name(item, name)
    return rec


def _explain_chunk(task: ExplainTask, engine: Any, chunk: Sequence[PairItem]
                   ) -> list[dict[str, Any]]:
    """Records of a chunk: unreadable images and failing pairs become failed records."""
    out: dict[str, dict[str, Any]] = {}
    inputs: dict[str, Any] = {}
    todo: list[PairItem] = []
    for item in chunk:
        if item.error or item.source_a is None or item.source_b is None:
            out[item.key] = _failed(item, item.error or "no image")
            continue
        try:
            for value, src in ((item.image_a, item.source_a), (item.image_b, item.source_b)):
                if value not in inputs:
                    inputs[value] = _read(src)
            todo.append(item)
        except Exception as exc:
            out[item.key] = _failed(item, f"{type(exc).__name__}: {exc}")

    def run(items: Sequence[PairItem]) -> list[dict[str, PairExplanation]]:
        return engine.explain_layers_pairs(
            [(inputs[i.image_a], inputs[i.image_b]) for i in items],
            keys=[(i.image_a, i.image_b) for i in items], progress=False)

    try:
        results = run(todo)
        for item, expls in zip(todo, results, strict=True):
            out[item.key] = _record(task, item, expls)
    except Exception:  # isolate the pair that fails; the others are still explained
        for item in todo:
            try:
                out[item.key] = _record(task, item, run([item])[0])
            except Exception as exc:
                out[item.key] = _failed(item, f"{type(exc).__name__}: {exc}")
    return [out[i.key] for i in chunk]


@dataclass
class BatchResult:
    """What :func:`explain_batch` did: pairs computed now, found done, failed (stored)."""

    out_dir: Path
    n_computed: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    seconds: float = 0.0


def _chunks(items: Sequence[PairItem], size: int) -> Iterator[list[PairItem]]:
    """Runs of at least ``size`` items (sorted by query) that end at a change of query."""
    chunk: list[PairItem] = []
    for i, item in enumerate(items):
        chunk.append(item)
        if i + 1 == len(items) or (len(chunk) >= size and items[i + 1].image_a != item.image_a):
            yield chunk
            chunk = []


def _job_config(task: ExplainTask) -> str:
    cfg = asdict(task)
    cfg["model"] = {"spec": task.model.spec, "digest": task.model.digest,
                    "preprocessing": [list(p) for p in task.model.preprocessing]}
    cfg.pop("cache_size")
    return json.dumps(cfg, indent=2, sort_keys=True) + "\n"


def explain_batch(
    pairs: Sequence[PairItem],
    task: ExplainTask,
    out_dir: str | Path,
    executor: Executor,
    *,
    chunk_size: int = 16,
    overwrite: bool = False,
    retry_failed: bool = False,
    progress: bool = True,
) -> BatchResult:
    """Explain every pair not yet in ``OUT/results.jsonl`` and append its record.

    Parameters
    ----------
    pairs
        :func:`read_pairs_file` output.
    task
        What to compute (model spec, layers, matches, figures).
    out_dir
        Output folder: ``job.json`` (the settings; a rerun must use the same ones),
        ``results.jsonl``, ``figures/``.
    executor
        Where chunks run (:class:`~pairx.batch.executors.LocalExecutor`, ``RayExecutor``).
    chunk_size
        Pairs per chunk (at least; a query's pairs are never split); the resume granularity.
    overwrite
        Discard results of other settings instead of refusing.
    retry_failed
        Try the pairs stored as failed again.
    progress
        Show a progress bar (with ETA).

    Raises
    ------
    InputError
        ``OUT`` holds results of other settings (without ``overwrite``), bad ``chunk_size``.
    BusyError
        Another process is writing ``OUT`` (:func:`pairx.core.locks.hold_folder`).
    """
    if chunk_size < 1:
        raise InputError(f"--chunk-size must be at least 1; got {chunk_size}")
    out = Path(out_dir)
    with hold_folder(out, "explain-batch output folder"):
        return _run_held(pairs, task, out, executor, chunk_size=chunk_size, overwrite=overwrite,
                         retry_failed=retry_failed, progress=progress)


def _run_held(pairs: Sequence[PairItem], task: ExplainTask, out: Path, executor: Executor, *,
              chunk_size: int, overwrite: bool, retry_failed: bool, progress: bool
              ) -> BatchResult:
    """:func:`explain_batch` once ``out`` is held."""
    cfg_path, text = out / "job.json", _job_config(task)
    if cfg_path.is_file() and cfg_path.read_text(encoding="utf-8") != text:
        if not overwrite:
            raise InputError(f"{out} holds results of other settings ({cfg_path}); use another "
                             "output folder, or --overwrite to discard them")
        (out / RESULTS).unlink(missing_ok=True)
    atomic_write_text(cfg_path, text)
    start = time.perf_counter()
    store = JsonlStore(out / RESULTS)
    result = BatchResult(out)
    try:
        if retry_failed:
            store.drop(lambda r: r.get("status") == "failed")
        todo = sorted((p for p in pairs if p.key not in store),
                      key=lambda p: (p.image_a, p.image_b))
        result.n_skipped = len(pairs) - len(todo)
        chunks = list(_chunks(todo, chunk_size))
        bar = tqdm(total=len(todo), desc="explain-batch", unit="pair", disable=not progress)
        for chunk, records in zip(chunks, executor.map(task, chunks), strict=True):
            for rec in records:
                for name, png in rec.pop("_png", {}).items():
                    path = out / rec["figures"][name]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(".tmp")
                    tmp.write_bytes(png)
                    tmp.replace(path)
                result.n_failed += rec["status"] == "failed"
            result.n_computed += store.write(records)
            bar.update(len(chunk))
        bar.close()
    finally:
        store.close()
    result.seconds = time.perf_counter() - start
    return result
