"""Zhu et al.'s decomposition on the synthetic benchmark: correspondence, localisation, partial
retrieval, speed (issue 17's bars), all with the default model, measured in one run.

1. **Correspondence**: PCK@16 and PCK@32 px of the dense argmax matches (every cell of A to its
   largest point term in B) on same-individual, same-flank pairs, beside PAIR-X's top-20
   matches, SIFT's and random matches (a point with a true correspondence, a random point on
   B's animal). Zhu's argmax covers every cell of A, so PCK is over the cells whose truth is
   defined.
2. **Localisation** (Zhu's protocol, after CAM): the overall map of image A (paired with its
   partner) is scaled to its maximum, thresholded at ``t``, and the bounding box of the largest
   connected component is compared with the animal's box (the visible part mask); accuracy is
   the share with IoU >= 0.5, at the best ``t`` of 0.05-0.95. Decomposition,
   Decomposition+Bias, Grad-CAM with the cosine target and Grad-CAM "no norm" (dot target).
3. **Partial-similarity retrieval**: each query's region of interest is the box of its body
   part (the flank); rank-1 (the best gallery image shows the same individual) of the region's
   partial similarity against the whole-image cosine on the same queries; the gallery is every
   other image.
4. **Speed**: one decomposition per pair; a gallery ranked by partial similarity.

Run: ``python benchmarks/bench_zhu.py DATA [--pairs 200] [--queries 100] [--threads 2]`` with
DATA a ``pairx synth`` folder (no crops).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _localised(sal: np.ndarray, box: tuple[int, int, int, int], t: float) -> bool:
    import cv2

    m = sal / (sal.max() + 1e-30)
    mask = (m >= t).astype(np.uint8)
    n, _labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return False
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[k, :4])
    return _iou((x, y, x + w, y + h), box) >= 0.5


def main() -> None:
    from pairx.data.datasets import load_dataset
    from pairx.evaluation.baselines import match_scores, same_flank_pairs
    from pairx.explainers import create
    from pairx.explainers.zhu import argmax_matches, decompose_tensors, fold_head
    from pairx.explainers.zhu_retrieval import partial_similarity
    from pairx.metrics.faithfulness import on_animal
    from pairx.metrics.homography import GroundTruthHomography
    from pairx.models.default import load_default

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    truth = GroundTruthHomography(ds)
    model = load_default()
    layer = "backbone.layer4"
    size = model.preprocessing.size
    pairs = same_flank_pairs(ds, truth, args.pairs, 0)
    ex = {n: create(n, model) for n in ("pairx", "sift")}
    cams = {"Grad-CAM": create("gradcam", model), "Grad-CAM (no norm)": create(
        "gradcam", model, target="dot")}
    pck: dict[str, list[float]] = {}
    loc: dict[str, list[np.ndarray]] = {}
    thresholds = np.linspace(0.05, 0.95, 19)
    rng = np.random.default_rng(0)
    t_dec = []
    for p in pairs:
        sa = ex["pairx"].prepare(str(ds.by_id(p.key_a).path), key=p.key_a)
        sb = ex["pairx"].prepare(str(ds.by_id(p.key_b).path), key=p.key_b)
        start = time.perf_counter()
        dec = decompose_tensors(model, sa.x, sb.x, layer)
        t_dec.append(time.perf_counter() - start)
        zm = argmax_matches(dec, size, size)
        true_b = truth.true_points(p.key_a, p.key_b, zm.xy_a, size)
        ok = np.isfinite(true_b).all(axis=1)
        err = np.linalg.norm(true_b[ok] - zm.xy_b[ok], axis=1)
        for px in (16, 32):
            if ok.any():
                pck.setdefault(f"zhu argmax @{px}", []).append(float((err <= px).mean()))
        for name, e in ex.items():
            expl = e.explain(str(ds.by_id(p.key_a).path), str(ds.by_id(p.key_b).path),
                             key_a=p.key_a, key_b=p.key_b)
            for px in (16, 32):
                m = match_scores(truth, p, expl, n_top=20, pck_px=px, rng=rng)
                if not np.isnan(m["pck"]):
                    pck.setdefault(f"{name} top-20 @{px}", []).append(m["pck"])
                if name == "pairx":
                    pck.setdefault(f"random @{px}", []).append(m["pck_random"])
        h, w = size
        rows, cols = np.mgrid[0:h, 0:w]
        animal = on_animal(truth, p.key_a, np.stack([cols.ravel(), rows.ravel()], 1).astype(
            float), size).reshape(h, w)
        box = _box(animal)
        if box is None:
            continue
        from pairx.explainers.zhu import upsample_map

        maps = {"Decomposition": upsample_map(dec.overall_maps()[0], size),
                "Decomposition+Bias": upsample_map(dec.overall_maps(bias=True)[0], size)}
        for name, cam in cams.items():
            maps[name] = cam.explain(sa.x, sb.x).map_a
        for name, sal in maps.items():
            loc.setdefault(name, []).append(
                np.array([_localised(np.clip(sal, 0, None), box, t) for t in thresholds]))
    print(f"{len(pairs)} same-individual same-flank pairs of {args.data}, default model, "
          f"Zhu at {layer}")
    print("correspondence (PCK where the truth is defined):")
    for k, v in pck.items():
        print(f"  {k:<24s} {np.mean(v):.3f}  ({len(v)} pairs)")
    print("localisation (IoU >= 0.5 with the animal's box, best threshold):")
    for k, v in loc.items():
        acc = np.mean(np.stack(v), axis=0)
        print(f"  {k:<24s} {acc.max():.3f}  at t = {thresholds[int(acc.argmax())]:.2f}")
    # partial-similarity retrieval
    samples = list(ds)
    gallery = ex["pairx"].embed([str(s.path) for s in samples]).double().numpy()
    order = rng.permutation(len(samples))[: args.queries]
    hits_part, hits_whole, t_rank = [], [], []
    for qi in order:
        s = samples[int(qi)]
        gt = truth.ground_truth(s.image_id)
        body = _box(np.asarray(gt.part_mask) == 2)
        if body is None:
            continue
        x = ex["pairx"].prepare(str(s.path), key=s.image_id).x
        fold = fold_head(model, x, layer)
        keep = np.arange(len(samples)) != qi
        start = time.perf_counter()
        part = partial_similarity(fold, tuple(float(v) for v in body), size,  # type: ignore[arg-type]
                                  gallery[keep])
        t_rank.append((time.perf_counter() - start) / keep.sum())
        e = fold.embedding
        g = gallery[keep]
        whole = g @ e / (np.linalg.norm(g, axis=1) * np.linalg.norm(e))
        ids = [samples[j].identity for j in np.flatnonzero(keep)]
        hits_part.append(ids[int(np.argmax(part))] == s.identity)
        hits_whole.append(ids[int(np.argmax(whole))] == s.identity)
    print(f"partial-similarity retrieval ({len(hits_part)} queries, ROI = the body's box, "
          f"gallery {len(samples) - 1}):")
    print(f"  rank-1 partial {np.mean(hits_part):.3f}   whole-image {np.mean(hits_whole):.3f}")
    print(f"speed: decomposition {np.median(t_dec) * 1000:.0f} ms per pair (median); ranking "
          f"{1 / np.median(t_rank):,.0f} gallery images/s")


if __name__ == "__main__":
    main()
