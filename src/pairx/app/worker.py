"""The background explanation worker and its job queue.

The server never runs PAIR-X itself: it appends a *job* (one query, one layer, the candidates
to explain) to the ``jobs`` table and a worker process, which holds the :class:`pairx.PairX`
engine, takes the most urgent pending job. One PAIR-X job is one
:meth:`pairx.PairX.explain_layers_pairs` call over the query's candidates, so the query's LRP
graph is built once for all of them; its ``on_result`` callback writes each candidate's figure,
interactive data and metrics to the cache the moment it is done and bumps the job's progress,
which the page polls. An AMD job (layer :data:`pairx.app.amd.AMD_VIEW`) runs the project's
interpreter (:class:`pairx.AMDExplainer`) on each pair and stores the same way. Requests are
deduplicated (a candidate already cached, or already in an open job, is not queued again) and a
job left ``running`` by a killed worker is put back to ``pending`` when the next worker starts.

The worker dies with the server: on Linux the kernel sends it ``SIGKILL`` when its parent dies
(``PR_SET_PDEATHSIG``), and on every platform a watchdog thread exits the process within
:data:`PARENT_POLL_SECONDS` of its parent process id changing, from the first line of
:func:`worker_main` on (also while the engine loads, and when the server died before the
worker could ask for the signal).
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from pairx import __version__
from pairx.app.amd import AMD_VIEW
from pairx.app.cache import ExplanationCache, content_key
from pairx.app.project import Project, crop
from pairx.app.store import (
    add_job,
    explained_candidates,
    finish_job,
    has_more_urgent_job,
    image_row,
    image_rows,
    jobs_of,
    next_pending_job,
    recent_seconds,
    record_explanation,
    requeue_running_jobs,
    set_worker_error,
    start_job,
    worker_error,
)
from pairx.core.allocator import release_free_memory, tune_allocator

__all__ = ["PARENT_POLL_SECONDS", "cache_key", "enqueue", "image_hash", "job_progress",
           "recover_jobs", "start_worker", "user_priority", "watch_parent", "worker_main"]

POLL_SECONDS = 0.05
PARENT_POLL_SECONDS = 0.2
"""How often the worker's watchdog checks that the server is still its parent."""


def user_priority() -> int:
    """Priority of a job a reviewer asks for now: later requests first (milliseconds), above
    every prefetch (priority 0). What is on screen now matters more than what was asked for a
    minute ago."""
    return int(time.time() * 1000)


class _Preempted(Exception):
    """A more urgent job arrived; the current one goes back to the queue between candidates."""


def image_hash(row: sqlite3.Row) -> str:
    """What identifies an image's pixels as the model sees them (file hash and crop)."""
    return f"{row['sha256']}:{row['bbox']}"


def cache_key(project: Project, layer: str, a: sqlite3.Row, b: sqlite3.Row) -> str:
    """The content key of the explanation of images ``a`` (query) and ``b`` at ``layer`` (a
    PAIR-X layer, or :data:`~pairx.app.amd.AMD_VIEW` with the interpreter's digest)."""
    options = (project.interpreter or {}) if layer == AMD_VIEW else \
        project.settings["pairx_options"]
    return content_key(version=__version__, model_digest=project.model_digest, layer=layer,
                       options=options, image_a=image_hash(a), image_b=image_hash(b))


def enqueue(conn: sqlite3.Connection, project: Project, query: int, layer: str,
            candidates: Sequence[int], *, priority: int = 0) -> int | None:
    """Queue the candidates of ``query`` not yet explained or queued; the new job's id.

    ``None`` when nothing is left to do (every candidate cached or already in an open job).
    An open job of the same query and layer is raised to ``priority`` if that is higher.
    """
    if layer not in project.views:
        raise KeyError(layer)
    return add_job(conn, query, layer, candidates, priority=priority)


