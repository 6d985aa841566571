"""What a batch worker needs to know, as plain picklable values, and the chunk runner.

A batch job (``pairx explain-batch``, ``pairx evaluate``) is cut into *chunks* of pairs that
never split a query. Any engine that can call a Python function on another process or machine
(Ray here; Dask, a SLURM array, ``multiprocessing``) runs a chunk with :func:`run_chunk`:

>>> from pairx.batch import run_chunk                                     # doctest: +SKIP
>>> records = run_chunk(task, chunk)   # on the worker; task and chunk were pickled there

The task carries a :class:`ModelSpec` (how to load the model, and the SHA-256 of its weights
that the worker must reproduce) and everything else the chunk's computation depends on. The
worker loads the model once per process (a small cache keyed by the spec) and builds the
task's chunk function once per task; only the driver writes results, so retries and resumes
cannot count a pair twice.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pairx.core.errors import InputError
from pairx.core.lru import LRUCache

if TYPE_CHECKING:  # pragma: no cover
    from pairx.models.adapter import ReIDModel

__all__ = ["WORKER_CACHE", "ChunkFn", "ChunkTask", "ModelSpec", "WorkerCache", "WorkerError",
           "run_chunk", "task_key"]

ChunkFn = Callable[[Sequence[Any]], list[Any]]
"""``chunk -> records``: one record per item of the chunk, in order."""


class WorkerError(InputError):
    """A worker cannot do the job as the driver described it (other weights, other pairx)."""


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the driver's model, and how it checks that it has the same one.

    Attributes
    ----------
    spec
        The model spec given to :func:`pairx.models.loaders.load_model` (``default``,
        ``timm:NAME``, a file or folder...).
    weights
        Absolute path of a weights file, or ``None``.
    preprocessing
        Extra ``load_model`` keyword arguments (``size``, ``mean``, ``std``), as sorted pairs.
    device
        Torch device of the workers (``cpu``, ``cuda``).
    digest
        :func:`pairx.models.provenance.weight_digest` of the driver's model.
    pairx_version
        ``pairx.__version__`` of the driver.
    """

    spec: str
    weights: str | None = None
    preprocessing: tuple[tuple[str, Any], ...] = ()
    device: str = "cpu"
    digest: str = ""
    pairx_version: str = ""

    @classmethod
    def of(
        cls,
        model: ReIDModel,
        spec: str,
        weights: str | None = None,
        preprocessing: dict[str, Any] | None = None,
        device: str | None = None,
    ) -> ModelSpec:
        """The spec of an already loaded ``model`` (its digest and this pairx's version)."""
        from pairx import __version__
        from pairx.models.provenance import weight_digest

        return cls(
            spec=spec,
            weights=weights,
            preprocessing=tuple(sorted((preprocessing or {}).items())),
            device=str(device if device is not None else model.device),
            digest=weight_digest(model),
            pairx_version=__version__,
        )

    def load(self) -> ReIDModel:
        """Load the model and check it against the driver's.

        Raises
        ------
        WorkerError
            Another pairx version, or weights whose digest differs from :attr:`digest` (a
            different file on this node, or a model with random weights that no worker can
            reproduce).
        """
        from pairx import __version__
        from pairx.models.loaders import load_model
        from pairx.models.provenance import weight_digest

        if self.pairx_version and self.pairx_version != __version__:
            raise WorkerError(
                f"this worker has pairx {__version__}, the driver pairx {self.pairx_version}; "
                "install the same pairx on every node"
            )
        model = load_model(self.spec, weights=self.weights, device=self.device,
                           **dict(self.preprocessing))
        model.net.eval()
        got = weight_digest(model)
        if self.digest and got != self.digest:
            raise WorkerError(
                f"the model {self.spec!r} loaded here has weights {got[:19]}..., the driver's "
                f"{self.digest[:19]}... (a different weights file on this node, or random "
                "weights that cannot be reproduced: pass --weights or a trained model file)"
            )
        return model


class ChunkTask(Protocol):
    """A picklable description of what to compute for each item of a chunk."""

    @property
    def model(self) -> ModelSpec:
        """How workers load the model."""
        ...  # pragma: no cover

    def build(self, model: ReIDModel) -> ChunkFn:
        """The chunk function, given the loaded model (called once per task and process)."""
        ...  # pragma: no cover


def task_key(task: Any) -> str:
    """A stable key of a task (the SHA-256 of its pickle), for caches and consistency checks."""
    return hashlib.sha256(pickle.dumps(task, protocol=4)).hexdigest()[:20]


@dataclass
class WorkerCache:
    """Per-process cache: the loaded model of one spec, the chunk functions of a few tasks (a
    job uses one or two tasks: layer selection, main; least recently used out first)."""

    spec: ModelSpec | None = None
    model: ReIDModel | None = None
    functions: LRUCache[str, ChunkFn] = field(default_factory=lambda: LRUCache(4))

    def model_for(self, spec: ModelSpec) -> ReIDModel:
        """The model of ``spec``, loaded once per process (another spec replaces it)."""
        if self.spec != spec or self.model is None:
            self.functions.clear()
            self.model, self.spec = None, None
            self.model = spec.load()
            self.spec = spec
        return self.model

    def function(self, task: ChunkTask, key: str | None = None) -> ChunkFn:
        """The chunk function of ``task`` (built on this process's model once)."""
        key = key or task_key(task)
        return self.functions.get_or_compute(key, lambda: task.build(self.model_for(task.model)))


WORKER_CACHE = WorkerCache()
"""This process's :class:`WorkerCache` (what :func:`run_chunk` and the Ray actors use)."""


def run_chunk(task: ChunkTask, chunk: Sequence[Any], *, key: str | None = None) -> list[Any]:
    """Compute the records of one chunk, loading the model once per process.

    This is the whole worker side of a batch job: Ray actors call it, and so can any other
    engine (a Dask ``client.submit(run_chunk, task, chunk)``, a SLURM array task that unpickles
    its chunk). Results depend only on ``task`` and ``chunk`` (and the torch thread count), so
    a retried chunk gives the same records.

    Parameters
    ----------
    task
        :class:`pairx.batch.ExplainTask` or :class:`pairx.batch.EvaluateTask`.
    chunk
        The chunk's items (pairs), as the job cut them.
    key
        :func:`task_key` of ``task``, when the caller already has it.

    Returns
    -------
    list
        One record per item, in order.

    Raises
    ------
    WorkerError
        This process cannot reproduce the driver's model.
    """
    return WORKER_CACHE.function(task, key)(chunk)
