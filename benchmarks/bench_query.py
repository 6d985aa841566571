"""One query against its ranked candidates, the expert's review workflow: shared graphs vs per pair.

An expert checks a query against its top ``k`` candidates. ``PairX.explain_layers_pairs`` with
the gradient engine builds each image's LRP graph once and reuses the query's graph for every
candidate (``k + 1`` LRP forward passes); explaining each pair on its own (``PairX.explain``)
builds both graphs per pair (``2k``); within the call the query's pixel maps are computed once
per matched position and shared by every candidate that matches there. Both give the same
numbers (checked here). The zennit
engine (one forward pass of both images per pair, rules recomputed in every backward pass) is
timed beside them: with ``--n-pix 0`` (the evaluation protocol's setting) it is the
alternative.

Models: ``default`` (the shipped model, 224 px, layer ``backbone.layer3``) or ``miewid-sized``
(``efficientnetv2_rw_m`` at 440 px as in ``bench_pairx.py``, layer ``backbone.blocks.3``).

Run: ``python benchmarks/bench_query.py [--model default] [--candidates 10] [--n-pix 10]
[--threads 2] [--variants alone,shared,zennit] [--malloc tuned|system]`` (``tuned``, the
default: :func:`pairx.tune_allocator` first, as the review app's worker does).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _model_and_layer(name: str) -> tuple[object, str]:
    if name == "default":
        from pairx.models.default import load_default

        return load_default(), "backbone.layer3"
    from bench_pairx import LAYER, _model

    return _model(440), LAYER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("default", "miewid-sized"), default="default")
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--n-pix", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default=None, help="a pairx synth folder (default: a new one)")
    parser.add_argument("--variants", default="alone,shared,zennit",
                        help="what to time (alone and shared are compared when both run)")
    parser.add_argument("--malloc", choices=("tuned", "system"), default="tuned")
    args = parser.parse_args()
    wanted = set(args.variants.split(","))
    if unknown := wanted - {"alone", "shared", "zennit"}:
        sys.exit(f"unknown variants {sorted(unknown)}: choose from alone, shared, zennit")
    if args.malloc == "tuned":
        from pairx.core.allocator import tune_allocator

        tune_allocator()
    torch.set_num_threads(args.threads)
    from pairx.data.synthetic import generate
    from pairx.explainers.pairx import PairX

    model, layer = _model_and_layer(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or generate(Path(tmp) / "d", seed=5, individuals=args.candidates + 1,
                                     sightings=1, species="zebra", progress=False).root
        paths = sorted(str(p) for p in Path(data, "images").rglob("*.jpg"))[: args.candidates + 1]
        query, candidates = paths[0], paths[1:]
        pairs = [(query, c) for c in candidates]

        t_alone = t_shared = t_zennit = float("nan")
        alone: list[object] = []
        shared: list[object] = []
        if "alone" in wanted:
            t0 = time.perf_counter()
            alone = [PairX(model, [layer], n_pixel_maps=args.n_pix, cache_size=0,
                           engine="gradient", allow_untrained=True)
                     .explain_layers(a, b)[layer] for a, b in pairs]
            t_alone = time.perf_counter() - t0
        if "shared" in wanted:
            t0 = time.perf_counter()
            shared = [r[layer] for r in PairX(model, [layer], n_pixel_maps=args.n_pix,
                                              engine="gradient", allow_untrained=True)
                      .explain_layers_pairs(pairs, progress=False)]
            t_shared = time.perf_counter() - t0
        if "zennit" in wanted:
            t0 = time.perf_counter()
            PairX(model, [layer], n_pixel_maps=args.n_pix, engine="zennit",
                  allow_untrained=True).explain_layers_pairs(pairs, progress=False)
            t_zennit = time.perf_counter() - t0

    same, worst = True, 0.0
    for x, y in zip(alone, shared, strict=False):
        same &= np.array_equal(x.matches.grid_a, y.matches.grid_a)  # type: ignore[attr-defined]
        same &= np.array_equal(x.matches.grid_b, y.matches.grid_b)  # type: ignore[attr-defined]
        for key in ("relevance_a", "relevance_b", "pixel_relevance_a", "pixel_relevance_b"):
            want, got = getattr(x, key), getattr(y, key)
            if want.size == 0:
                continue
            worst = max(worst, float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)))
    k = len(pairs)
    print(f"{args.model}: 1 query x {k} candidates, layer {layer}, {args.n_pix} pixel maps per "
          f"image, {args.threads} threads")
    if "alone" in wanted:
        print(f"  per pair (PairX.explain each, {2 * k} LRP forwards): {t_alone:8.2f} s")
    if "shared" in wanted:
        print(f"  shared graphs (explain_layers_pairs, {k + 1} LRP forwards):   "
              f"{t_shared:8.2f} s   {t_alone / t_shared:.2f}x faster")
    if "zennit" in wanted:
        print(f"  zennit engine (explain_layers_pairs, {k} batches of 2):     {t_zennit:8.2f} s   "
              f"{t_alone / t_zennit:.2f}x")
    if "shared" in wanted:
        print(f"  per candidate, shared graphs: {t_shared / k:.2f} s (malloc {args.malloc})")
    if alone and shared:
        print(f"  identical matches: {same}; max relative difference of maps {worst:.1e}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"  peak RSS of this process (all variants run): {peak:.0f} MiB")


if __name__ == "__main__":
    main()
