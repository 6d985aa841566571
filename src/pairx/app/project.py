"""Review projects: ``pairx review init`` embeds a dataset once and stores every query's
exact top-k gallery candidates.

A project is a folder::

    PROJ/project.json     what the project reviews: data folder, model, layers, k, splits
    PROJ/review.sqlite    images, embeddings, candidates, decision events, jobs (store.py)
    PROJ/cache/           PAIR-X and AMD explanations under content keys (cache.py)

Candidates are exact: cosine similarities of unit embeddings, computed blockwise in numpy over
the whole gallery (no approximate search, so a true match is never missed because an index
skipped it). Re-running ``init`` is incremental (only new or changed images are embedded) and
resumable (embeddings are committed batch by batch); the model's weight digest is stored and
a different model is refused unless ``replace_model`` is set.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pairx import __version__
from pairx.app.search import top_k
from pairx.app.store import (
    connect,
    count_embedded,
    embedded_images,
    images_to_embed,
    mark_unreadable,
    record_model_digest,
    replace_candidates,
    store_embeddings,
    transaction,
    upsert_image,
)
from pairx.core.errors import DatasetError, InputError, PairxError
from pairx.core.files import user_path
from pairx.core.locks import LOCK_FILE, hold_folder
from pairx.core.tables import read_csv_rows

__all__ = [
    "PROJECT_FILE",
    "InitSummary",
    "Project",
    "ProjectError",
    "crop",
    "init_project",
]

PROJECT_FILE = "project.json"
PAIRX_OPTIONS = {"n_matches": 20, "n_pixel_maps": 10}
"""PAIR-X settings of a new project (stored in ``project.json``, part of every cache key)."""
PROJECT_SCHEMA = "pairx-review-project/1"
_OPTIONAL = {"location": ("location",), "captured_at": ("captured_at", "date", "datetime"),
             "viewpoint": ("viewpoint", "orientation")}


class ProjectError(PairxError):
    """A folder that is not a review project, or a project that cannot take this request."""


@dataclass
class Project:
    """An opened review project (its settings; :meth:`db` opens the database)."""

    root: Path
    settings: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path) -> Project:
        """Open ``root``.

        Raises
        ------
        ProjectError
            ``root`` is not a project folder, or its ``project.json`` is unreadable.
        """
        root = user_path(root).resolve()
        file = root / PROJECT_FILE
        if not file.is_file():
            raise ProjectError(
                f"{root} is not a pairx review project (no {PROJECT_FILE}); create one with "
                f"'pairx review init {root} --data DIR --model MODEL'")
        try:
            settings = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ProjectError(f"{file}: unreadable project file ({exc})") from exc
        if settings.get("schema") != PROJECT_SCHEMA:
            raise ProjectError(f"{file}: not a {PROJECT_SCHEMA} project file")
        if not (root / "review.sqlite").is_file():
            raise ProjectError(f"{root}: project file present but review.sqlite is missing; "
                               f"re-run 'pairx review init {root} ...'")
        return cls(root, settings)

    @property
    def db_path(self) -> Path:
        return self.root / "review.sqlite"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def layers(self) -> list[str]:
        return list(self.settings["layers"])

    @property
    def interpreter(self) -> dict[str, Any] | None:
        """The AMD interpreter the app offers (``spec``, ``digest``, ``attributes``) or ``None``."""
        found = self.settings.get("interpreter")
        return dict(found) if found else None

    @property
    def views(self) -> list[str]:
        """What the worker explains: the PAIR-X layers, then AMD where there is an interpreter."""
        from pairx.app.amd import AMD_VIEW

        return self.layers + ([AMD_VIEW] if self.interpreter else [])

    @property
    def model_digest(self) -> str:
        return str(self.settings["model_digest"])

    def db(self) -> Any:
        """A new connection to the project's database (WAL, ``synchronous=FULL``)."""
        return connect(self.db_path)


