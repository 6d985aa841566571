"""Time per method per pair, beside PAIR-X's, measured in the same run on the same pairs.

Every registered method (or ``--methods``) explains the same ``--pairs`` synthetic pairs with
the default model (224 px); each pair is explained once untimed first (warm-up: library
imports, first-call allocations), then ``--repeat`` times. Reports the median seconds per pair
and the ratio to PAIR-X (10 pixel maps, the figure's setting; ``pairx0`` is PAIR-X without
pixel maps, the evaluation protocol's setting).

Run: ``python benchmarks/bench_methods.py [--pairs 3] [--repeat 2] [--threads 2]
[--methods pairx,kpca,...]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    from pairx.data.synthetic import generate
    from pairx.explainers import METHODS, create
    from pairx.models.default import load_default

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="pairx0," + ",".join(METHODS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_default()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "d", seed=99, individuals=2, sightings=2, size=224,
                 species=("zebra", "giraffe"), progress=False)
        images = sorted(str(p) for p in (Path(tmp) / "d" / "images").rglob("*.jpg"))
        pairs = [(images[2 * i % len(images)], images[(2 * i + 1) % len(images)])
                 for i in range(args.pairs)]
        times: dict[str, float] = {}
        for name in args.methods.split(","):
            opts: dict[str, object] = {"cache_size": 0}
            if name == "pairx0":
                opts["n_pixel_maps"] = 0
            if name == "shap":
                opts["progress"] = False
            explainer = create("pairx" if name == "pairx0" else name, model, **opts)
            runs = []
            for a, b in pairs:
                explainer.explain(a, b)  # warm-up
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    explainer.explain(a, b)
                    runs.append(time.perf_counter() - start)
            times[name] = statistics.median(runs)
    ref = times.get("pairx")
    print(f"default model, 224 px, {args.threads} threads, {args.pairs} pairs x {args.repeat}; "
          "median seconds per pair")
    for name, t in times.items():
        ratio = f"{t / ref:8.2f}x PAIR-X" if ref else ""
        print(f"  {name:<20s} {t:9.3f} s  {ratio}")


if __name__ == "__main__":
    main()
