"""How fast can exact PAIR-X pixel maps be? Operation counts against the issue's floor.

Counts floating-point operations (``torch.utils.flop_counter``) of the work that exact PAIR-X
needs on the MiewID-sized model of ``bench_pairx.py`` (``efficientnetv2_rw_m``, 440 px, layer
``backbone.blocks.3``), independent of machine speed and load:

* ``floor``: one forward and one zennit LRP backward pass (embedding -> pixels) per image, as
  executed (the issue's floor);
* ``floor (gradient engine)``: the same with pairx's modified-gradient engine;
* ``pixel map (dense)``: one pixel map as pairx computes it, a backward pass of the
  modified-gradient engine from the masked layer activation to the pixels;
* ``pixel map (cone)``: the same work restricted to the cone of the matched position: every
  convolution below the layer only computed where the position's receptive field reaches
  (box propagation through each convolution's kernel, stride and padding; SE gates are
  signal-only under the EpsilonPlus canonizer, so relevance stays in the cone). Averaged over all
  positions of the layer's grid. No implementation can compute an exact map with fewer
  convolution operations than this without changing the rules.

From these counts it prints the best ratio to the floor that ``2 * n_pix`` exact maps allow if
every operation ran at the floor's own speed, the ratio the issue asks for (1.5x), and the time
the per-match baseline would need for PAIR-X to be 8x faster than it while doing at least the
floor's work.

Run: ``python benchmarks/bound_pairx.py [--size 440] [--n-pix 10] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pairx import LAYER, _images, _model


class _Flops(TorchDispatchMode):
    """Sum of the floating-point operations of every op with a formula in torch's flop registry.

    (``torch.utils.flop_counter.FlopCounterMode`` tracks modules with multi-grad hooks, which
    ``torch.autograd.grad`` over zennit's hooked modules does not support.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **(kwargs or {}), out_val=out)
        return out


def _count(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(GFLOP, seconds) of ``fn()``; the seconds are measured without counting."""
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    counter = _Flops()
    with counter:
        fn()
    return counter.total / 1e9, seconds


def _conv_records(model, x: torch.Tensor) -> tuple[list[dict[str, object]], tuple[int, int]]:  # type: ignore[no-untyped-def]
    """Every convolution executed before the layer's output, in order, with its geometry."""
    records: list[dict[str, object]] = []
    done = {"flag": False}
    grid: dict[str, tuple[int, int]] = {}

    def conv_hook(m: nn.Conv2d, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        if done["flag"] or inp[0].shape[2:] == (1, 1):
            return  # past the layer, or an SE gate's convolution (signal-only: no relevance)
        k = m.kernel_size
        flops = 2.0 * out.shape[2] * out.shape[3] * m.out_channels * m.in_channels // m.groups
        records.append({
            "in": tuple(inp[0].shape[2:]), "out": tuple(out.shape[2:]), "k": k,
            "s": m.stride, "p": m.padding, "d": m.dilation, "flops": flops * k[0] * k[1],
        })

    def layer_hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        done["flag"] = True
        grid["hw"] = (int(out.shape[2]), int(out.shape[3]))

    hooks = [m.register_forward_hook(conv_hook) for m in model.net.modules()
             if isinstance(m, nn.Conv2d)]
    hooks.append(model.net.get_submodule(LAYER).register_forward_hook(layer_hook))
    try:
        with torch.no_grad():
            model.net(x)
    finally:
        for h in hooks:
            h.remove()
    return records, grid["hw"]


def _cone_fraction(records: list[dict[str, object]], hw: tuple[int, int]) -> np.ndarray:
    """Per position of the layer grid: cone-restricted share of the convolutions' operations."""
    total = sum(float(r["flops"]) for r in records)  # type: ignore[arg-type]
    out = np.zeros(hw)
    for row in range(hw[0]):
        for col in range(hw[1]):
            box = [row, row, col, col]  # inclusive (r0, r1, c0, c1) on the current tensor
            work = 0.0
            for r in reversed(records):
                oh, ow = r["out"]  # type: ignore[misc]
                area = (box[1] - box[0] + 1) * (box[3] - box[2] + 1)
                work += float(r["flops"]) * area / (oh * ow)  # type: ignore[arg-type]
                ih, iw = r["in"]  # type: ignore[misc]
                (kh, kw), (sh, sw), (ph, pw), (dh, dw) = r["k"], r["s"], r["p"], r["d"]  # type: ignore[misc]
                box = [
                    max(0, box[0] * sh - ph), min(ih - 1, box[1] * sh - ph + dh * (kh - 1)),
                    max(0, box[2] * sw - pw), min(iw - 1, box[3] * sw - pw + dw * (kw - 1)),
                ]
            out[row, col] = work / total
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=440)
    parser.add_argument("--n-pix", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from pairx.lrp.gradient_engine import (
        gradient_lrp_mode,
        layer_relevance,
        position_pixel_relevance,
    )
    from pairx.lrp.zennit_engine import (
        capture_layers,
        lrp_mode,
        pixel_relevance,
        similarity_relevance,
    )

    model = _model(args.size)
    a, b = _images(args.size)
    x = torch.cat([model.to_input(a), model.to_input(b)])

    def forward() -> None:
        with torch.no_grad():
            model.net(x)

    def floor(mode=lrp_mode) -> None:  # type: ignore[no-untyped-def]
        with mode(model) as net:
            xr = x.clone().requires_grad_(True)
            with torch.enable_grad():
                out = net(xr)
            _, r_a, r_b = similarity_relevance(out[:1].detach(), out[1:].detach())
            if mode is gradient_lrp_mode:
                layer_relevance(out, torch.cat([r_a, r_b]), [xr], retain_graph=False)
            else:
                torch.autograd.grad(out, xr, grad_outputs=torch.cat([r_a, r_b]))

    @contextmanager
    def one_image_graph(mode):  # type: ignore[no-untyped-def]
        """An LRP forward graph of the first image: ``(input, layer activation, centre)``."""
        with mode(model) as net:
            xr = x[:1].clone().requires_grad_(True)
            with capture_layers(model, [LAYER]) as found, torch.enable_grad():
                net(xr)
            hw = found[LAYER].shape[-2:]
            yield xr, found[LAYER], torch.tensor([[[hw[1] // 2, hw[0] // 2]]])

    maps: dict[str, float] = {}

    def one_map() -> None:
        """One pixel map as pairx computes it: a backward pass over an existing graph."""
        with one_image_graph(gradient_lrp_mode) as (xr, act, centre):
            counter = _Flops()
            with counter:
                position_pixel_relevance(act, xr, centre)
            maps["dense"] = counter.total / 1e9

    def per_match_map() -> None:
        """One pixel map as the per-match baseline computes it (bench_pairx.py: a new LRP
        forward of the whole model, then a backward from the masked layer activation)."""
        with one_image_graph(lrp_mode) as (xr, act, centre):
            pixel_relevance(act, xr, centre, chunk=1, retain_graph=False)

    g_fwd, t_fwd = _count(forward)
    g_pm_map, _ = _count(per_match_map)
    g_floor, t_floor = _count(floor)
    g_floor_grad, t_floor_grad = _count(lambda: floor(gradient_lrp_mode))
    one_map()
    records, hw = _conv_records(model, x[:1])
    fraction = _cone_fraction(records, hw)
    g_map = maps["dense"]
    g_cone = g_map * float(fraction.mean())
    n_maps = 2 * args.n_pix
    print(f"ReIDNet('efficientnetv2_rw_m') {args.size}x{args.size}, layer {LAYER} "
          f"({hw[0]}x{hw[1]} grid), {args.n_pix} pixel maps per image, {len(records)} "
          "convolutions below the layer")
    print(f"{'work':<34}{'GFLOP':>9}{'seconds':>9}{'GFLOP/s':>9}")
    for name, g, t in (("forward, 2 images", g_fwd, t_fwd), ("floor (zennit)", g_floor, t_floor),
                       ("floor (gradient engine)", g_floor_grad, t_floor_grad)):
        print(f"{name:<34}{g:>9.1f}{t:>9.2f}{g / t:>9.1f}")
    print(f"{'one pixel map (dense)':<34}{g_map:>9.2f}")
    print(f"{'one pixel map (cone, mean)':<34}{g_cone:>9.2f}   cone share of the convolutions: "
          f"mean {fraction.mean():.2f}, centre {fraction[hw[0] // 2, hw[1] // 2]:.2f}, "
          f"corner {fraction[0, 0]:.2f}")
    best_dense = (g_floor + n_maps * g_map) / g_floor
    best_cone = (g_floor + n_maps * g_cone) / g_floor
    g_per_match = g_fwd + g_floor + n_maps * g_pm_map
    print(f"{'per-match baseline (all maps)':<34}{g_per_match:>9.1f}   "
          f"{g_per_match / g_floor:.2f}x the floor's operations")
    print(f"\nbest ratio to the floor at the floor's speed, {n_maps} exact maps:")
    print(f"  dense maps: {best_dense:.2f}x    cone-restricted maps: {best_cone:.2f}x    "
          "(issue target: 1.5x)")
    print(f"  the 1.5x target leaves {0.5 * g_floor / n_maps:.2f} GFLOP per map; a cone map "
          f"needs {g_cone:.2f}")
    print(f"any exact method does at least the floor's work, so it is at most "
          f"{g_per_match / g_floor:.2f}x faster than the per-match baseline at equal speed "
          "(issue target: 8x)")


if __name__ == "__main__":
    main()
