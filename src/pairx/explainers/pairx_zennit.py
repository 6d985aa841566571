"""PAIR-X on the zennit engine: the pairs of a group share one LRP forward and one backward pass.

zennit's rule hooks store each module's last input, so a pass holds the images of its pairs as
one batch ``a0, b0, a1, b1, ...``. Without pixel maps several pairs share a pass (their graph
starts at the lowest explained layer); with pixel maps each pair has its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pairx.explainers.base import PreparedImage
from pairx.explainers.pairx_forward import LRPGraph, PairResults
from pairx.lrp.zennit_engine import pixel_relevance, seed_relevance

__all__ = ["ZennitPairs", "pair_groups"]

def pair_groups(
    states: Sequence[tuple[PreparedImage, PreparedImage]], size: int
) -> list[list[int]]:
    """Consecutive pair indices, at most ``size`` per group, one input size per group."""
    groups: list[list[int]] = []
    shape: tuple[int, ...] | None = None
    for i, (sa, sb) in enumerate(states):
        here = (*sa.x.shape, *sb.x.shape)
        if not groups or len(groups[-1]) >= size or here != shape:
            groups.append([])
            shape = here
        groups[-1].append(i)
    return groups


class ZennitPairs:
    """Pairs over one zennit graph of their images.

    Parameters
    ----------
    target
        The similarity target's name.
    pixel_chunk
        Pixel maps per batched backward pass.
    results
        Builds a pair's explanations from its similarity, relevances, features and pixel maps.
    """

    def __init__(self, *, target: str, pixel_chunk: int, results: PairResults) -> None:
        self.target = target
        self.pixel_chunk = pixel_chunk
        self.results = results

    def explain(self, pairs: Sequence[tuple[PreparedImage, PreparedImage]], graph: LRPGraph,
                n_pix: int) -> list[object]:
        """The pairs of one graph (a batch ``a0, b0, a1, b1, ...``): one backward pass with
        every image's starting relevance (pixel maps: one pair only)."""
        seeds, sims = [], []
        for k in range(len(pairs)):
            cos, r_a, r_b = seed_relevance(self.target, graph.out[2 * k : 2 * k + 1].detach(),
                                          graph.out[2 * k + 1 : 2 * k + 2].detach())
            seeds += [r_a, r_b]
            sims.append(cos)
        targets = list(graph.layers.values())
        rel = torch.autograd.grad(graph.out, targets, grad_outputs=torch.cat(seeds),
                                  retain_graph=n_pix > 0, allow_unused=True)

        def pixels(name: str, positions: torch.Tensor) -> torch.Tensor:
            if len(pairs) > 1:  # several pairs per pass only without pixel maps
                return torch.zeros(0, 2, *graph.x.shape[-2:], dtype=graph.x.dtype)
            return pixel_relevance(graph.layers[name], graph.x, positions,
                                   chunk=self.pixel_chunk)

        out = []
        for k, (sa, sb) in enumerate(pairs):
            a, b = slice(2 * k, 2 * k + 1), slice(2 * k + 1, 2 * k + 2)
            rel_a = [None if r is None else r[a] for r in rel]
            rel_b = [None if r is None else r[b] for r in rel]
            feats_a = {n: f[a] for n, f in graph.layers.items()}
            feats_b = {n: f[b] for n, f in graph.layers.items()}
            out.append(self.results(sa, sb, sims[k], rel_a, rel_b, feats_a, feats_b, pixels))
        return out
