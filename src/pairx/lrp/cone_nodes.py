"""The node replays of :mod:`pairx.lrp.cone`: gradient windows and, per autograd node
kind, its derivative applied to a window.

A :class:`Window` is a block of one tensor's gradient (one per map of a replay, all of one size,
each at its own offset); :data:`HANDLERS` maps an autograd node's class name to the exact
derivative autograd would apply, computed on the window only (the same saved tensors and
formulas, cropped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["HANDLERS", "ONLY_FIRST", "ConeUnsupported", "Crops", "Window", "accumulate",
           "paste", "signed_select"]

_Node = Any  # torch.autograd.graph.Node (C++ classes without a common Python type)


class ConeUnsupported(Exception):
    """The graph has a node the cone replay does not implement (use the dense pass)."""


@dataclass
class Window:
    """A gradient block: ``t`` is ``(N, C, h, w, *rest)`` (``rest``: the stack axis of a
    residual sum), item ``i`` covers rows ``off[i, 0] ..
    off[i, 0] + h`` and columns ``off[i, 1] .. off[i, 1] + w`` of a tensor of spatial size
    ``full``; everything outside the block is zero."""

    t: torch.Tensor
    off: np.ndarray
    full: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.t.shape[2]), int(self.t.shape[3])


def signed_select(sign: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None,
                  zeros: bool) -> torch.Tensor:
    """``[x>0] pos + [x<0] neg`` from ``sign = sign(x)`` (``neg`` None: no negative ``x``);
    ``zeros``: whether ``x`` has exact zeros (else one select suffices)."""
    if neg is None:
        return torch.where(sign > 0, pos, 0.0)
    out = torch.where(sign > 0, pos, neg)
    return out.masked_fill_(sign == 0, 0.0) if zeros else out


def _signed(d: int) -> int:
    """Autograd stores ``dim=-1`` as an unsigned 64-bit integer."""
    return d - (1 << 64) if d >= (1 << 63) else d


def _shape_of(node: _Node, input_nr: int) -> tuple[int, ...]:
    return tuple(node._input_metadata[input_nr].shape)


def _fit(lo: np.ndarray, hi: np.ndarray, full: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """One window size for all items that holds each item's ``[lo, hi)`` clipped to the
    tensor, and each item's offset of it inside the tensor: ``(off (N, 2), h, w)``."""
    size = np.array(full)
    start = np.clip(lo, 0, size)
    extent = np.maximum(np.minimum(hi, size) - start, 1)
    h, w = int(extent[:, 0].max()), int(extent[:, 1].max())
    off = np.stack([np.clip(start[:, 0], 0, full[0] - h), np.clip(start[:, 1], 0, full[1] - w)], 1)
    return off, h, w


def _place(t: torch.Tensor, off: np.ndarray, full: tuple[int, int]) -> Window:
    """Fit a block at virtual offsets ``off`` (which may hang over the tensor's edges) into the
    tensor: the parts outside are dropped (they belong to padding); the block's in-range
    content is kept."""
    h, w = int(t.shape[2]), int(t.shape[3])
    new, nh, nw = _fit(off, off + np.array([h, w]), full)
    if (nh, nw) == (h, w) and np.array_equal(new, off):
        return Window(t, off, full)
    out = t.new_zeros((t.shape[0], t.shape[1], nh, nw, *t.shape[4:]))
    for i in range(t.shape[0]):
        paste(out[i], new[i], t[i], off[i])
    return Window(out, new, full)


def paste(dst: torch.Tensor, dst_off: np.ndarray, src: torch.Tensor, src_off: np.ndarray,
           add: bool = False) -> None:
    """Copy (or add) the overlap of block ``src`` at ``src_off`` into block ``dst`` at
    ``dst_off`` (both ``(C, h, w, *rest)`` in the same tensor coordinates)."""
    r0 = max(int(dst_off[0]), int(src_off[0]))
    c0 = max(int(dst_off[1]), int(src_off[1]))
    r1 = min(int(dst_off[0]) + dst.shape[1], int(src_off[0]) + src.shape[1])
    c1 = min(int(dst_off[1]) + dst.shape[2], int(src_off[1]) + src.shape[2])
    if r1 <= r0 or c1 <= c0:
        return
    d = dst[:, r0 - int(dst_off[0]):r1 - int(dst_off[0]), c0 - int(dst_off[1]):c1 - int(dst_off[1])]
    s = src[:, r0 - int(src_off[0]):r1 - int(src_off[0]), c0 - int(src_off[1]):c1 - int(src_off[1])]
    if add:
        d.add_(s)
    else:
        d.copy_(s)