def job_progress(conn: sqlite3.Connection, query: int, layer: str) -> dict[str, Any]:
    """Progress of the open and recent jobs of one query and layer (done, total, ETA)."""
    rows = jobs_of(conn, query, layer)
    open_rows = [r for r in rows if r["status"] in ("pending", "running")]
    done = sum(r["done"] for r in open_rows)
    total = sum(r["total"] for r in open_rows)
    eta = None
    recent = recent_seconds(conn)
    if open_rows and recent:  # the worker's recent seconds per candidate
        eta = float(sorted(recent)[len(recent) // 2]) * (total - done)
    failed = [r["error"] for r in rows if r["status"] == "failed"]
    return {"open": bool(open_rows), "done": done, "total": total, "eta_s": eta,
            "queued": any(r["status"] == "pending" for r in open_rows),
            "error": failed[-1] if failed else ""}


def recover_jobs(conn: sqlite3.Connection) -> int:
    """Put jobs a killed worker left ``running`` back to ``pending``; how many."""
    return requeue_running_jobs(conn)


def _die_with_parent() -> None:
    """Ask the kernel for ``SIGKILL`` when the parent dies (Linux) and watch the parent pid
    (:func:`watch_parent`, every platform)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:  # pragma: no cover - no glibc
            pass
    watch_parent(os.getppid())


def watch_parent(parent: int) -> threading.Thread:
    """Exit this process (at once, as ``kill -9`` would) within :data:`PARENT_POLL_SECONDS` of
    ``parent`` no longer being its parent; the watchdog is a daemon thread, started here."""
    if os.getppid() != parent:  # the server died before the worker got this far
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(0)

    thread = threading.Thread(target=watch, name="pairx-parent-watchdog", daemon=True)
    thread.start()
    return thread


class _Engine:
    """The model and one :class:`pairx.PairX` per layer, loaded once per worker."""

    def __init__(self, project: Project) -> None:
        import pairx

        s = project.settings
        options: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                   for k, v in (s.get("model_options") or {}).items()}
        self.model = pairx.load_model(s["model"], weights=s.get("weights"), **options)
        from pairx.models.provenance import weight_digest

        digest = weight_digest(self.model)
        if digest != project.model_digest:
            raise RuntimeError(
                f"the model {s['model']!r} now has weights {digest[:12]}, but the project was "
                f"built with {project.model_digest[:12]}; re-run 'pairx review init' with "
                f"--replace-model")
        self.options = dict(s["pairx_options"])
        self.explainers: dict[str, Any] = {}
        self.project = project
        self.labels: dict[str, Any] = {}
        self.known_labels: frozenset[str] = frozenset()

    def explainer(self, layer: str) -> Any:
        import pairx

        if layer not in self.explainers:
            self.explainers[layer] = pairx.PairX(self.model, [layer], **self.options)
        return self.explainers[layer]

    def amd(self) -> Any:
        """The project's :class:`pairx.AMDExplainer` with the dataset's attribute labels."""
        if AMD_VIEW not in self.explainers:
            from pairx.app.amd import dataset_labels, file_digest
            from pairx.explainers.amd import AMDExplainer, interpreter_files, load_interpreter

            spec = self.project.interpreter
            if spec is None:
                raise RuntimeError("this project has no AMD interpreter; re-run 'pairx review "
                                   "init' with --interpreter default or a 'pairx amd train' run")
            weights, _ = interpreter_files(spec["spec"])
            # the cache keys carry the digest 'review init' stored: an interpreter file
            # replaced since then must not fill the cache under the old one's key
            if not weights.is_file() or file_digest(weights) != spec["digest"]:
                raise RuntimeError(
                    f"the interpreter {spec['spec']!r} is not the one 'pairx review init' chose "
                    f"(its file {'changed' if weights.is_file() else 'is gone'} since; stored "
                    f"digest {spec['digest'][:12]}); re-run 'pairx review init' to pick it up")
            interp = load_interpreter(spec["spec"], self.model)
            self.labels, self.known_labels = dataset_labels(self.project.settings["data"],
                                                            interp.attributes)
            self.explainers[AMD_VIEW] = AMDExplainer(interp)
        return self.explainers[AMD_VIEW]


def _image(row: sqlite3.Row) -> Any:
    """The image as the model sees it: its path, or its bounding-box crop."""
    from pairx.core.images import load_image

    if not row["bbox"]:
        return row["path"]
    return crop(load_image(row["path"]), row["bbox"])


def _run_job(conn: sqlite3.Connection, project: Project, cache: ExplanationCache,
             engine: _Engine, job: sqlite3.Row) -> None:
    from pairx.app.amd import attribute_data, attribute_jpeg
    from pairx.app.bundle import explanation_metrics, figure_jpeg, interactive_data

    layer = job["layer"]
    found = image_row(conn, job["query"])
    done = explained_candidates(conn, job["query"], layer)
    wanted = [c for c in json.loads(job["candidates"]) if c not in done]  # resumed: the rest
    if not wanted:
        return
    rows = image_rows(conn, wanted)
    todo = [rows[c] for c in wanted if c in rows]
    if found is None:  # ruled out by the foreign key of jobs.query
        raise RuntimeError(f"job {job['id']}: no image {job['query']} in the project")
    query = found
    q_img = _image(query)
    pairs, keys = [], []
    for r in todo:
        pairs.append((q_img, _image(r)))
        keys.append((f"img{query['id']}:{image_hash(query)}", f"img{r['id']}:{image_hash(r)}"))
    started = [time.perf_counter()]

    def store(i: int, result: dict[str, Any]) -> None:
        expl = result[layer]
        cand = todo[i]
        key = cache_key(project, layer, query, cand)
        if layer == AMD_VIEW:
            known = engine.known_labels
            data, jpeg = attribute_data(expl, known), attribute_jpeg(expl, known=known)
            metrics = {"distance": expl.distance, "reconstructed": expl.reconstructed}
        else:
            data, jpeg = interactive_data(expl), figure_jpeg(expl)
            metrics = explanation_metrics(expl)
        data["key"] = key
        cache.write(key, "jpg", jpeg)
        cache.write(key, "json", json.dumps(data).encode())
        seconds = time.perf_counter() - started[0]
        started[0] = time.perf_counter()
        record_explanation(conn, job=job["id"], query=query["id"], candidate=cand["id"],
                           layer=layer, key=key, seconds=seconds, metrics=metrics)
        if has_more_urgent_job(conn, job["priority"]) and i + 1 < len(todo):
            raise _Preempted

    if layer == AMD_VIEW:
        from pairx.explainers.amd import with_labels

        amd = engine.amd()
        label = engine.labels.get
        for i, r in enumerate(todo):  # the keys: the query is read and prepared once
            expl = amd.explain_attributes(*pairs[i], key_a=keys[i][0], key_b=keys[i][1])
            store(i, {layer: with_labels(expl, label(query["image_id"]), label(r["image_id"]))})
    else:
        engine.explainer(layer).explain_layers_pairs(pairs, keys=keys, progress=False,
                                                     on_result=store)
    cache.evict()


def worker_main(root: str, parent: int) -> None:
    """Run jobs of the project at ``root`` until the parent process ``parent`` is gone."""
    _die_with_parent()
    if os.getppid() != parent:  # the server died before the worker could ask for the signal
        return
    tune_allocator()
    project = Project.open(root)
    conn = project.db()
    recover_jobs(conn)
    cache = ExplanationCache(project.cache_dir,
                             int(project.settings.get("cache_limit_mb", 2048)) << 20)
    try:
        engine = _Engine(project)
    except Exception as exc:  # the app keeps serving everything else; jobs say why
        set_worker_error(conn, f"the explanation engine cannot start: {exc}")
        engine = None
    else:
        set_worker_error(conn, None)
    idle = True
    while os.getppid() == parent:
        job = next_pending_job(conn)
        if job is None:
            if not idle:  # the queue ran dry: give the freed memory of the jobs back
                release_free_memory()
                idle = True
            time.sleep(POLL_SECONDS)
            continue
        idle = False
        start_job(conn, job["id"])
        try:
            if engine is None:
                raise RuntimeError(worker_error(conn))
            _run_job(conn, project, cache, engine, job)
            status, error = "done", ""
        except _Preempted:
            status, error = "pending", ""
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            traceback.print_exc()
        finish_job(conn, job["id"], status, error)


def start_worker(project: Project) -> mp.process.BaseProcess:
    """Start the worker process (spawned: no state of the server is inherited)."""
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=worker_main, args=(str(project.root), os.getpid()),
                       name="pairx-review-worker", daemon=True)
    proc.start()
    return proc
