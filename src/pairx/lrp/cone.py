"""Cone-restricted pixel maps: the gradient engine's backward pass, run on receptive-field windows.

A PAIR-X pixel map is the modified-gradient backward pass (:mod:`pairx.lrp.gradient_engine`)
from one position of an intermediate layer to the pixels. Its gradient is non-zero only inside
the receptive-field cone of that position, so a dense backward pass spends most of its work on
zeros. :class:`ConePlan` reads the autograd graph that the engine's forward pass recorded (the
rule surrogates are ordinary autograd nodes) and replays its backward pass on *windows*: every
gradient is a ``(N, C, h, w)`` block at a per-map offset inside its tensor, each convolution is a
transposed convolution of the block (stride, padding, dilation and groups as recorded; the part
of the result that falls on padding is cut off), elementwise nodes multiply the block by the
matching crop of their saved tensors, and where two branches meet (residual sums) the blocks are
added on the union of their windows. Windows never leave their tensor and never grow beyond it,
so the work is the cone's, not the image's. On a CPU each map is replayed on exactly its own
cone; on a GPU all maps of an image run as one batch (sharing one window size per tensor). The
replays of the nodes are in :mod:`pairx.lrp.cone_nodes`.

The replay implements the derivative of each supported node exactly as autograd does (the same
saved tensors, the same formulas), so maps equal the dense pass to float rounding; a graph with
any other node on the path from the layer to the input raises :class:`ConeUnsupported` and the
caller falls back to the dense pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pairx.lrp.cone_nodes import (
    HANDLERS,
    ONLY_FIRST,
    ConeUnsupported,
    Crops,
    Window,
    accumulate,
    paste,
    signed_select,
)

__all__ = ["ConePlan", "ConeUnsupported", "signed_select"]

_Node = Any  # torch.autograd.graph.Node


def _edges(node: _Node) -> list[tuple[_Node, int]]:
    """The inputs (node, input number) that the replay of ``node`` hands gradient to."""
    fns = list(node.next_functions)
    return fns[:1] if type(node).__name__ in ONLY_FIRST else fns


class ConePlan:
    """The cone replay of one layer's graph down to the input.

    Parameters
    ----------
    root
        ``(B, C, h, w)`` layer activation of a forward pass in
        :func:`~pairx.lrp.gradient_engine.gradient_lrp_mode` (graph attached and retained).
    x
        ``(B, 3, H, W)`` leaf input with ``requires_grad``.

    Raises
    ------
    ConeUnsupported
        The path from ``root`` to ``x`` has a node the replay does not implement (its name is
        in the message).
    """

    def __init__(self, root: torch.Tensor, x: torch.Tensor) -> None:
        if root.grad_fn is None or root.dim() != 4 or x.dim() != 4 or not x.is_leaf:
            raise ConeUnsupported("needs a 4-d layer output with a graph and a 4-d leaf input")
        if root.output_nr != 0:
            raise ConeUnsupported("the layer output is not the first output of its node")
        self.x = x
        self.full = (int(root.shape[-2]), int(root.shape[-1]))
        start = root.grad_fn
        reaches: dict[_Node, bool] = {}
        self.target: _Node | None = None
        stack: list[tuple[_Node, bool]] = [(start, False)]
        while stack:  # iterative post-order: does a node reach x?
            node, done = stack.pop()
            if done:
                kids = [n for n, _ in _edges(node) if n is not None]
                reaches[node] = node is self.target or any(reaches.get(k, False) for k in kids)
                continue
            if node in reaches:
                continue
            reaches[node] = False
            if type(node).__name__ == "AccumulateGrad":
                if node.variable is x:
                    self.target = node
                    reaches[node] = True
                continue
            stack.append((node, True))
            stack.extend((n, False) for n, _ in _edges(node) if n is not None and n not in reaches)
        if self.target is None or not reaches.get(start):
            raise ConeUnsupported("the input is not reached from the layer")
        live = [n for n, r in reaches.items() if r]
        for node in live:
            name = type(node).__name__
            if node is not self.target and name not in HANDLERS:
                raise ConeUnsupported(f"autograd node {name}")
        # topological order (a node after all its consumers), Kahn's algorithm
        indegree = dict.fromkeys(live, 0)
        for node in live:
            if node is not self.target:
                for kid, _ in _edges(node):
                    if kid is not None and reaches.get(kid):
                        indegree[kid] += 1
        order, ready = [], [start]
        while ready:
            node = ready.pop()
            order.append(node)
            if node is self.target:
                continue
            for kid, _ in _edges(node):
                if kid is not None and reaches.get(kid):
                    indegree[kid] -= 1
                    if indegree[kid] == 0:
                        ready.append(kid)
        if len(order) != len(live):
            raise ConeUnsupported("the graph has a cycle")
        self.order = order
        self.steps = [  # what the replay does at each node: its handler and its inputs
            (node, HANDLERS[type(node).__name__],
             [kid if kid is not None and reaches.get(kid) else None for kid, _ in _edges(node)])
            for node in order if node is not self.target]

    def run(
        self,
        seed: torch.Tensor,
        positions: torch.Tensor,
        weight: torch.Tensor,
        *,
        batch: int | None = None,
    ) -> torch.Tensor:
        """Pixel relevance of a set of maps.

        Parameters
        ----------
        seed
            ``(B, C, h, w)`` gradient seed of the layer (relevance / carrier at each position).
        positions
            ``(K, B, 2)`` int ``(col, row)`` grid positions, one per map and batch item.
        weight
            ``(B, 3, H, W)`` factor applied to the input gradient (the input's carrier).
        batch
            Maps per replay. They share one window size per tensor (the largest), so a map
            near the border then pays for the extent of one in the middle: on a CPU, where
            work is time, ``1`` (the default there) replays each map on exactly its own cone;
            on a GPU (default: all maps at once) one batched pass is cheaper than many
            small kernels.

        Returns
        -------
        torch.Tensor
            ``(K, B, H, W)`` ``|sum over RGB of weight * gradient|`` of each map, the gradient
            being that of the seed masked to the map's position (all channels).
        """
        k, b = int(positions.shape[0]), int(positions.shape[1])
        pos = positions.detach().cpu().numpy().astype(np.int64).reshape(k * b, 2)
        items = np.tile(np.arange(b), k)
        if batch is None:
            batch = 1 if seed.device.type == "cpu" else k * b
        maps = weight.new_zeros((k * b, *weight.shape[-2:]))
        for lo in range(0, k * b, max(1, int(batch))):
            sl = slice(lo, min(lo + max(1, int(batch)), k * b))
            self._replay(seed, pos[sl, 1], pos[sl, 0], items[sl], weight, maps[sl])
        return maps.view(k, b, *weight.shape[-2:])

    def _replay(self, seed: torch.Tensor, rows: np.ndarray, cols: np.ndarray,
                items: np.ndarray, weight: torch.Tensor, maps: torch.Tensor) -> None:
        """One replay of the maps of ``items`` at ``(rows, cols)``, written into ``maps``."""
        rp = Crops(items)
        dev = seed.device
        t = seed[torch.as_tensor(items, device=dev), :, torch.as_tensor(rows, device=dev),
                 torch.as_tensor(cols, device=dev)]
        pending: dict[_Node, Window] = {
            self.order[0]: Window(t[:, :, None, None], np.stack([rows, cols], 1), self.full)}
        for node, handler, kids in self.steps:
            win = pending.pop(node, None)
            if win is None:
                continue
            for i, out in handler(node, win, rp):
                kid = kids[i]
                if out is None or kid is None:
                    continue
                old = pending.get(kid)
                pending[kid] = out if old is None else accumulate(old, out)
        result = pending.get(self.target)
        if result is not None:
            rel = (rp.crop(weight, result) * result.t).sum(dim=1).abs()
            for i in range(rel.shape[0]):
                paste(maps[i : i + 1], np.zeros(2, np.int64), rel[i : i + 1], result.off[i])