def accumulate(old: Window, new: Window) -> Window:
    """The sum of two blocks of one tensor, on the union of their windows."""
    if old.size == new.size and np.array_equal(old.off, new.off):
        return Window(old.t + new.t, old.off, old.full)
    lo = np.minimum(old.off, new.off)
    hi = np.maximum(old.off + np.array(old.size), new.off + np.array(new.size))
    off, h, w = _fit(lo, hi, old.full)
    if old.t.shape[1] != new.t.shape[1] or old.t.shape[4:] != new.t.shape[4:]:
        raise ConeUnsupported("gradients of one tensor with different shapes")
    dtype = torch.promote_types(old.t.dtype, new.t.dtype)
    out = old.t.new_zeros((old.t.shape[0], old.t.shape[1], h, w, *old.t.shape[4:]), dtype=dtype)
    for i in range(out.shape[0]):
        paste(out[i], off[i], old.t[i], old.off[i], add=True)
        paste(out[i], off[i], new.t[i], new.off[i], add=True)
    return Window(out, off, old.full)


class Crops:
    """Crops of saved tensors for the blocks of one run."""

    def __init__(self, items: np.ndarray) -> None:
        self.items = items  # (N,) batch index of each map

    def crop(self, saved: Any, win: Window) -> Any:
        """``saved`` restricted to each item's window, broadcastable against ``win.t``."""
        if not isinstance(saved, torch.Tensor) or saved.dim() == 0:
            return saved
        if saved.dim() != win.t.dim():
            if saved.dim() < 4 and all(s == 1 for s in saved.shape[-2:]) and saved.dim() >= 2:
                return saved  # e.g. (C, 1, 1)
            raise ConeUnsupported(f"saved tensor of shape {tuple(saved.shape)}")
        spatial = tuple(saved.shape[2:4])
        if spatial == (1, 1):
            return saved if saved.shape[0] == 1 else saved[torch.as_tensor(self.items)]
        if spatial != win.full:
            raise ConeUnsupported(f"saved tensor {tuple(saved.shape)} against a gradient of "
                                  f"spatial size {win.full}")
        h, w = win.size
        shared = saved.shape[0] == 1
        if np.all(win.off == win.off[0]) and (shared or np.all(self.items == self.items[0])):
            r, c = int(win.off[0, 0]), int(win.off[0, 1])  # one crop serves every item
            b = 0 if shared else int(self.items[0])
            return saved[b:b + 1, :, r:r + h, c:c + w]
        return torch.stack([
            saved[0 if saved.shape[0] == 1 else int(b), :, int(r):int(r) + h, int(c):int(c) + w]
            for b, (r, c) in zip(self.items, win.off, strict=True)
        ])


def _reduce(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum a ``(N, C, h, w, *rest)`` block down to an input broadcast over channels."""
    if len(shape) != t.dim() or shape[4:] != tuple(t.shape[4:]):
        raise ConeUnsupported(f"gradient for a tensor of shape {shape}")
    if shape[1] == 1 and t.shape[1] != 1:
        t = t.sum(dim=1, keepdim=True)
    if shape[2:4] == (1, 1) and t.shape[2:4] != (1, 1):
        raise ConeUnsupported("gradient to a spatially broadcast tensor (a global pooling)")
    return t


_Handler = Callable[[_Node, Window, Crops], list[tuple[int, Window | None]]]


def _to_input(node: _Node, i: int, t: torch.Tensor) -> torch.Tensor:
    """``t`` reduced to the shape of the node's input ``i`` (autograd's sum-to-size)."""
    nxt, nr = node.next_functions[i]
    return t if nxt is None else _reduce(t, _shape_of(nxt, nr))


def _routed(win: Window, t: torch.Tensor) -> Window:
    return Window(t, win.off, win.full)


def _identity(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    return [(0, win)]


def _add(sign: float) -> _Handler:
    def handler(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
        alpha = float(getattr(node, "_saved_alpha", 1))
        factor = sign * alpha
        return [(0, _routed(win, _to_input(node, 0, win.t))),
                (1, _routed(win, _to_input(node, 1, win.t if factor == 1 else win.t * factor)))]
    return handler


def _mul(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    out: list[tuple[int, Window | None]] = []
    if node.next_functions[0][0] is not None:
        out.append((0, _routed(win, _to_input(node, 0, win.t * rp.crop(node._saved_other, win)))))
    if len(node.next_functions) > 1 and node.next_functions[1][0] is not None:
        out.append((1, _routed(win, _to_input(node, 1, win.t * rp.crop(node._saved_self, win)))))
    return out


def _div(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    if len(node.next_functions) > 1 and node.next_functions[1][0] is not None:
        raise ConeUnsupported("division by a tensor that needs a gradient")
    other = node._saved_other
    return [(0, _routed(win, win.t / rp.crop(other, win)))]


def _relu(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    res = rp.crop(node._saved_result, win)
    return [(0, _routed(win, torch.where(res > 0, win.t, 0.0)))]


def _clamp(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    x = rp.crop(node._saved_self, win)
    lo, hi = node._saved_min, node._saved_max
    keep: torch.Tensor | None = None
    if lo is not None:
        keep = x >= lo
    if hi is not None:
        keep = (x <= hi) if keep is None else keep.logical_and_(x <= hi)
    return [(0, _routed(win, win.t if keep is None else torch.where(keep, win.t, 0.0)))]


def _window_in(win: Window, kernel: tuple[int, ...], stride: tuple[int, ...],
               padding: tuple[int, ...], dilation: tuple[int, ...]
               ) -> tuple[np.ndarray, tuple[int, ...]]:
    """Virtual input offset and size of a window of a strided kernel's output."""
    off = win.off * np.array(stride) - np.array(padding)
    size = tuple((n - 1) * s + d * (k - 1) + 1
                 for n, s, d, k in zip(win.size, stride, dilation, kernel, strict=True))
    return off, size


