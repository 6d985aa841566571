"""PAW-ViT against its plain-ViT baseline on held-out synthetic individuals.

Measures, on the test split of a ``pairx synth`` dataset:

* part masks (PAW-ViT's ATM decoder, argmax over the tokens, at input resolution, against the
  true part masks): foreground IoU, body IoU, mIoU over {background, head, body, front legs,
  hind legs} (the tail is left out, as in the issue), summed over the split;
* the same mask figures for the best a token grid can do: each token holding its patch's share
  of every part (the true masks pooled to the grid), upsampled and scored as the model's
  masks are (``token_grid_ceiling``: the masks' resolution limit, whatever the training);
* orientation: per-token accuracy on the visible parts;
* retrieval: rank-1 and mAP of both models (cosine);
* background reliance: the cosine between an image's embedding and that of the same animal
  pasted on another test image's background (pixels where the true part mask is 0), for both;
  also centred on the test images' mean embedding, and the cosine to the other image itself.

    python benchmarks/bench_paw.py --data DATA --paw RUN_PAW [--vit RUN_VIT] [--json OUT]
    python benchmarks/bench_paw.py --data DATA --ceiling 224:14 --ceiling 160:20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pairx.data.datasets import Sample, load_dataset
from pairx.models.loaders import load_model
from pairx.models.paw_vit import PARTS, PAWViT
from pairx.training.paw import _part_labels
from pairx.training.retrieval import evaluate_retrieval

MIOU_LABELS = (0, 1, 2, 4, 5)  # background, head, body, front legs, hind legs


def _full_model(run: Path) -> tuple[PAWViT, dict[str, Any]]:
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = ckpt["train_config"]
    identities = int(ckpt["model"]["classifier.weight"].shape[0])
    net = PAWViT(identities, img_size=cfg["size"], patch_size=cfg["patch"],
                 embed_dim=cfg["embed_dim"], depth=cfg["depth"], heads=cfg["heads"],
                 stem=cfg.get("stem"))
    net.load_state_dict(ckpt["model"])
    return net.eval(), cfg


def _true_labels(root: Path, sample: Sample, size: int) -> np.ndarray:
    return _part_labels(root, [sample], size, progress=False)[0].numpy()


@torch.no_grad()
def masks_and_orientation(run: Path, data: Path) -> dict[str, float]:
    net, cfg = _full_model(run)
    model = load_model(str(run / "model.safetensors"))
    test = load_dataset(data).subset(split="test")
    score = _MaskScore()
    correct = total = 0
    for s in test:
        x = model.to_input(s.path)
        out = net.forward_train(x)
        k = out.masks.shape[1] - 1
        pred = _labels_at(out.masks[0], (int(x.shape[-2]), int(x.shape[-1])))
        true = _true_labels(data, s, cfg["size"])
        score.add(pred, true)
        visible = [i for i in range(k) if (true == i + 1).any()]
        right = int(s.orientation == "right")
        guess = (out.orientation[0] > 0).long().numpy()
        correct += sum(int(guess[i] == right) for i in visible)
        total += len(visible)
    return {**score.figures(), "orientation_accuracy": float(correct / max(total, 1)),
            "n_images": len(test)}


class _MaskScore:
    """Intersections and unions of predicted against true part labels, summed over images."""

    def __init__(self) -> None:
        self.inter, self.union = np.zeros(6), np.zeros(6)
        self.fg_i = self.fg_u = 0

    def add(self, pred: np.ndarray, true: np.ndarray) -> None:
        for label in range(6):
            a, b = pred == label, true == label
            self.inter[label] += np.logical_and(a, b).sum()
            self.union[label] += np.logical_or(a, b).sum()
        self.fg_i += np.logical_and(pred > 0, true > 0).sum()
        self.fg_u += np.logical_or(pred > 0, true > 0).sum()

    def figures(self) -> dict[str, float]:
        iou = self.inter / np.maximum(self.union, 1)
        return {"foreground_iou": float(self.fg_i / max(self.fg_u, 1)), "body_iou": float(iou[2]),
                "miou": float(np.mean([iou[i] for i in MIOU_LABELS])),
                "iou": dict(zip(("background", *PARTS), (round(float(v), 4) for v in iou),
                                strict=True))}


def _labels_at(masks: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(K + 1, h, w)`` masks (background last) -> part labels (0 background, 1..K parts) at
    ``size``, by bilinear upsampling and argmax, as the model's masks are scored."""
    up = F.interpolate(masks[None], size=size, mode="bilinear", align_corners=False)[0]
    pred = up.argmax(dim=0).numpy()
    k = up.shape[0] - 1
    return np.where(pred == k, 0, pred + 1)  # channel k is the background


