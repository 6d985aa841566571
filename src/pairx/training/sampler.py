"""PK sampling: batches of ``P`` identities times ``K`` images each."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from pairx.core.errors import InputError

__all__ = ["PKSampler"]


class PKSampler:
    """Batch sampler yielding ``P * K`` dataset indices: ``K`` images of each of ``P`` identities.

    Identities with fewer than ``K`` images are sampled with replacement; every identity with
    at least one image takes part. An epoch is ``len(labels) // (P * K)`` batches (at least 1),
    so one epoch shows about as many images as the dataset holds. Batches are deterministic for
    a given ``seed`` and epoch (call :meth:`set_epoch` before iterating), which makes resumed
    runs reproduce the batches they would have seen.

    Parameters
    ----------
    labels
        ``(N,)`` identity label of every dataset index (any hashable values).
    p
        Identities per batch (at least 2, at most the number of identities).
    k
        Images per identity (at least 1; 2 or more for triplet positives).
    seed
        Base random seed.

    Yields
    ------
    list[int]
        ``P * K`` indices, grouped by identity: ``[id0 x K, id1 x K, ...]``.
    """

    def __init__(self, labels: Sequence[object], p: int, k: int, *, seed: int = 0) -> None:
        if p < 2:
            raise InputError(f"P (identities per batch) must be >= 2; got {p}")
        if k < 1:
            raise InputError(f"K (images per identity) must be >= 1; got {k}")
        groups: dict[object, list[int]] = {}
        for index, label in enumerate(labels):
            groups.setdefault(label, []).append(index)
        if len(groups) < p:
            raise InputError(
                f"P = {p} identities per batch, but the dataset has only {len(groups)} identities; "
                "lower --batch-p"
            )
        self._groups = [np.asarray(v, dtype=np.int64) for _, v in sorted(groups.items(), key=_key)]
        self.p, self.k, self.seed = p, k, seed
        self.epoch = 0
        self._n_samples = len(labels)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (batches differ between epochs)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, self._n_samples // (self.p * self.k))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n_groups = len(self._groups)
        order = np.empty(0, dtype=np.int64)
        for _ in range(len(self)):
            if order.size < self.p:  # walk through identities in a fresh random order
                order = rng.permutation(n_groups)
            chosen, order = order[: self.p], order[self.p :]
            batch: list[int] = []
            for g in chosen:
                members = self._groups[int(g)]
                replace = members.size < self.k
                batch.extend(int(i) for i in rng.choice(members, size=self.k, replace=replace))
            yield batch


def _key(item: tuple[object, list[int]]) -> str:
    return str(item[0])