@dataclass
class InitSummary:
    """What one ``init`` run did."""

    images: int
    embedded: int
    reused: int
    problems: list[str] = field(default_factory=list)
    queries: int = 0
    gallery: int = 0
    seconds_embedding: float = 0.0
    seconds_search: float = 0.0
    interpreter: dict[str, Any] | None = None

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds_embedding if self.seconds_embedding > 0 else 0.0


def crop(rgb: np.ndarray, bbox: tuple[float, ...] | str) -> np.ndarray:
    """``(H, W, 3)`` image cut to an ``(x, y, w, h)`` box (a tuple, or ``"x,y,w,h"``)."""
    box = [float(v) for v in bbox.split(",")] if isinstance(bbox, str) else list(bbox)
    x0, y0, w, h = (round(v) for v in box)
    return rgb[max(0, y0):y0 + h, max(0, x0):x0 + w]


def _optional_columns(root: Path) -> dict[str, dict[str, str]]:
    """``image_id -> {location, captured_at, viewpoint}`` from ``metadata.csv`` (if any)."""
    csv_path = root / "metadata.csv"
    if not csv_path.is_file():
        return {}
    out: dict[str, dict[str, str]] = {}
    for entry in read_csv_rows(csv_path, what="metadata file")[1]:
        row = entry.values
        out[row.get("image_id", "")] = {
            name: next((row[c] for c in cols if row.get(c)), "")
            for name, cols in _OPTIONAL.items()}
    return out


def _file_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _select(rows: list[Any], which: str, what: str) -> list[Any]:
    if which == "all":
        return rows
    chosen = [r for r in rows if r["split"] == which]
    if not chosen:
        splits = sorted({r["split"] or "(none)" for r in rows})
        raise InputError(f"no image has split {which!r} for the {what}; the dataset has "
                         f"{', '.join(splits)} (or pass 'all')")
    return chosen