def token_grid_ceiling(data: Path, size: int, grid: int) -> dict[str, float]:
    """Mask figures of an oracle on a ``grid x grid`` token grid at input ``size``: every token
    holds its patch's share of each part (background last), then the model's upsampling to a
    quarter of the input (the paper's ``f = 4``), the benchmark's to the input, and argmax."""
    score = _MaskScore()
    for s in load_dataset(data).subset(split="test"):
        true = _true_labels(data, s, size)
        onehot = F.one_hot(torch.from_numpy(true).long(), 6).permute(2, 0, 1).float()
        shares = F.adaptive_avg_pool2d(onehot[None], grid)[0]
        masks = torch.cat([shares[1:], shares[:1]])  # parts 1..5, then the background
        quarter = F.interpolate(masks[None], size=(size // 4, size // 4), mode="bilinear",
                                align_corners=False)[0]  # the model's own upsampling
        score.add(_labels_at(quarter, (size, size)), true)
    return {**score.figures(), "size": size, "grid": grid}


@torch.no_grad()
def background_reliance(run: Path, data: Path, seed: int = 0) -> dict[str, float]:
    """Cosine between an image and the same animal pasted on another image's background:
    raw, and centred (the test images' mean embedding subtracted, so that a component shared
    by all images, which makes any two of them similar, does not count); ``other_cosine`` is
    the mean raw cosine between different individuals, the raw figure's floor."""
    model = load_model(str(run / "model.safetensors"))
    test = list(load_dataset(data).subset(split="test"))
    rng = np.random.default_rng(seed)
    size = model.preprocessing.size[0]
    originals, pasted_all, others = [], [], []
    for s in test:
        other = test[int(rng.integers(len(test)))]
        if other.identity == s.identity:
            continue
        rgb = model.preprocessing.resize(s.path)
        bg = model.preprocessing.resize(other.path)
        animal = _true_labels(data, s, size) > 0
        pasted = np.where(animal[..., None], rgb, bg).astype(np.uint8)
        e = model.embed(torch.cat([model.to_input(rgb), model.to_input(pasted),
                                   model.to_input(bg)]))
        originals.append(e[0])
        pasted_all.append(e[1])
        others.append(e[2])
    a, b, o = torch.stack(originals), torch.stack(pasted_all), torch.stack(others)
    mean = a.mean(dim=0, keepdim=True)
    return {"background_cosine": float(F.cosine_similarity(a, b).mean()),
            "background_cosine_centred": float(F.cosine_similarity(a - mean, b - mean).mean()),
            "other_cosine": float(F.cosine_similarity(a, o).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--paw", type=Path, help="a pairx train --arch paw-vit run folder")
    parser.add_argument("--ceiling", action="append", default=[], metavar="SIZE:GRID",
                        help="also the token-grid ceiling of the mask figures at input SIZE on "
                             "a GRID x GRID token grid (repeatable; e.g. 224:14)")
    parser.add_argument("--vit", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.paw is None and not args.ceiling:
        parser.error("give --paw RUN, --ceiling SIZE:GRID, or both")
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    report: dict[str, Any] = {}
    for spec in args.ceiling:
        size, grid = (int(v) for v in spec.split(":"))
        report.setdefault("token_grid_ceiling", []).append(
            token_grid_ceiling(args.data, size, grid))
    if args.paw is not None:
        net, cfg = _full_model(args.paw)
        report["paw-vit"] = masks_and_orientation(args.paw, args.data)
        report.setdefault("token_grid_ceiling", []).append(
            token_grid_ceiling(args.data, int(cfg["size"]), net.grid[0]))
    dataset = load_dataset(args.data)
    for name, run in (("paw-vit", args.paw), ("vit", args.vit)):
        if run is None:
            continue
        model = load_model(str(run / "model.safetensors"))
        scores = evaluate_retrieval(model, dataset, progress=False)
        report.setdefault(name, {}).update(
            retrieval={k: dict(v) for k, v in scores.items()},
            **background_reliance(run, args.data))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
