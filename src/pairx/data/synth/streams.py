"""The species families and the random streams every individual, sighting and split draws from.

Each stream is a :class:`numpy.random.SeedSequence` keyed by the dataset seed and a spawn key,
so an individual depends only on ``(seed, species, index)`` and a sighting only on its
individual and its number: the generator and the counterfactual re-renderer
(:mod:`pairx.data.synth.counterfactual`) draw from the same streams.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SPECIES", "individual_seed", "sighting_rng", "split_rng"]

SPECIES: tuple[str, ...] = ("zebra", "giraffe", "leopard", "face")
"""Species families; the first three are patterned, ``face`` is weakly patterned."""

_SIGHTING_KEY = 1000  # spawn_key offset of sightings (individual internals use 0, 1, 2)
_SPLIT_KEY = 999_999


def individual_seed(seed: int, species: str, index: int) -> np.random.SeedSequence:
    """The seed sequence of individual ``index`` of ``species`` (one of :data:`SPECIES`)."""
    return np.random.SeedSequence(seed, spawn_key=(SPECIES.index(species), index))


def sighting_rng(seed: int, iseed: np.random.SeedSequence, k: int) -> np.random.Generator:
    """The generator of sighting ``k`` of the individual whose seed sequence is ``iseed``."""
    key = (*iseed.spawn_key, _SIGHTING_KEY + k)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def split_rng(seed: int, species: str) -> np.random.Generator:
    """The generator that draws the train/test split of the identities of ``species``."""
    return np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(_SPLIT_KEY, SPECIES.index(species)))
    )
