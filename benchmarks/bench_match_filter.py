"""PAIR-X's matches with and without the RANSAC match filter, against the synthetic truth.

About half of PAIR-X's top-20 matches on the synthetic benchmark have no true correspondence
(mostly a point of A on the background; see ``pairx baselines``). ``PairX(match_filter=
"ransac")`` keeps only the inliers of a RANSAC homography over all matches. This script
measures both on the same pairs (``pairx.evaluation.baselines.pair_rows``): PCK@16 of the top-20
matches where the truth is defined, the defined share and why the rest is undefined, the
inverted residual mean, mass on the animal and deletion AUC of the pixel maps.

Run: ``python benchmarks/bench_match_filter.py DATA [--pairs 100] [--threshold 16]`` with DATA
a ``pairx synth`` folder (or its ``pairx.data.partial`` views).
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    from pairx.data.datasets import load_dataset
    from pairx.evaluation.baselines import pair_rows, same_flank_pairs, summarise
    from pairx.explainers.pairx import PairX
    from pairx.metrics.homography import GroundTruthHomography
    from pairx.models.default import load_default

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--threshold", type=float, default=16.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    truth = GroundTruthHomography(ds)
    model = load_default()
    layer = "backbone.layer3"
    explainers = {
        "pairx": PairX(model, [layer]),
        "pairx+ransac": PairX(model, [layer], match_filter="ransac",
                              ransac_threshold=args.threshold),
    }
    pairs = same_flank_pairs(ds, truth, args.pairs, args.seed)
    rows = list(pair_rows(dict(explainers), truth, pairs, steps=10, seed=args.seed))
    keys = ("pck", "defined", "why_background", "why_occluder", "why_hidden", "res", "n_matches",
            "mass_animal", "deletion", "seconds")
    print(f"{len(pairs)} pairs of {args.data}, layer {layer}, RANSAC threshold "
          f"{args.threshold:g} px")
    print(f"  {'method':<14s}" + "".join(f"{k:>15s}" for k in keys))
    for s in summarise(rows):
        print(f"  {s['method']:<14s}" + "".join(f"{s[k]:15.3f}" for k in keys))


if __name__ == "__main__":
    main()
