"""Batch jobs: ``pairx evaluate`` on this process against Ray actors, and what Ray costs.

Runs the real protocol (:func:`pairx.evaluation.protocol.evaluate`) on one synthetic dataset with
each backend configuration, in this order, into its own output folder:

* ``local-1t`` / ``local-2t``: this process, 1 or 2 torch threads (today's behaviour);
* ``ray-1w`` / ``ray-2w``: a private local Ray cluster, 1 or 2 actors of 1 CPU and 1 thread.

For each it reports the wall time of ``evaluate`` (split into the Ray start with actor model
loading, and the rest), pairs per second, the workers' compute seconds from the executors'
:class:`~pairx.batch.executors.ChunkStat` records, and the per-chunk overhead: the median over
chunks of the time from submission to the result at the driver minus the compute time (a chunk
is submitted only when an actor is free, so no queueing is in it); an actor's first chunk also
fetches the task and builds its engine and is reported apart. Ray runs are checked
byte-identical to ``local-1t`` (same thread count per worker). Last, a linear estimate of
``--estimate-pairs`` pairs on ``--estimate-workers`` actors from the measured per-pair compute,
per-chunk overhead and startup; it is an estimate, not a measurement, and leaves out the
driver's embedding pass.

Usage::

    python benchmarks/bench_batch.py -o /tmp/bench_batch [--data DIR] [--pairs 100] \
        [--layers backbone.layer3] [--chunk-size 8] [--configs local-1t,local-2t,ray-1w,ray-2w]

Without ``--data`` a synthetic dataset (2 species x 12 individuals x 6 sightings, 224 px,
half held out) is generated into ``OUT/data`` (once).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _dataset(args: argparse.Namespace) -> Path:
    if args.data is not None:
        return Path(args.data)
    from pairx.data.synthetic import generate

    root = args.out / "data"
    if not (root / "metadata.csv").exists():
        generate(root, seed=11, individuals=12, sightings=6, size=224,
                 species=["giraffe", "zebra"], test_fraction=0.5, progress=True)
    return root


def _executor(name: str, model: Any) -> Any:
    from pairx.batch.executors import LocalExecutor, RayExecutor

    kind, n = name.split("-")
    count = int(n[:-1])
    if kind == "local":
        return LocalExecutor(model, threads=count)
    return RayExecutor(None, workers=count, worker_cpus=1, threads=1)


def _run(name: str, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    from pairx.batch.executors import RayExecutor
    from pairx.batch.spec import ModelSpec
    from pairx.data.datasets import load_dataset
    from pairx.evaluation.protocol import EvaluationConfig, evaluate
    from pairx.models.loaders import load_model

    dataset = load_dataset(data)
    model = load_model(args.model)
    model.net.eval()
    spec = ModelSpec.of(model, args.model)
    config = EvaluationConfig(dataset=str(dataset.root), model=args.model,
                              layers=tuple(args.layers.split(",")), n_pairs=args.pairs,
                              homography=args.homography, seed=0,
                              n_selection_pairs=args.pairs)
    out = args.out / name
    executor = _executor(name, model)
    start = time.perf_counter()
    startup = 0.0
    if isinstance(executor, RayExecutor):
        executor._ensure_actors(spec)  # Ray start + one model load per actor, timed apart
        startup = time.perf_counter() - start
    with executor:
        evaluate(dataset, model, out, config, overwrite=True, progress=False,
                 chunk_size=args.chunk_size, executor=executor, model_spec=spec)
    wall = time.perf_counter() - start
    stats = executor.stats
    pairs = sum(s.items for s in stats)
    compute = sum(s.compute_s for s in stats)
    workers = len({(s.node, s.worker) for s in stats})
    # a chunk is submitted when an actor is free, so wall - compute is the round trip (task
    # and result transfer, scheduling, the driver's reply latency); a worker's first chunk
    # also fetches the task and builds its engine, reported apart
    by_index = sorted(stats, key=lambda s: s.index)
    gaps = [s.wall_s - s.compute_s for s in by_index]
    firsts, rest = gaps[:workers], gaps[workers:] or [0.0]
    return {
        "config": name,
        "pairs": pairs,
        "chunks": len(stats),
        "wall_s": round(wall, 2),
        "startup_s": round(startup, 2),
        "pairs_per_s": round(pairs / max(wall - startup, 1e-9), 2),
        "compute_s": round(compute, 2),
        "compute_per_pair_s": round(compute / max(pairs, 1), 4),
        "chunk_overhead_s": round(float(np.median(rest)), 4),
        "first_chunk_overhead_s": round(float(np.mean(firsts)), 4),
        "processes": workers,
        "files": {f: (out / f).read_bytes() for f in ("pairs.csv", "selection_pairs.csv")},
    }


def main() -> None:
    """Run every configuration and print one JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--model", default="default")
    ap.add_argument("--layers", default="backbone.layer3")
    ap.add_argument("--homography", default="truth")
    ap.add_argument("--pairs", type=int, default=100, help="pairs per group (species)")
    ap.add_argument("--chunk-size", type=int, default=8)
    ap.add_argument("--configs", default="local-1t,local-2t,ray-1w,ray-2w")
    ap.add_argument("--estimate-pairs", type=int, default=1_000_000)
    ap.add_argument("--estimate-workers", type=int, default=100)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = _dataset(args)
    torch.set_num_threads(2)
    warm = argparse.Namespace(**{**vars(args), "pairs": 10, "out": args.out / "warmup"})
    _run("local-2t", data, warm)  # imports, first-call allocations: not in any figure
    rows = []
    for name in args.configs.split(","):
        print(f"-- {name}", flush=True)
        rows.append(_run(name.strip(), data, args))
        print({k: v for k, v in rows[-1].items() if k != "files"}, flush=True)
    base = next((r for r in rows if r["config"] == "local-1t"), None)
    for r in rows:
        r["identical_to_local_1t"] = None if base is None else r["files"] == base["files"]
        r["speedup_vs_local_1t"] = (None if base is None else
                                    round(base["wall_s"] / r["wall_s"], 2))
    ray_rows = [r for r in rows if r["config"].startswith("ray")]
    # the estimate uses the last Ray row's per-pair compute (1 thread per actor) and overhead
    estimate = None
    if ray_rows:
        r = ray_rows[-1]
        chunks = args.estimate_pairs / args.chunk_size
        per_chunk = r["compute_per_pair_s"] * args.chunk_size + r["chunk_overhead_s"]
        estimate = {
            "pairs": args.estimate_pairs,
            "workers": args.estimate_workers,
            "from": r["config"],
            "hours_excluding_driver_embeddings":
                round((r["startup_s"] + chunks * per_chunk / args.estimate_workers) / 3600, 2),
            "note": "linear in chunks; assumes the driver keeps up and data on shared storage",
        }
    for r in rows:
        del r["files"]
    print(json.dumps({"threads_driver": 2, "rows": rows, "estimate": estimate}, indent=2))


if __name__ == "__main__":
    main()
