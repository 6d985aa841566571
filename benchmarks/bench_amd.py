"""The AMD interpreter against issue 18's bars, on a fresh synthetic set (held-out individuals).

    python benchmarks/bench_amd.py --data DIR [--interpreter default|RUN] [--seed 0]
        [--counterfactuals 60] [--json out.json]

``DIR`` is a dataset written by ``pairx synth`` with a seed the interpreter never saw, e.g.
``pairx synth -o /tmp/amd_eval --seed 202 --individuals 30 --sightings 4``. Prints and (with
``--json``) writes:

* fidelity: ADRE ``mean |d - d_hat| / d`` and Pearson(d, d_hat) over within-species pairs of
  different individuals;
* retrieval (every image a query against all others): rank-1 and mAP with ``d``, ``d_hat`` and
  the re-weighted distance of Eq. 12 (``gamma = 1``; it reads both images' attribute labels);
* X-mAP_e / X-mAP_c over the same pairs, and the same with the images' attribute rows permuted
  (a baseline computed here);
* counterfactual pairs (one marking toggled, visible in both): how often the toggled attribute
  ranks first, and the target's mean distance change per marking;
* localisation: for present, visible markings, how often the attribute's attention maximum lies
  in the true region dilated by half a feature cell, against the area-based chance.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pairx.data.attributes import load_attributes
from pairx.data.batches import load_images, normalize
from pairx.data.datasets import load_dataset
from pairx.data.synthetic import (
    ATTRIBUTE_NAMES,
    FACE_LACKS,
    load_ground_truth,
    render_counterfactual,
)
from pairx.explainers.amd import load_interpreter, reweighted_distance
from pairx.metrics.attributes import adre, argmax_in_region, retrieval_from_distances, x_map


def _pairs(ds_species: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(len(ids), 1)
    keep = (ds_species[i] == ds_species[j]) & (ids[i] != ids[j])
    return i[keep], j[keep]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--interpreter", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--counterfactuals", type=int, default=60,
                    help="images whose markings are each toggled")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    interp = load_interpreter(args.interpreter)
    names = interp.attributes
    ds = load_dataset(args.data)
    table = load_attributes(ds).select(names)
    pre = interp.model.preprocessing
    images = load_images(ds.samples, pre.size, progress=False)
    emb, z, att = interp.decompose(normalize(images, pre.mean, pre.std))
    emb, z = emb.double(), z.double()
    ids = np.array([s.identity for s in ds])
    species = np.array([s.species for s in ds])
    out: dict[str, object] = {"data": args.data, "interpreter": args.interpreter,
                              "images": len(ds), "attributes": list(names)}

    # fidelity and ranking over within-species pairs of different individuals
    i, j = _pairs(species, ids)
    d = (emb[i] - emb[j]).norm(dim=-1).numpy()
    d_k = (z[i] - z[j]).norm(dim=-1).numpy()
    d_hat = d_k.sum(1)
    out["pairs"] = len(i)
    out["adre"] = adre(d, d_hat)
    out["pearson"] = float(np.corrcoef(d, d_hat)[0, 1])
    vals = table.values
    xe, xc, n = x_map(d_k, vals[i] ^ vals[j])
    perm = np.random.default_rng(args.seed).permutation(len(ds))
    pe, pc, _ = x_map(d_k, vals[perm][i] ^ vals[perm][j])
    out.update({"xmap_e": xe, "xmap_c": xc, "xmap_pairs": n, "xmap_e_permuted": pe,
                "xmap_c_permuted": pc})

    # retrieval with d and with d_hat
    full_d = torch.cdist(emb, emb).numpy()
    full_hat = sum(torch.cdist(z[:, k], z[:, k]) for k in range(len(names))).numpy()
    r1, m1 = retrieval_from_distances(full_d, ids)
    r2, m2 = retrieval_from_distances(full_hat, ids)
    out.update({"rank1_d": r1, "map_d": m1, "rank1_dhat": r2, "map_dhat": m2})
    # Eq. 12 re-weighting (uses both images' attribute labels, as the paper does)
    full_dk = np.stack([torch.cdist(z[:, k], z[:, k]).numpy() for k in range(len(names))], -1)
    full_ex = vals[:, None, :] ^ vals[None, :, :]
    r3, m3 = retrieval_from_distances(reweighted_distance(full_d, full_dk, full_ex, 1.0), ids)
    out.update({"rank1_reweighted": r3, "map_reweighted": m3})

    # localisation of present, visible markings
    h, w = pre.size
    up = F.interpolate(att, size=(h, w), mode="bilinear", align_corners=False).numpy()
    cell = h // att.shape[-2]
    loc: dict[str, list[tuple[bool, float]]] = {}
    for n_img, s in enumerate(ds):
        gt = load_ground_truth(ds.root, s.image_id)
        if gt.markings is None or gt.marking_visible is None:
            raise SystemExit("the dataset's ground truth has no marking masks (format 1); "
                             "regenerate it with this pairx")
        for k_m, m in enumerate(ATTRIBUTE_NAMES):
            if m in names and gt.attributes[k_m] and gt.marking_visible[k_m]:
                region = cv2_resize_mask(gt.markings[k_m], (h, w))
                loc.setdefault(m, []).append(
                    argmax_in_region(up[n_img, names.index(m)], region, cell // 2))
    hits = [x for v in loc.values() for x in v]
    out["localisation"] = {
        "hit_rate": float(np.mean([x[0] for x in hits])) if hits else float("nan"),
        "chance": float(np.mean([x[1] for x in hits])) if hits else float("nan"),
        "cases": len(hits), "dilation_px": cell // 2,
        "per_marking": {m: {"hit_rate": float(np.mean([x[0] for x in v])),
                            "chance": float(np.mean([x[1] for x in v])), "cases": len(v)}
                        for m, v in loc.items()},
    }

    # counterfactual pairs
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(len(ds), size=min(args.counterfactuals, len(ds)), replace=False)
    cf: dict[str, dict[str, list[float]]] = {}
    for n_img in chosen:
        s = ds.samples[int(n_img)]
        for m in ATTRIBUTE_NAMES:
            if m not in names or (s.species == "face" and m in FACE_LACKS):
                continue
            c = render_counterfactual(ds.root, s.image_id, m)
            if not c.visible_in_both:
                continue
            x = torch.cat([interp.model.to_input(c.original), interp.model.to_input(c.toggled)])
            e2, z2, _ = interp.decompose(x)
            dk = (z2[0] - z2[1]).norm(dim=-1)
            rank = int((dk > dk[names.index(m)]).sum()) + 1
            rec = cf.setdefault(m, {"rank": [], "distance": []})
            rec["rank"].append(rank)
            rec["distance"].append(float((e2[0] - e2[1]).norm()))
    all_ranks = [r for v in cf.values() for r in v["rank"]]
    out["counterfactual"] = {
        "top1_rate": float(np.mean([r == 1 for r in all_ranks])) if all_ranks else float("nan"),
        "pairs": len(all_ranks),
        "per_marking": {m: {"top1_rate": float(np.mean([r == 1 for r in v["rank"]])),
                            "mean_rank": float(np.mean(v["rank"])),
                            "mean_target_distance": float(np.mean(v["distance"])),
                            "pairs": len(v["rank"])} for m, v in cf.items()},
    }
    # reference: the target's distance between two sightings of one individual
    same = [(a, b) for a, b in zip(*np.triu_indices(len(ids), 1), strict=True) if ids[a] == ids[b]]
    out["target_same_individual_distance"] = float(np.mean([full_d[a, b] for a, b in same]))
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


def cv2_resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool mask resized (nearest) to ``(H, W)``."""
    import cv2

    if mask.shape == size:
        return mask
    return cv2.resize(mask.astype(np.uint8), (size[1], size[0]),
                      interpolation=cv2.INTER_NEAREST) > 0


if __name__ == "__main__":
    main()
