"""Executors: where the chunks of a batch job run (this process, or Ray actors).

Both give the chunk results back **in chunk order**, so the driver writes its result store in
the same order whatever the backend, and a run on Ray gives byte-identical files to a local
run with the same thread count. Neither writes anything: the driver alone writes the store.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pairx.batch.spec import WORKER_CACHE, ChunkTask, WorkerError, run_chunk, task_key
from pairx.core.errors import InputError
from pairx.core.images import max_pixels, set_max_pixels
from pairx.core.optional import require

if TYPE_CHECKING:  # pragma: no cover
    from pairx.models.adapter import ReIDModel

__all__ = ["BACKENDS", "ChunkStat", "Executor", "LocalExecutor", "RayExecutor", "make_executor"]

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class ChunkStat:
    """Where and how fast one chunk ran.

    Attributes
    ----------
    index
        Chunk index in the job's order.
    items
        Items (pairs) in the chunk.
    node, worker
        Ray node id (``"local"`` for the local backend) and worker process id.
    compute_s
        Seconds the worker spent on the chunk.
    wall_s
        Seconds from submission to the result reaching the driver (includes queueing).
    """

    index: int
    items: int
    node: str
    worker: int
    compute_s: float
    wall_s: float


class Executor:
    """Runs the chunks of a task and yields their records in chunk order."""

    def __init__(self) -> None:
        self.stats: list[ChunkStat] = []

    def map(self, task: ChunkTask, chunks: Sequence[Sequence[Any]]) -> Iterator[list[Any]]:
        """Yield ``run_chunk(task, chunk)`` for every chunk, in order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (idempotent)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """This process, one chunk after the other (today's behaviour of every command).

    Parameters
    ----------
    model
        An already loaded model to use (skips reloading it from the task's spec).
    threads
        Torch threads while a job runs (``None``: leave as is); restored afterwards.
    """

    def __init__(self, model: ReIDModel | None = None, threads: int | None = None) -> None:
        super().__init__()
        if threads is not None and threads < 1:
            raise InputError(f"--threads must be at least 1; got {threads}")
        self.model = model
        self.threads = threads

    def map(self, task: ChunkTask, chunks: Sequence[Sequence[Any]]) -> Iterator[list[Any]]:
        import torch

        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            fn = task.build(self.model) if self.model is not None else None
            for i, chunk in enumerate(chunks):
                t0 = time.perf_counter()
                out = fn(chunk) if fn is not None else run_chunk(task, chunk)
                dt = time.perf_counter() - t0
                self.stats.append(ChunkStat(i, len(chunk), "local", os.getpid(), dt, dt))
                yield out
        finally:
            torch.set_num_threads(before)


class _Actor:
    """A Ray actor: loads the model once (in ``__init__``), then runs chunks."""

    def __init__(self, spec: Any, threads: int, pixel_limit: int) -> None:
        import torch

        from pairx.core.allocator import tune_allocator

        tune_allocator()
        torch.set_num_threads(threads)
        set_max_pixels(pixel_limit)  # the driver's --max-pixels holds on every node
        self.error: str | None = None
        try:
            WORKER_CACHE.model_for(spec)
        except Exception as exc:  # reported by check(), so the driver can say which node
            self.error = f"{type(exc).__name__}: {exc}"

    def check(self) -> dict[str, Any]:
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "error": self.error}

    def run(self, index: int, key: str, task_box: list[Any], chunk: Sequence[Any]) -> Any:
        """``(index, records, node id, pid, seconds)`` of one chunk."""
        import ray

        if self.error is not None:
            raise WorkerError(self.error)
        t0 = time.perf_counter()
        fn = WORKER_CACHE.functions.lookup(key)
        if fn is None:  # first chunk of this task here: fetch the task (shipped once) and build
            out = run_chunk(ray.get(task_box[0])[0], chunk, key=key)
        else:
            out = fn(chunk)
        return (index, out, ray.get_runtime_context().get_node_id(), os.getpid(),
                time.perf_counter() - t0)