def init_project(
    root: str | Path,
    *,
    data: str | Path,
    model: str = "default",
    weights: str | Path | None = None,
    layers: list[str] | None = None,
    k: int = 10,
    queries: str = "test",
    gallery: str = "rest",
    replace_model: bool = False,
    batch_size: int = 32,
    progress: bool = True,
    load: Callable[..., Any] | None = None,
    model_options: dict[str, Any] | None = None,
    interpreter: str | None = None,
) -> InitSummary:
    """Create or update the review project at ``root`` (see the module docstring).

    Parameters
    ----------
    data
        WildlifeDatasets-style folder (``metadata.csv``; optional columns ``location``,
        ``date``/``captured_at``, ``viewpoint``/``orientation``, ``species``).
    model, weights
        The model, as :func:`pairx.load_model` takes it.
    layers
        PAIR-X layers the app offers (default: the model's recommended layer).
    k
        Candidates stored per query.
    queries
        Split whose images are the queries (``"all"``: every image, leave-one-out; when the
        dataset has no split, every image).
    gallery
        ``"rest"`` (every image that is not a query; every other image when the queries are
        all of them), ``"all"`` or a split name.
    replace_model
        Accept a model whose weights differ from the project's (embeddings are redone).
    load
        Model loader (default :func:`pairx.load_model`), for tests.
    model_options
        Further :func:`pairx.load_model` arguments (``size``, ``mean``, ``std`` of an ``onnx:``
        model), kept in the project for the app's worker.
    interpreter
        The AMD interpreter shown beside PAIR-X, as :func:`pairx.app.amd.resolve_interpreter`
        takes it; ``None`` (``"auto"``): the project's previous one for the same weights, else
        the shipped one where it fits the model.

    Raises
    ------
    ProjectError, DatasetError, ModelError, InputError
        With one line saying what to do.
    """
    import torch
    from tqdm.auto import tqdm

    from pairx.core.images import load_image
    from pairx.data.datasets import load_dataset
    from pairx.models.layer_choice import default_layers
    from pairx.models.loaders import load_model
    from pairx.models.provenance import weight_digest

    if k < 1:
        raise InputError(f"--k must be at least 1; got {k}")
    root = user_path(root).resolve()
    if root.exists() and not root.is_dir():
        raise ProjectError(f"{root} exists and is not a folder")
    previous: dict[str, Any] | None = None
    if (root / PROJECT_FILE).is_file():
        previous = Project.open(root).settings
    elif root.is_dir() and any(p.name != LOCK_FILE for p in root.iterdir()):
        raise ProjectError(f"{root} is a non-empty folder that is not a review project; "
                           f"choose a new folder")
    dataset = load_dataset(data, check_files=False)
    if model.startswith("onnx:"):  # the worker may run elsewhere: keep an absolute path
        model = "onnx:" + str(user_path(model[len("onnx:"):]).resolve())
    options = dict(model_options or (previous or {}).get("model_options") or {})
    net = (load or load_model)(model, weights=weights, **options)
    digest = weight_digest(net)
    if previous is not None and previous["model_digest"] != digest and not replace_model:
        raise ProjectError(
            f"{root} was built with model weights {previous['model_digest'][:12]}, not "
            f"{digest[:12]} ({model}); pass --replace-model to re-embed with the new model "
            f"(decisions are kept, each records the model it was made with)")
    chosen = layers or (list(previous["layers"]) if previous else default_layers(net))
    from pairx.models.layers import get_layer

    for name in chosen:
        get_layer(net, name)
    from pairx.app.amd import resolve_interpreter

    keep = (interpreter in (None, "auto") and previous is not None and "interpreter" in previous
            and previous["model_digest"] == digest)
    amd = previous["interpreter"] if keep and previous else resolve_interpreter(interpreter, net)
    _check_splits(dataset, queries, gallery)
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1; got {batch_size}")
    with hold_folder(root, "review project"), _removed_on_error(root, fresh=previous is None):
        root.mkdir(parents=True, exist_ok=True)
        (root / "cache").mkdir(exist_ok=True)
        settings = {
            "schema": PROJECT_SCHEMA, "data": str(user_path(data).resolve()),
            "model": model, "weights": None if weights is None else str(Path(weights).resolve()),
            "model_name": net.name, "model_digest": digest, "layers": chosen, "k": int(k),
            "model_options": {k_: list(v) if isinstance(v, tuple) else v
                              for k_, v in options.items()},
            "queries": queries, "gallery": gallery, "pairx": __version__,
            "cache_limit_mb": (previous or {}).get("cache_limit_mb", 2048),
            "pairx_options": (previous or {}).get("pairx_options", dict(PAIRX_OPTIONS)),
            "interpreter": amd,
        }
        conn = connect(root / "review.sqlite", create=True)
        _write_settings(root, settings)  # first, so that an interrupted run is resumed
        extra = _optional_columns(dataset.root)
        summary = InitSummary(images=len(dataset), embedded=0, reused=0, interpreter=amd)
        with transaction(conn):
            for s in dataset:
                sha = _file_hash(s.path)
                ex = extra.get(s.image_id, {})
                status, problem = ("ok", "") if sha else ("missing", f"cannot read {s.path}")
                upsert_image(
                    conn, image_id=s.image_id, identity=s.identity, path=str(s.path),
                    split=s.split, species=s.species, location=ex.get("location", ""),
                    captured_at=ex.get("captured_at", ""),
                    viewpoint=ex.get("viewpoint", "") or s.orientation, sha256=sha or "",
                    status=status, problem=problem,
                    bbox="" if s.bbox is None else ",".join(f"{v:g}" for v in s.bbox))
                if not sha:
                    summary.problems.append(f"{s.image_id}: missing file {s.path}")
        crops = {s.image_id: s.bbox for s in dataset}
        todo = images_to_embed(conn, digest)
        summary.reused = count_embedded(conn, digest)
        t0 = time.perf_counter()
        bar = tqdm(total=len(todo), desc="embedding", unit="img", disable=not progress)
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            xs, ok = [], []
            for row in batch:
                try:
                    rgb = load_image(row["path"])
                    box = crops.get(row["image_id"])
                    if box is not None:
                        rgb = crop(rgb, box)
                    xs.append(net.to_input(rgb))
                    ok.append(row)
                except (PairxError, OSError, ValueError) as exc:
                    summary.problems.append(f"{row['image_id']}: {exc}")
                    mark_unreadable(conn, row["id"], str(exc)[:300])
            if xs:
                with torch.no_grad():
                    emb = net.embed(torch.cat(xs).to(net.device)).float()
                    emb = torch.nn.functional.normalize(emb, dim=1).cpu().numpy()
                if not np.isfinite(emb).all():
                    raise PairxError(f"the model gave non-finite embeddings for "
                                     f"{ok[0]['image_id']}...; nothing of this batch was stored")
                store_embeddings(conn, digest, ((row["id"], row["sha256"],
                                                 vec.astype(np.float32).tobytes())
                                                for row, vec in zip(ok, emb, strict=True)))
                summary.embedded += len(ok)
            bar.update(len(batch))
        bar.close()
        summary.seconds_embedding = time.perf_counter() - t0
        t1 = time.perf_counter()
        _store_candidates(conn, settings, digest, summary)
        summary.seconds_search = time.perf_counter() - t1
        record_model_digest(conn, digest)
        conn.close()
        return summary


