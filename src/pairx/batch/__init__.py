"""Batch jobs that outgrow one process: chunks of pairs, executors (local, Ray), a chunk runner.

``pairx explain-batch`` and ``pairx evaluate`` cut their pairs into chunks that never split a
query, run them with an :class:`~pairx.batch.executors.Executor` (``LocalExecutor``: this
process; ``RayExecutor``: Ray Core actors, one model each) and write the results themselves,
in chunk order, so every backend writes byte-identical files. :func:`run_chunk` is the worker
side, callable from any other engine (Dask, a SLURM array).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BACKENDS",
    "ChunkStat",
    "Executor",
    "ExplainTask",
    "LocalExecutor",
    "ModelSpec",
    "RayExecutor",
    "WorkerError",
    "explain_batch",
    "make_executor",
    "read_pairs_file",
    "run_chunk",
]

_LAZY = {
    "BACKENDS": "pairx.batch.executors",
    "ChunkStat": "pairx.batch.executors",
    "Executor": "pairx.batch.executors",
    "LocalExecutor": "pairx.batch.executors",
    "RayExecutor": "pairx.batch.executors",
    "make_executor": "pairx.batch.executors",
    "ModelSpec": "pairx.batch.spec",
    "WorkerError": "pairx.batch.spec",
    "run_chunk": "pairx.batch.spec",
    "ExplainTask": "pairx.batch.explain",
    "explain_batch": "pairx.batch.explain",
    "read_pairs_file": "pairx.batch.explain",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pairx.batch' has no attribute {name!r}")
