"""Speed and memory of the PAIR-X engine on a MiewID-sized model, as ratios to a floor.

Model: ``ReIDNet("efficientnetv2_rw_m")`` (MiewID's architecture, random init, seed 0) at
440x440, layer ``backbone.blocks.3``, 10 pixel maps, CPU with ``--threads`` threads (default 2).
Each variant runs in its own subprocess so that peak memory (``ru_maxrss``) is its own:

* ``floor``: one forward pass and one zennit LRP backward pass (embedding -> pixels) per image
  (the issue's floor);
* ``floor_gradient``: the same with pairx's modified-gradient engine;
* ``per_match``: a faithful per-match implementation with the reference's structure: a plain
  forward for the embeddings, one LRP forward+backward per image for the layer relevance, then
  for every pixel map a new LRP forward of the whole model and a backward pass from the layer
  (the reference's ``get_pixel_relevance``);
* ``pairx_zennit``: :class:`pairx.explainers.pairx.PairX` with ``engine="zennit"`` (one LRP
  forward of the pair, one backward to the layer, one backward per pixel map on that graph);
* ``pairx_dense``: the default ``engine="gradient"`` with one dense backward pass per pixel
  map (``pixel_method="dense"``);
* ``pairx``: the default: the gradient engine with cone-restricted pixel maps;
* ``pairx_bf16``: the same in bfloat16 (``precision="bfloat16"``).

The outputs of ``per_match`` and of both ``pairx`` variants are compared (same matches, maps
allclose).

Every variant runs with :func:`pairx.tune_allocator` applied, as pairx's own processes do
(``--malloc system`` for glibc's defaults).

Run: ``python benchmarks/bench_pairx.py [--threads 2] [--size 440] [--repeats 1]
[--variants floor,per_match,...] [--malloc tuned|system]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pairx.models.adapter import ReIDModel

LAYER = "backbone.blocks.3"
PIXEL_CHUNK = 1  # maps per backward pass in the pairx_zennit variant (--pixel-chunk)


def _model(size: int) -> ReIDModel:
    from pairx.models.adapter import Preprocessing
    from pairx.models.architectures import ReIDNet

    torch.manual_seed(0)
    net = ReIDNet("efficientnetv2_rw_m").eval()
    # Random init leaves the 40-block residual stream badly conditioned (float32 rounding is
    # amplified to O(1) output changes); damping each residual branch's last BatchNorm, as
    # trained networks effectively do, keeps activations of order one.
    with torch.no_grad():
        for m in net.modules():
            if getattr(m, "has_skip", False):
                last: Any = m.bn3 if hasattr(m, "bn3") else m.bn2
                last.weight.mul_(0.2)
    return ReIDModel(net, Preprocessing(size=(size, size)), name="miewid-sized")


def _images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random texture and a shifted, re-coloured copy (uint8, size x size x 3)."""
    rng = np.random.default_rng(0)
    base = rng.random((size // 8, size // 8, 3)).astype(np.float32)
    big = torch.from_numpy(base).permute(2, 0, 1)[None]
    smooth = F.interpolate(big, size=(size + 32, size + 32), mode="bicubic", align_corners=False)
    img = smooth[0].permute(1, 2, 0).clamp(0, 1).numpy()
    a = (img[:size, :size] * 255).astype(np.uint8)
    b = (np.clip(img[24:24 + size, 16:16 + size] * 0.9 + 0.05, 0, 1) * 255).astype(np.uint8)
    return a, b


def run_floor(size: int, n_pix: int, engine: str = "zennit") -> dict[str, object]:
    from pairx.lrp.gradient_engine import gradient_lrp_mode, layer_relevance
    from pairx.lrp.zennit_engine import lrp_mode, similarity_relevance

    model = _model(size)
    a, b = _images(size)
    x = torch.cat([model.to_input(a), model.to_input(b)])
    mode = gradient_lrp_mode if engine == "gradient" else lrp_mode
    t0 = time.perf_counter()
    with mode(model) as net:
        xr = x.clone().requires_grad_(True)
        with torch.enable_grad():
            out = net(xr)
        _, r_a, r_b = similarity_relevance(out[:1].detach(), out[1:].detach())
        if engine == "gradient":
            layer_relevance(out, torch.cat([r_a, r_b]), [xr], retain_graph=False)
        else:
            torch.autograd.grad(out, xr, grad_outputs=torch.cat([r_a, r_b]))
    return {"seconds": time.perf_counter() - t0}


def run_floor_gradient(size: int, n_pix: int) -> dict[str, object]:
    return run_floor(size, n_pix, engine="gradient")


def run_per_match(size: int, n_pix: int) -> dict[str, object]:
    from pairx.explainers.pairx_matches import build_matches
    from pairx.lrp.zennit_engine import capture_layers, lrp_mode, pixel_relevance

    model = _model(size)
    a, b = _images(size)
    x = torch.cat([model.to_input(a), model.to_input(b)])
    t0 = time.perf_counter()
    # plain forward for the embeddings and the cosine (the reference's first pass)
    e = x.clone()
    with torch.enable_grad():
        emb = model.net(e).detach().requires_grad_(True)
        cos = F.cosine_similarity(emb[:1], emb[1:], dim=1)
        (grad,) = torch.autograd.grad(cos, emb, grad_outputs=cos.detach())
    # one LRP forward + full backward per image for the layer relevance
    rels, feats = [], []
    for i in range(2):
        with lrp_mode(model) as net:
            xi = x[i:i + 1].clone().requires_grad_(True)
            with capture_layers(model, [LAYER]) as found, torch.enable_grad():
                out = net(xi)
            layer_out = found[LAYER]
            rel, _ = torch.autograd.grad(out, [layer_out, xi], grad_outputs=grad[i:i + 1])
            rels.append(rel[0].abs().sum(0))
            feats.append(layer_out.detach())
    matches = build_matches(feats[0], feats[1], rels[0], rels[1], x.shape[-2:], x.shape[-2:])
    k = min(n_pix, len(matches))
    # per pixel map: a new LRP forward of the whole model, then a backward from the layer
    maps = []
    for i, grid in enumerate((matches.grid_a[:k], matches.grid_b[:k])):
        per_image = []
        for col, row in grid:
            with lrp_mode(model) as net:
                xi = x[i:i + 1].clone().requires_grad_(True)
                with capture_layers(model, [LAYER]) as found, torch.enable_grad():
                    net(xi)
                pos = torch.tensor([[int(col), int(row)]])
                per_image.append(pixel_relevance(found[LAYER], xi, pos, chunk=1,
                                                 retain_graph=False)[0])
        maps.append(torch.stack(per_image) if per_image else torch.zeros(0, *x.shape[-2:]))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "similarity": float(cos.detach()[0]),
            "relevance_a": rels[0].numpy(), "relevance_b": rels[1].numpy(),
            "grid_a": matches.grid_a, "grid_b": matches.grid_b,
            "pixel_a": maps[0].numpy(), "pixel_b": maps[1].numpy()}


def run_pairx_zennit(size: int, n_pix: int) -> dict[str, object]:
    return run_pairx(size, n_pix, engine="zennit")


def run_pairx_bf16(size: int, n_pix: int) -> dict[str, object]:
    return run_pairx(size, n_pix, precision="bfloat16")


def run_pairx_dense(size: int, n_pix: int) -> dict[str, object]:
    return run_pairx(size, n_pix, pixel_method="dense")


def run_pairx(size: int, n_pix: int, engine: str = "gradient",
              pixel_method: str = "cone", precision: str = "float32") -> dict[str, object]:
    from pairx.explainers.pairx import PairX

    model = _model(size)
    a, b = _images(size)
    explainer = PairX(model, [LAYER], n_pixel_maps=n_pix, cache_size=0, pixel_chunk=PIXEL_CHUNK,
                      engine=engine, allow_untrained=True,  # random weights: timing only
                      pixel_method=pixel_method, precision=precision)
    t0 = time.perf_counter()
    r = explainer.explain_layers(a, b)[LAYER]
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "similarity": r.similarity, "relevance_a": r.relevance_a,
            "relevance_b": r.relevance_b, "grid_a": r.matches.grid_a, "grid_b": r.matches.grid_b,
            "pixel_a": r.pixel_relevance_a, "pixel_b": r.pixel_relevance_b}