def _check_splits(dataset: Any, queries: str, gallery: str) -> None:
    """Refuse a ``queries`` or ``gallery`` split the dataset does not have (before writing)."""
    splits = sorted({s.split for s in dataset if s.split})
    if not splits:
        return
    for option, value, extra in (("--queries", queries, ("all",)),
                                 ("--gallery", gallery, ("all", "rest"))):
        if value not in (*extra, *splits):
            raise InputError(f"{option} {value!r}: the dataset's splits are {', '.join(splits)}; "
                             f"pass one of them or {' or '.join(extra)}")


@contextmanager
def _removed_on_error(root: Path, *, fresh: bool) -> Iterator[None]:
    """Remove what a new project wrote when its creation is refused (a :class:`PairxError`:
    nothing could be embedded, a split is empty); a crash or an interrupt keeps it, to resume,
    and an existing project is left as it was."""
    try:
        yield
    except PairxError:
        if fresh and root.is_dir():
            for entry in root.iterdir():
                if entry.name == LOCK_FILE:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        raise


def _write_settings(root: Path, settings: dict[str, Any]) -> None:
    tmp = root / (PROJECT_FILE + ".tmp")
    tmp.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    tmp.replace(root / PROJECT_FILE)


def _store_candidates(conn: Any, settings: dict[str, Any], digest: str,
                      summary: InitSummary) -> None:
    """Recompute every query's exact top-k and replace the candidate table in one go."""
    rows = embedded_images(conn, digest)
    if not rows:
        raise DatasetError("no image of the dataset could be embedded; see the problems above")
    has_split = any(r["split"] for r in rows)
    q_rows = _select(rows, settings["queries"], "queries") if has_split else rows
    which = settings["gallery"]
    if which == "rest":
        q_ids = {r["id"] for r in q_rows}
        g_rows = [r for r in rows if r["id"] not in q_ids] or rows
    else:
        g_rows = _select(rows, which, "gallery") if has_split else rows
    vec = {r["id"]: np.frombuffer(r["vector"], dtype=np.float32) for r in rows}
    q = np.stack([vec[r["id"]] for r in q_rows])
    g = np.stack([vec[r["id"]] for r in g_rows])
    g_index = {r["id"]: j for j, r in enumerate(g_rows)}
    exclude = np.array([g_index.get(r["id"], -1) for r in q_rows], dtype=np.int64)
    idx, sims = top_k(q, g, settings["k"], exclude=exclude)
    replace_candidates(conn, [
        (r["id"], [(g_rows[int(j)]["id"], float(s)) for j, s in zip(ii, ss, strict=True)])
        for r, ii, ss in zip(q_rows, idx, sims, strict=True)])
    summary.queries, summary.gallery = len(q_rows), len(g_rows)
