"""PAIR-X on the gradient engine: single-image LRP graphs shared by every pair of one call.

Each image's LRP forward graph (:mod:`pairx.lrp.gradient_engine`) is built once and reused by
every pair it takes part in while it is live, so a query explained against ``k`` candidates
costs ``k + 1`` forward passes instead of ``2k``, and each of the query's pixel maps is computed
once per matched position however many candidates match there.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pairx.explainers.base import PreparedImage
from pairx.explainers.pairx_forward import LRPGraph, PairResults, dtype_of, embeddings
from pairx.lrp.gradient_engine import layer_relevance
from pairx.lrp.zennit_engine import seed_relevance
from pairx.models.adapter import ReIDModel

__all__ = ["EAGER_PAIRS", "GradientPairs", "GraphPool", "NetworkOutputs"]

EAGER_PAIRS = 16
"""One explained layer: an image's relevance for at most this many of its pairs is computed as
soon as its graph is built, so that the part of the graph above the layer can be freed at once;
an image in more pairs of one call keeps its whole graph while it is needed."""

class GraphPool:
    """Live single-image graphs of one call.

    Pair ``i`` asks for the graphs of its two images with :meth:`get` (built on a miss) and
    hands them back with :meth:`release`: a graph no later pair needs is dropped at once; when
    ``capacity`` graphs are live, the one whose next use is furthest away goes first (Belady).
    """

    def __init__(
        self,
        build: Callable[[PreparedImage], LRPGraph],
        pairs: Sequence[tuple[PreparedImage, PreparedImage]],
        capacity: int,
    ) -> None:
        self.build = build
        self.capacity = max(2, int(capacity))
        self.uses: dict[int, list[int]] = {}
        for i, (sa, sb) in enumerate(pairs):
            for key in {id(sa), id(sb)}:
                self.uses.setdefault(key, []).append(i)
        self.live: OrderedDict[int, LRPGraph] = OrderedDict()
        self.pairs = pairs

    def _next_use(self, key: int, now: int) -> float:
        later = self.uses[key]
        j = bisect.bisect_right(later, now)
        return float(later[j]) if j < len(later) else math.inf

    def get(self, i: int, st: PreparedImage) -> LRPGraph:
        """The graph of ``st`` for pair ``i`` (built now if it is not live)."""
        key = id(st)
        if key in self.live:
            return self.live[key]
        current = {id(self.pairs[i][0]), id(self.pairs[i][1])}
        while len(self.live) >= self.capacity:
            spare = [k for k in self.live if k not in current]
            if not spare:
                break
            del self.live[max(spare, key=lambda k: self._next_use(k, i))]
        graph = self.build(st)
        self.live[key] = graph
        return graph

    def is_live(self, st: PreparedImage) -> bool:
        """Whether the graph of ``st`` is built and kept."""
        return id(st) in self.live

    def uses_from(self, i: int, st: PreparedImage) -> list[int]:
        """The pairs from pair ``i`` on that use ``st`` (ascending)."""
        later = self.uses[id(st)]
        return later[bisect.bisect_left(later, i):]

    def release(self, i: int) -> None:
        """Drop the graphs no pair after ``i`` needs."""
        for key in [k for k in self.live if self._next_use(k, i) == math.inf]:
            del self.live[key]


class NetworkOutputs:
    """The LRP network's outputs of the images of one gradient-engine call, for the starting
    relevance of their partners: from an image's graph once it has one (:meth:`remember`), else
    from a forward pass of the canonized network without a graph (the same values: recording a
    graph does not change the arithmetic), remembered for the call."""

    def __init__(self, net: nn.Module, model: ReIDModel) -> None:
        self.net = net
        self.model = model
        self.known: dict[int, torch.Tensor] = {}

    def remember(self, st: PreparedImage, graph: LRPGraph) -> None:
        """Take ``st``'s output from its graph."""
        self.known[id(st)] = graph.out.detach()

    def of(self, st: PreparedImage) -> torch.Tensor:
        """``(1, D)`` output of ``st`` in the LRP network's number format (detached)."""
        if id(st) not in self.known:
            with torch.no_grad():
                out = embeddings(self.model, self.net(st.x.detach().to(dtype_of(self.model))))
            self.known[id(st)] = out
            st.embedding = out.float()
        return self.known[id(st)]


