"""Is the synthetic benchmark identifiable? Rank-1 of classical SIFT matching beside the model's.

Each test sighting of a species is compared with every other test sighting of that species
(the same query/gallery split as ``pairx retrieval``): OpenCV SIFT on the grayscale image
upscaled to ``--upscale`` pixels, Lowe ratio test, RANSAC homography; the score of a pair is its
RANSAC inlier count (the HotSpotter-style classical re-ID score). Rank-1 is the fraction of
queries whose best-scoring sighting shows the same individual. The model's rank-1 on the same
sightings (cosine similarity of embeddings) is printed beside it.

A high SIFT rank-1 where the model is weak says the identity information is in the images and
the model, not the data, is the bottleneck.

Usage::

    python benchmarks/bench_sift_retrieval.py runs/fresh_s7 --species giraffe,leopard,zebra \
        [--model default] [--upscale 448] [--threads 1]

Cost: about ``n^2 / 2`` SIFT matchings per species (n = test sightings); 144 sightings take
1.5-3 min on one core.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
from tqdm.auto import tqdm

from pairx.core.images import load_image
from pairx.data.datasets import load_dataset


def sift_scores(
    paths: list[str], *, upscale: int, n_features: int, ratio: float, ransac_px: float
) -> np.ndarray:
    """``(n, n)`` symmetric RANSAC inlier counts (diagonal ``-1``)."""
    sift = cv2.SIFT_create(nfeatures=n_features)  # type: ignore[attr-defined]
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    feats = []
    for path in paths:
        gray = cv2.cvtColor(load_image(path), cv2.COLOR_RGB2GRAY)
        gray = cv2.resize(gray, (upscale, upscale), interpolation=cv2.INTER_CUBIC)
        feats.append(sift.detectAndCompute(gray, None))
    n = len(paths)
    scores = np.zeros((n, n))
    for i in tqdm(range(n), desc="SIFT", leave=False):
        kp_i, d_i = feats[i]
        for j in range(i + 1, n):
            kp_j, d_j = feats[j]
            if d_i is None or d_j is None or len(d_i) < 2 or len(d_j) < 2:
                continue
            good = [
                p[0] for p in matcher.knnMatch(d_i, d_j, k=2)
                if len(p) == 2 and p[0].distance < ratio * p[1].distance
            ]
            if len(good) < 4:
                continue
            src = np.array([kp_i[m.queryIdx].pt for m in good], np.float32)
            dst = np.array([kp_j[m.trainIdx].pt for m in good], np.float32)
            _, inliers = cv2.findHomography(src, dst, cv2.RANSAC, ransac_px)
            scores[i, j] = scores[j, i] = 0 if inliers is None else int(inliers.sum())
    np.fill_diagonal(scores, -1)
    return scores


def rank1(scores: np.ndarray, identities: list[str]) -> float:
    """Fraction of rows whose highest-scoring column has the row's identity."""
    best = np.argmax(scores, axis=1)
    return float(np.mean([identities[b] == identities[i] for i, b in enumerate(best)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="synthetic dataset folder (pairx synth output)")
    parser.add_argument("--species", default="giraffe,leopard,zebra")
    parser.add_argument("--model", default="default", help="model for the comparison ('' skips)")
    parser.add_argument("--upscale", type=int, default=448)
    parser.add_argument("--n-features", type=int, default=1000)
    parser.add_argument("--ratio", type=float, default=0.75)
    parser.add_argument("--ransac-px", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    dataset = load_dataset(args.data)
    test = [s for s in dataset.samples if s.split == "test"]
    model_r1: dict[str, float] = {}
    if args.model:
        import torch

        import pairx
        from pairx.models.embedding import embed_samples

        torch.set_num_threads(args.threads)
        model = pairx.load_model(args.model)
        emb = embed_samples(model, test, progress=False).double()
        emb = emb / emb.norm(dim=1, keepdim=True)
        for species in args.species.split(","):
            idx = [i for i, s in enumerate(test) if s.species == species]
            sim = (emb[idx] @ emb[idx].T).numpy()
            np.fill_diagonal(sim, -np.inf)
            model_r1[species] = rank1(sim, [test[i].identity for i in idx])
    results = []
    for species in args.species.split(","):
        samples = [s for s in test if s.species == species]
        if not samples:
            raise SystemExit(f"no test sightings of species {species!r} in {args.data}")
        start = time.perf_counter()
        scores = sift_scores([str(s.path) for s in samples], upscale=args.upscale,
                             n_features=args.n_features, ratio=args.ratio,
                             ransac_px=args.ransac_px)
        row = {"species": species, "n_queries": len(samples),
               "sift_rank1": round(rank1(scores, [s.identity for s in samples]), 3),
               "model_rank1": round(model_r1[species], 3) if species in model_r1 else None,
               "sift_seconds": round(time.perf_counter() - start, 1)}
        results.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