def _check_address(address: str) -> None:
    """Fail fast, with one line, when ``address`` (``host:port``) does not answer."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise InputError(
            f"--ray-address {address!r} is not 'auto', 'HOST:PORT' or 'ray://HOST:PORT'"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise InputError(
            f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
            "start one with 'ray start --head' or check the head node's address and port"
        ) from None


class RayExecutor(Executor):
    """Ray Core actors, one model each; chunks go to whichever actor is free.

    Each actor loads the model once from the task's :class:`~pairx.batch.spec.ModelSpec` and
    checks its weight digest and pairx version against the driver's before any chunk runs.
    Actors restart when they die (``max_restarts=-1``) and their chunks are retried
    (``max_task_retries=-1``): a worker lost mid-chunk costs only that chunk, and since only
    the driver writes, a retried chunk is never counted twice.

    Parameters
    ----------
    address
        ``None``: start a private local Ray; ``"auto"``: the cluster this machine belongs to;
        ``"HOST:PORT"`` or ``"ray://HOST:PORT"``: that cluster.
    workers
        Number of actors.
    worker_cpus
        CPUs Ray reserves per actor.
    threads
        Torch threads per actor (default: ``worker_cpus``).
    init_options
        Extra :func:`ray.init` keyword arguments (a ``runtime_env``...).
    """

    def __init__(self, address: str | None = None, *, workers: int = 2, worker_cpus: int = 1,
                 threads: int | None = None, init_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.ray = require("ray", "ray", "--backend ray")
        if workers < 1 or worker_cpus < 1:
            raise InputError("--workers and --worker-cpus must be at least 1")
        if threads is not None and threads < 1:
            raise InputError(f"--threads must be at least 1; got {threads}")
        if address is not None:  # fail before the caller spends minutes on embeddings
            _check_address(address)
        self.address = address
        self.workers = workers
        self.worker_cpus = worker_cpus
        self.threads = threads or worker_cpus
        self.init_options = dict(init_options or {})
        self.actors: list[Any] = []
        self.nodes: dict[int, str] = {}
        self.pids: dict[int, int] = {}
        self._spec: Any = None
        self._started = False
        self._tasks: dict[str, Any] = {}

    # -- cluster and actors -------------------------------------------------------------
    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        opts: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning",
                                **self.init_options}
        if self.address is None:
            opts.setdefault("num_cpus", max(os.cpu_count() or 1, self.workers * self.worker_cpus))
        else:
            _check_address(self.address)  # again: the cluster may have gone since __init__
        try:
            ray.init(address=self.address, **opts)
        except ConnectionError as exc:
            raise InputError(f"--ray-address {self.address}: {exc}") from None
        self._started = True

    def _ensure_actors(self, spec: Any) -> None:
        if self.actors and spec == self._spec:
            return
        self._kill_actors()
        self._connect()
        ray = self.ray
        remote = ray.remote(_Actor).options(num_cpus=self.worker_cpus, max_restarts=-1,
                                            max_task_retries=-1)
        self.actors = [remote.remote(spec, self.threads, max_pixels())
                       for _ in range(self.workers)]
        self._spec = spec
        for i, info in enumerate(ray.get([a.check.remote() for a in self.actors])):
            if info["error"]:
                self._kill_actors()
                raise WorkerError(f"Ray worker {i} on node {info['node'][:12]}: {info['error']}")
            self.nodes[i], self.pids[i] = info["node"], info["pid"]

    def _kill_actors(self) -> None:
        for a in self.actors:
            self.ray.kill(a, no_restart=True)
        self.actors = []
        self._tasks.clear()

    # -- work ---------------------------------------------------------------------------
    def map(self, task: ChunkTask, chunks: Sequence[Sequence[Any]]) -> Iterator[list[Any]]:
        import cloudpickle

        try:
            cloudpickle.dumps(task)
        except Exception as exc:
            raise InputError(f"--backend ray: the job cannot be sent to workers ({exc})") from None
        self._ensure_actors(task.model)
        ray = self.ray
        from ray.util import ActorPool

        key = task_key(task)
        if key not in self._tasks:
            self._tasks[key] = ray.put((task,))  # shipped once, cached by key on each actor
        ref = self._tasks[key]
        submitted: dict[int, float] = {}

        def submit(actor: Any, item: tuple[int, Sequence[Any]]) -> Any:
            submitted[item[0]] = time.perf_counter()
            return actor.run.remote(item[0], key, [ref], item[1])

        pool = ActorPool(list(self.actors))
        for item in enumerate(chunks):
            pool.submit(submit, item)
        ready: dict[int, list[Any]] = {}
        nxt = 0
        while nxt < len(chunks):
            while nxt not in ready:
                index, out, node, pid, compute = pool.get_next_unordered()
                ready[index] = out
                self.stats.append(ChunkStat(index, len(chunks[index]), node, pid, compute,
                                            time.perf_counter() - submitted[index]))
            yield ready.pop(nxt)
            nxt += 1

    def close(self) -> None:
        if not self.actors and not self._started:
            return
        self._kill_actors()
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False


def make_executor(backend: str, *, model: ReIDModel | None = None, threads: int | None = None,
                  ray_address: str | None = None, workers: int = 2,
                  worker_cpus: int = 1) -> Executor:
    """The executor a command's ``--backend`` names.

    Raises
    ------
    InputError
        An unknown backend.
    ImportError
        ``ray`` without the ``pairx[ray]`` extra (the message says how to install it).
    """
    if backend == "local":
        return LocalExecutor(model, threads)
    if backend == "ray":
        return RayExecutor(ray_address, workers=workers, worker_cpus=worker_cpus,
                           threads=threads)
    raise InputError(f"--backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
