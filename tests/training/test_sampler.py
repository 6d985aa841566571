"""PK sampler: P identities x K images, determinism, replacement for small identities."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairx.core.errors import InputError
from pairx.training.sampler import PKSampler


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=2, max_size=12),
    p=st.integers(2, 6),
    k=st.integers(1, 5),
    seed=st.integers(0, 100),
)
def test_batches_hold_p_identities_times_k(sizes: list[int], p: int, k: int, seed: int) -> None:
    labels = [f"id{i}" for i, n in enumerate(sizes) for _ in range(n)]
    if len(sizes) < p:
        with pytest.raises(InputError):
            PKSampler(labels, p, k, seed=seed)
        return
    sampler = PKSampler(labels, p, k, seed=seed)
    batches = list(sampler)
    assert len(batches) == len(sampler) == max(1, len(labels) // (p * k))
    for batch in batches:
        assert len(batch) == p * k
        groups = [batch[i * k : (i + 1) * k] for i in range(p)]
        owners = [{labels[j] for j in g} for g in groups]
        assert all(len(o) == 1 for o in owners)  # each group is one identity
        assert len({next(iter(o)) for o in owners}) == p  # P distinct identities
        for g in groups:
            n_available = Counter(labels)[labels[g[0]]]
            if n_available >= k:  # no repeats unless the identity is too small
                assert len(set(g)) == k


def test_deterministic_per_seed_and_epoch() -> None:
    labels = [i // 4 for i in range(80)]
    a, b = PKSampler(labels, 4, 4, seed=3), PKSampler(labels, 4, 4, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(PKSampler(labels, 4, 4, seed=4)) != list(PKSampler(labels, 4, 4, seed=3))


def test_every_identity_is_visited() -> None:
    labels = [i // 2 for i in range(40)]  # 20 identities, 2 images each
    sampler = PKSampler(labels, 4, 2, seed=0)
    seen = {labels[i] for batch in sampler for i in batch}
    assert seen == set(labels)


def test_bad_arguments() -> None:
    with pytest.raises(InputError):
        PKSampler([0, 1, 2], 1, 2)
    with pytest.raises(InputError):
        PKSampler([0, 1, 2], 2, 0)