VARIANTS = {"floor": run_floor, "floor_gradient": run_floor_gradient,
            "per_match": run_per_match, "pairx_zennit": run_pairx_zennit,
            "pairx_dense": run_pairx_dense, "pairx": run_pairx, "pairx_bf16": run_pairx_bf16}


def _child(args: argparse.Namespace) -> None:
    global PIXEL_CHUNK
    if args.malloc == "tuned":  # as the pairx command, the app's worker and Ray workers run
        from pairx.core.allocator import tune_allocator

        if not tune_allocator():
            sys.exit("--malloc tuned: not applied (PAIRX_MALLOC=system, or not glibc)")
    PIXEL_CHUNK = args.pixel_chunk
    torch.set_num_threads(args.threads)
    times, result = [], {}
    for _ in range(args.repeats):
        result = VARIANTS[args.variant](args.size, args.n_pix)
        times.append(float(result.pop("seconds")))  # type: ignore[arg-type]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    arrays = {k: v for k, v in result.items() if isinstance(v, np.ndarray)}
    if arrays:
        arrays["similarity"] = np.array(result.get("similarity", np.nan))
        np.savez(args.out, **arrays)  # type: ignore[arg-type]
    print(json.dumps({"variant": args.variant, "seconds": min(times), "all": times,
                      "peak_rss_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=440)
    parser.add_argument("--n-pix", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--pixel-chunk", type=int, default=PIXEL_CHUNK)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated variants to run (floor and per_match needed for "
                             "the ratios)")
    parser.add_argument("--malloc", choices=("tuned", "system"), default="tuned",
                        help="tuned: pairx.tune_allocator() first, as pairx's processes do; "
                             "system: glibc's default settings")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.variant is not None:
        _child(args)
        return
    wanted = [v for v in VARIANTS if v in args.variants.split(",")]
    rows: dict[str, dict[str, object]] = {}
    agreement: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in wanted:
            out = os.path.join(tmp, f"{variant}.npz")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", variant,
                   "--threads", str(args.threads), "--size", str(args.size),
                   "--n-pix", str(args.n_pix), "--repeats", str(args.repeats), "--out", out,
                   "--pixel-chunk", str(args.pixel_chunk), "--malloc", args.malloc]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
            rows[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  {variant}: {rows[variant]['seconds']:.2f} s", flush=True)
        base = next((v for v in ("per_match", "pairx_dense", "pairx") if v in rows), None)
        if base is not None:
            ref = np.load(os.path.join(tmp, f"{base}.npz"))
            for variant in ("pairx_zennit", "pairx_dense", "pairx", "pairx_bf16"):
                if variant not in rows or variant == base:
                    continue
                new = np.load(os.path.join(tmp, f"{variant}.npz"))
                same = all(np.array_equal(ref[k], new[k]) for k in ("grid_a", "grid_b"))
                agreement[variant] = {"identical matches": str(same)}
                if "similarity" in ref and "similarity" in new:
                    diff = abs(float(ref["similarity"]) - float(new["similarity"]))
                    agreement[variant]["similarity"] = f"abs. diff {diff:.1e}"
                for k in ("relevance_a", "relevance_b", "pixel_a", "pixel_b"):
                    a, b = ref[k].astype(np.float64), new[k].astype(np.float64)
                    rel_err = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
                    corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
                    agreement[variant][k] = f"max rel. diff {rel_err:.1e}, Pearson {corr:.6f}"
    print(f"\nPAIR-X on ReIDNet('efficientnetv2_rw_m') {args.size}x{args.size}, layer {LAYER}, "
          f"{args.n_pix} pixel maps, {args.threads} threads (best of {args.repeats})")
    floor = float(rows["floor"]["seconds"]) if "floor" in rows else float("nan")  # type: ignore[arg-type]
    per_match = float(rows["per_match"]["seconds"]) if "per_match" in rows else float("nan")  # type: ignore[arg-type]
    print(f"{'variant':<16}{'seconds':>9}{'x floor':>9}{'per_match / it':>16}{'peak RSS MiB':>14}")
    for name, row in rows.items():
        sec = float(row["seconds"])  # type: ignore[arg-type]
        print(f"{name:<16}{sec:>9.2f}{sec / floor:>9.2f}{per_match / sec:>16.2f}"
              f"{float(row['peak_rss_mib']):>14.0f}")  # type: ignore[arg-type]
    for variant, items in agreement.items():
        print(f"{variant} vs {base}:")
        for k, text in items.items():
            print(f"  {k}: {text}")


if __name__ == "__main__":
    main()
