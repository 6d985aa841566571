"""Wall time of ``pairx evaluate`` and where it goes (forward, LRP, matching, homography, KDE).

Runs the real protocol (:func:`pairx.evaluation.protocol.evaluate` +
:func:`~pairx.evaluation.report.write_report`) with timing wrappers around the engine's
stages, then extrapolates linearly to
``--target`` pairs (the per-pair stages scale with the number of pairs; embedding scales with
the number of images and is reported separately).

Usage::

    python benchmarks/bench_evaluate.py DATA --model default --pairs 100 --homography truth \
        --layers backbone.layer3 -o /tmp/bench_eval [--target 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

TIMES: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - start
            COUNTS[name] += 1

    return wrapper


@contextmanager
def instrumented() -> Iterator[None]:
    """Patch the engine and metric stages with timers; always restores the originals."""
    import pairx.evaluation.pair_metrics as pair_metrics
    import pairx.evaluation.protocol as protocol
    import pairx.evaluation.report as report
    import pairx.explainers.pairx as engine
    import pairx.explainers.pairx_gradient as gradient_pairs
    import pairx.explainers.pairx_zennit as zennit_pairs
    from pairx.metrics import homography

    patches: list[tuple[Any, str, Any]] = [
        (engine.PairX, "_forward", "LRP forward passes"),
        (zennit_pairs.ZennitPairs, "explain", "LRP backward + matching (zennit engine)"),
        (gradient_pairs.GradientPairs, "explain", "LRP backward + matching (gradient engine)"),
        (engine, "build_matches", "matching (part of the line above)"),
        (homography.KeypointHomography, "estimate", "homography (sift / lightglue)"),
        (homography.GroundTruthHomography, "estimate", "homography (truth)"),
        (pair_metrics, "inverted_residual_mean", "res"),
        (pair_metrics, "match_coverage", "mc"),
        (pair_metrics, "pair_faithfulness", "faithfulness (truth only)"),
        (protocol, "embed_group", "embeddings (batched, per image)"),
        (report, "binned_bhattacharyya", "KDE / binned Bhattacharyya"),
        (report, "plot_metric", "plots"),
    ]
    forward = engine.PairX.__dict__["_forward"]
    saved = [(engine.PairX, "_forward", forward)]

    def counted_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        COUNTS["images through an LRP forward pass"] += len(args[-1])  # the image states
        return forward(self, *args, **kwargs)

    engine.PairX._forward = counted_forward  # type: ignore[method-assign]
    for owner, attr, name in patches:
        original = owner.__dict__[attr]
        saved.append((owner, attr, original))
        setattr(owner, attr, _timed(name, original))
    try:
        yield
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


def main() -> None:
    """Run the benchmark and print the breakdown as JSON lines."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--layers", default="auto")
    ap.add_argument("--pairs", type=int, default=100, help="pairs per group (species)")
    ap.add_argument("--selection-pairs", type=int, default=500)
    ap.add_argument("--homography", default="truth")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=int, default=2000, help="total pairs to extrapolate to")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engine", default="auto", choices=("auto", "gradient", "zennit"),
                    help="PairX LRP engine of the protocol")
    ap.add_argument("--malloc", choices=("tuned", "system"), default="tuned",
                    help="tuned: pairx.tune_allocator() first, as `pairx evaluate` does")
    ap.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args()
    if args.malloc == "tuned":
        try:
            from pairx.core.allocator import tune_allocator
        except ImportError:  # an older pairx (side-by-side runs against a past commit)
            pass
        else:
            tune_allocator()
    torch.set_num_threads(args.threads)

    from pairx.data.datasets import load_dataset
    from pairx.evaluation.protocol import EvaluationConfig, evaluate, read_pairs
    from pairx.evaluation.report import write_report
    from pairx.models.loaders import load_model

    dataset = load_dataset(args.data)
    model = load_model(args.model)
    model.net.eval()
    config = EvaluationConfig(
        dataset=str(dataset.root),
        model=args.model,
        layers=tuple(args.layers.split(",")),
        n_pairs=args.pairs,
        homography=args.homography,
        seed=args.seed,
        n_selection_pairs=args.selection_pairs,
    )
    from pairx.explainers.pairx import PairX

    def factory(m: Any, layers: Any, cache_size: int) -> PairX:
        return PairX(m, list(layers), n_pixel_maps=0, cache_size=cache_size, engine=args.engine)

    start = time.perf_counter()
    with instrumented():
        result = evaluate(dataset, model, args.out, config, overwrite=True, progress=True,
                          engine_factory=factory)
        t_eval = time.perf_counter() - start
        write_report(args.out)
    total = time.perf_counter() - start
    rows = read_pairs(args.out / "pairs.csv")
    n_pairs = len({(r["dataset"], r["query"], r["gallery"]) for r in rows})
    sel = read_pairs(args.out / "selection_pairs.csv")
    n_explained = n_pairs + len({(r["dataset"], r["query"], r["gallery"]) for r in sel})
    not_per_pair = ("embeddings", "KDE", "plots", "matching")  # matching: inside LRP stage
    per_pair_stages = {k: v for k, v in TIMES.items() if not k.startswith(not_per_pair)}
    fixed = total - sum(per_pair_stages.values())
    scale = args.target / max(n_explained, 1)
    summary = {
        "threads": args.threads,
        "pairs": n_pairs,
        "pairs_explained_incl_layer_selection": n_explained,
        "layers": result.layers,
        "selection_rho_res": result.selection,
        "wall_s": round(total, 1),
        "evaluate_s": round(t_eval, 1),
        "stages_s": {k: round(v, 2) for k, v in sorted(TIMES.items(), key=lambda kv: -kv[1])},
        "calls": dict(COUNTS),
        "engine": args.engine,
        "per_pair_s": round(sum(per_pair_stages.values()) / max(n_explained, 1), 3),
        f"extrapolated_{args.target}_pairs_s": round(
            fixed + sum(per_pair_stages.values()) * scale, 0
        ),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