class GradientPairs:
    """Pairs of one call over single-image graphs of the gradient engine.

    Parameters
    ----------
    graphs, outputs
        The call's graphs and network outputs.
    target
        The similarity target's name.
    single_layer
        Whether one layer is explained (then the graph above it can be freed early).
    pixel_method
        How pixel maps are computed (``"cone"`` or ``"dense"``).
    results
        Builds a pair's explanations from its similarity, relevances, features and pixel maps.
    """

    def __init__(self, graphs: GraphPool, outputs: NetworkOutputs, *, target: str,
                 single_layer: bool, pixel_method: str, results: PairResults) -> None:
        self.graphs = graphs
        self.outputs = outputs
        self.target = target
        self.single_layer = single_layer
        self.pixel_method = pixel_method
        self.results = results

    def explain(self, i: int, sa: PreparedImage, sb: PreparedImage) -> object:
        """Pair ``i``.

        An image's relevance at the layers is computed as soon as its graph exists, the
        partner's output taken from the partner's graph or, where that graph is not built yet,
        from a forward pass without a graph (the same values, a fraction of the cost). With one
        explained layer, the backward pass to it then frees the part of the graph above the
        layer (the pixel maps need only the part below) once no later pair needs it: an image
        in up to :data:`EAGER_PAIRS` pairs of the call (a query and its candidates) gets its
        relevance for all of them at once. So at most one whole graph is alive at a time (on
        a MiewID-sized model about 0.5 GB less than two).
        """
        graphs = self.graphs
        first, second = (sb, sa) if graphs.is_live(sa) and not graphs.is_live(sb) else (sa, sb)
        for st in (first, second):
            g = graphs.get(i, st)
            self.outputs.remember(st, g)
            self._relevance_ahead(i, st, g)
        ga, gb = graphs.get(i, sa), graphs.get(i, sb)
        cos, rel_a = ga.relevance.pop((i, 0))
        _, rel_b = gb.relevance.pop((i, 1))

        def pixels(name: str, positions: torch.Tensor) -> torch.Tensor:
            pix_a = ga.pixel_maps(name, positions[:, :1], self.pixel_method)
            pix_b = gb.pixel_maps(name, positions[:, 1:], self.pixel_method)
            return torch.cat([pix_a, pix_b], dim=1)

        return self.results(sa, sb, cos, rel_a, rel_b, ga.layers, gb.layers, pixels)

    def _relevance_ahead(self, i: int, st: PreparedImage, g: LRPGraph) -> None:
        """Fill ``g.relevance`` for pair ``i`` and, where the rest of the graph above the layer
        can then go, for every later pair of ``st`` (see :meth:`explain`)."""
        graphs = self.graphs
        todo = [(j, side) for j in graphs.uses_from(i, st)
                for side, other in enumerate(graphs.pairs[j]) if other is st
                and (j, side) not in g.relevance]
        if not todo:
            return
        now = (todo if self.single_layer and len(todo) <= EAGER_PAIRS
               else [(j, side) for j, side in todo if j == i])
        free = self.single_layer and now == todo  # no later pair needs the graph above
        targets = list(g.layers.values())
        for n, (j, side) in enumerate(now):
            pa, pb = graphs.pairs[j]
            a_out = g.out.detach() if side == 0 else self.outputs.of(pa)
            b_out = g.out.detach() if side == 1 else self.outputs.of(pb)
            cos, r_a, r_b = seed_relevance(self.target, a_out.float(), b_out.float())
            seed = (r_a if side == 0 else r_b).to(g.out.dtype)
            retain = not (free and n + 1 == len(now))
            g.relevance[(j, side)] = (cos, layer_relevance(g.out, seed, targets,
                                                           retain_graph=retain))
