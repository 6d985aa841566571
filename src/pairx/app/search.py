"""Exact nearest-neighbour search of a review project's candidates (numpy, blockwise)."""

from __future__ import annotations

import numpy as np

from pairx.core.errors import InputError

__all__ = ["top_k"]


def top_k(queries: np.ndarray, gallery: np.ndarray, k: int, *,
          exclude: np.ndarray | None = None, block: int | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` cosine neighbours, blockwise (memory ``block * len(gallery)`` floats,
    about 16 million by default: some 200 MB beyond the embeddings whatever the gallery size).

    Parameters
    ----------
    queries, gallery
        ``(Q, D)`` and ``(G, D)`` unit-norm float32 embeddings.
    k
        Neighbours per query (at most ``G``).
    exclude
        ``(Q,)`` gallery index to leave out per query (the query itself), ``-1`` for none.

    Returns
    -------
    index, similarity
        ``(Q, k')`` int64 gallery indices and float32 similarities, most similar first
        (ties broken by gallery order); ``k' = min(k, G - excluded)``.
    """
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise InputError(f"embeddings must be (Q, D) and (G, D); got {queries.shape} and "
                         f"{gallery.shape}")
    n_g = len(gallery)
    kk = max(0, min(int(k), n_g - (1 if exclude is not None and (exclude >= 0).any() else 0)))
    out_i = np.zeros((len(queries), kk), dtype=np.int64)
    out_s = np.zeros((len(queries), kk), dtype=np.float32)
    if kk == 0:
        return out_i, out_s
    g = np.ascontiguousarray(gallery, dtype=np.float32)
    block = int(block) if block else max(16, 16_000_000 // max(n_g, 1))
    for start in range(0, len(queries), block):
        dist = np.ascontiguousarray(queries[start:start + block], dtype=np.float32) @ g.T
        np.negative(dist, out=dist)  # smallest first; in place: no second block in memory
        if exclude is not None:
            rows = np.arange(len(dist))
            ex = exclude[start:start + block]
            dist[rows[ex >= 0], ex[ex >= 0]] = np.inf
        part = np.argpartition(dist, kk - 1, axis=1)[:, :kk] if kk < n_g else \
            np.tile(np.arange(n_g), (len(dist), 1))
        vals = -np.take_along_axis(dist, part, axis=1)
        order = np.lexsort((part, -vals), axis=1)
        out_i[start:start + block] = np.take_along_axis(part, order, axis=1)
        out_s[start:start + block] = np.take_along_axis(vals, order, axis=1)
    return out_i, out_s
