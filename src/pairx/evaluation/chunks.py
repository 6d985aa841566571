"""Computing an evaluation's pairs in chunks that never split a query, resumably.

:func:`run_pairs` computes the pairs a :class:`~pairx.evaluation.rows.PairStore` does not hold
yet, query by query, in chunks of about ``chunk_size`` pairs (:func:`query_chunks`) on any
executor of :mod:`pairx.batch.executors`, and stores each chunk's rows as it comes back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from pairx.evaluation.pair_metrics import EvaluateTask
from pairx.evaluation.pairs import Pair
from pairx.evaluation.rows import PairStore

if TYPE_CHECKING:  # pragma: no cover
    from pairx.batch.executors import Executor

__all__ = ["images_of", "query_chunks", "run_pairs"]


def images_of(pairs: Sequence[Pair]) -> int:
    """Cache size that keeps every image of ``pairs`` (no per-image work is ever redone)."""
    return len({p.query for p in pairs} | {p.gallery for p in pairs}) + 1


def query_chunks(pairs: Sequence[Pair], size: int) -> Iterator[list[Pair]]:
    """Consecutive runs of ``pairs`` (sorted by query) of at least ``size`` pairs (the last may
    be shorter) that end at a change of query."""
    chunk: list[Pair] = []
    for i, pair in enumerate(pairs):
        chunk.append(pair)
        last = i + 1 == len(pairs)
        if last or (len(chunk) >= size and pairs[i + 1].query != pair.query):
            yield chunk
            chunk = []


def run_pairs(
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

    Returns
    -------
    n_computed, n_skipped
        Pairs computed now and pairs found already stored.
    """
    todo = [p for p in pairs if not store.has(task.group, task.layers, p)]
    todo.sort(key=lambda p: (p.query, p.gallery))
    chunks = list(query_chunks(todo, chunk_size))
    bar = tqdm(total=len(todo), desc=desc, disable=not progress, unit="pair")
    for chunk, chunk_rows in zip(chunks, executor.map(task, chunks), strict=True):
        for rows in chunk_rows:
            store.write(rows)
        bar.update(len(chunk))
    bar.close()
    return len(todo), len(pairs) - len(todo)