def _transposed(t: torch.Tensor, win: Window, weight: torch.Tensor, stride: tuple[int, ...],
                padding: tuple[int, ...], dilation: tuple[int, ...], groups: int,
                full: tuple[int, int]) -> Window:
    """The input-side window of a convolution's gradient: ``t`` (the output-side block, laid
    out as ``win``) through the transposed convolution, fitted into the input of size
    ``full``."""
    off, _ = _window_in(win, tuple(weight.shape[-2:]), stride, padding, dilation)
    g = F.conv_transpose2d(t, weight, stride=stride, dilation=dilation, groups=groups)
    return _place(g, off, full)


def _conv(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    if node._saved_transposed or len(win.t.shape) != 4:
        raise ConeUnsupported("transposed or non-2d convolution")
    padding = tuple(node._saved_padding)
    if any(not isinstance(p, int) for p in padding):
        raise ConeUnsupported(f"convolution padding {padding!r}")
    full = _shape_of(node.next_functions[0][0], node.next_functions[0][1])[-2:]
    return [(0, _transposed(win.t, win, node._saved_weight, tuple(node._saved_stride), padding,
                            tuple(node._saved_dilation), int(node._saved_groups),
                            (int(full[0]), int(full[1]))))]


def _zplus_conv(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    """:class:`pairx.lrp.surrogates.ZPlusConv`: ``[x>0] W+^T u + [x<0] W-^T u``
    with ``u = g * ratio``."""
    weight, ratio, sign = node.saved_tensors
    w_pos, w_neg = node.split(weight, keep=True)  # one replay per map: made once
    if not node.signed:
        w_neg = None
    stride, padding, dilation, groups = node.conv
    u = win.t * rp.crop(ratio, win)
    full = (int(node.input_size[-2]), int(node.input_size[-1]))
    pos = _transposed(u, win, w_pos, stride, padding, dilation, groups, full)
    neg = None if w_neg is None else _transposed(u, win, w_neg, stride, padding, dilation,
                                                 groups, full)
    out = signed_select(rp.crop(sign, pos), pos.t, None if neg is None else neg.t,
                        node.has_zero)
    return [(0, Window(out, pos.off, full))]


def _max_pool(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    x = node._saved_self
    full = (int(x.shape[-2]), int(x.shape[-1]))
    idx = rp.crop(node._saved_result1, win)  # flat argmax positions in the input
    off, size = _window_in(win, tuple(node._saved_kernel_size), tuple(node._saved_stride),
                           tuple(node._saved_padding), tuple(node._saved_dilation))
    new, nh, nw = _fit(off, off + np.array(size), full)
    base = torch.as_tensor(new, device=idx.device)
    rows = idx // full[1] - base[:, 0].view(-1, 1, 1, 1)
    cols = idx % full[1] - base[:, 1].view(-1, 1, 1, 1)
    n, c = win.t.shape[:2]
    out = win.t.new_zeros((n, c, nh * nw))
    out.scatter_add_(2, (rows * nw + cols).reshape(n, c, -1), win.t.reshape(n, c, -1))
    return [(0, Window(out.view(n, c, nh, nw), new, full))]


def _avg_pool(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    x = node._saved_self
    full = (int(x.shape[-2]), int(x.shape[-1]))
    kernel = tuple(node._saved_kernel_size)
    stride = tuple(node._saved_stride) or kernel
    padding = tuple(node._saved_padding)
    floor = tuple((n + 2 * p - k) // s + 1
                  for n, p, k, s in zip(full, padding, kernel, stride, strict=True))
    out_size = _shape_of(node, 0)[-2:]
    if tuple(out_size) != floor or (any(padding) and not node._saved_count_include_pad):
        raise ConeUnsupported("average pooling with partial windows")
    divisor = node._saved_divisor_override or kernel[0] * kernel[1]
    c = win.t.shape[1]
    weight = win.t.new_full((c, 1, *kernel), 1.0 / divisor)
    return [(0, _transposed(win.t, win, weight, stride, padding, (1, 1), c, full))]


def _channel_mean(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    sizes = tuple(node._saved_self_sym_sizes)
    dims = tuple(_signed(int(d)) % len(sizes) for d in node._saved_dim)
    if len(sizes) != 4 or dims != (1,):
        raise ConeUnsupported(f"mean over dims {dims} of a {len(sizes)}-d tensor")
    t = win.t if node._saved_keepdim else win.t.unsqueeze(1)
    return [(0, _routed(win, t.expand(-1, sizes[1], -1, -1) / sizes[1]))]


def _constant_pad(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    pad = tuple(int(p) for p in node._saved_pad)
    if len(pad) != 4 or win.t.dim() != 4:
        raise ConeUnsupported(f"padding {pad} of a {win.t.dim()}-d tensor")
    left, _, top, _ = pad
    full = _shape_of(node.next_functions[0][0], node.next_functions[0][1])[-2:]
    return [(0, _place(win.t, win.off - np.array([top, left]), (int(full[0]), int(full[1]))))]


def _stack_sum(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    """The sum over the last axis of a ``(B, C, H, W, S)`` stack (pairx's residual sums)."""
    sizes = tuple(node._saved_self_sym_sizes)
    dims = tuple(_signed(int(d)) % len(sizes) for d in node._saved_dim)
    if len(sizes) != 5 or dims != (4,) or node._saved_keepdim or win.t.dim() != 4:
        raise ConeUnsupported(f"sum over dims {dims} of a {len(sizes)}-d tensor")
    return [(0, _routed(win, win.t.unsqueeze(-1).expand(*win.t.shape, sizes[4])))]


def _stack(node: _Node, win: Window, rp: Crops) -> list[tuple[int, Window | None]]:
    """``torch.stack(tensors, dim=-1)`` of ``(B, C, H, W)`` tensors: input ``i`` gets slice
    ``i`` of the last axis."""
    if _signed(int(node._saved_dim)) not in (-1, 4) or win.t.dim() != 5:
        raise ConeUnsupported("stack along an axis other than the last of 4-d tensors")
    return [(i, _routed(win, win.t[..., i])) for i in range(win.t.shape[-1])]


HANDLERS: dict[str, _Handler] = {
    "SumBackward1": _stack_sum,
    "StackBackward0": _stack,
    "ValueOfBackward": _identity,
    "SignalPassBackward": _identity,
    "CloneBackward0": _identity,
    "AliasBackward0": _identity,
    "AddBackward0": _add(1.0),
    "SubBackward0": _add(-1.0),
    "MulBackward0": _mul,
    "DivBackward0": _div,
    "ReluBackward0": _relu,
    "ClampBackward1": _clamp,
    "ClampMinBackward0": _clamp,
    "ConvolutionBackward0": _conv,
    "ZPlusConvBackward": _zplus_conv,
    "MaxPool2DWithIndicesBackward0": _max_pool,
    "AvgPool2DBackward0": _avg_pool,
    "MeanBackward1": _channel_mean,
    "ConstantPadNdBackward0": _constant_pad,
}
"""Replay of each supported autograd node: ``(node, block of its output's gradient) ->
[(input index, block of that input's gradient)]``."""

ONLY_FIRST = {"ValueOfBackward", "ZPlusConvBackward", "SignalPassBackward",
               "ConvolutionBackward0", "DivBackward0",
               "ReluBackward0", "ClampBackward1", "ClampMinBackward0",
               "MaxPool2DWithIndicesBackward0", "AvgPool2DBackward0", "MeanBackward1",
               "ConstantPadNdBackward0"}
"""Nodes whose gradient reaches only their first input (the others are weights, saved copies
of the output that :class:`~pairx.lrp.convention.ValueOf` routes nothing to, or constants)."""


