"""bfloat16 against float32 PAIR-X, per model family: does ``precision="bfloat16"`` hold?

For each case the same pairs are explained twice with the gradient engine, ``precision=
"float32"`` (the exact default) and ``precision="bfloat16"``, and the issue's agreement bars are
checked per pair:

* **matches**: of the float32 top-20 matches, how many do not sit at the same rank in
  bfloat16 (``top-20 moved``, worst pair; bar: at most 1, i.e. at least 19 of 20 the same);
* **maps**: Pearson correlation of the layer relevance maps of both images and of the pixel maps
  of every match both runs share (bar: at least 0.99);
* **similarity**: absolute difference (bar: at most 1e-3).

Cases: the two goldens of the public reference (``../shared/golden``: ResNet-18 torchvision at
``layer2`` and EfficientNet-B0 at ``blocks.3``, trained weights, the reference's own inputs),
the shipped default model on synthetic benchmark pairs (same individual, fresh seed), and, for
families without trained weights here, random-init models on smooth random images (marked
``random``: their numbers say little about trained models).

Run: ``python benchmarks/bench_precision.py [--pairs 8] [--threads 2] [--shared ../shared]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float(np.array_equal(a, b))
    return float(np.corrcoef(a, b)[0, 1])


def _compare(e32, e16, top: int = 20) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Agreement of one pair's explanations."""
    m32 = np.hstack([e32.matches.grid_a, e32.matches.grid_b])[:top]
    m16 = np.hstack([e16.matches.grid_a, e16.matches.grid_b])[:top]
    n = min(len(m32), len(m16))
    same_rank = int(sum(np.array_equal(m32[i], m16[i]) for i in range(n)))
    pearsons = [_pearson(e32.relevance_a, e16.relevance_a),
                _pearson(e32.relevance_b, e16.relevance_b)]
    k = min(len(e32.pixel_relevance_a), len(e16.pixel_relevance_a))
    for i in range(k):
        if np.array_equal(m32[i], m16[i]):
            pearsons += [_pearson(e32.pixel_relevance_a[i], e16.pixel_relevance_a[i]),
                         _pearson(e32.pixel_relevance_b[i], e16.pixel_relevance_b[i])]
    return {"same_rank": same_rank, "of": min(top, len(m32)), "min_pearson": min(pearsons),
            "sim_diff": abs(e32.similarity - e16.similarity)}


def _explain_both(model, layer: str, pairs: list, n_pix: int = 10) -> list[dict[str, float]]:  # type: ignore[no-untyped-def]
    from pairx.explainers.pairx import PairX

    out = []
    kw = {"n_pixel_maps": n_pix, "allow_untrained": True, "cache_size": 0}
    e32 = PairX(model, [layer], **kw).explain_pairs(pairs, progress=False)
    e16 = PairX(model, [layer], precision="bfloat16", **kw).explain_pairs(pairs, progress=False)
    for a, b in zip(e32, e16, strict=True):
        out.append(_compare(a, b))
    return out


def _golden_cases(shared: Path) -> list[tuple[str, str, object, str, list]]:  # type: ignore[type-arg]
    import torchvision
    from safetensors import safe_open
    from safetensors.torch import load_file
    from torch import nn

    from pairx.models.adapter import Preprocessing, ReIDModel
    from pairx.models.architectures import ReIDNet

    golden = shared / "golden"
    cases = []
    for kind, fname in (("resnet18_torchvision", "resnet18_torchvision-layer2-chelsea"),
                        ("efficientnet_b0", "efficientnet_b0-blocks.3-chelsea")):
        path = golden / f"{fname}.expected.safetensors"
        if not path.exists():
            print(f"skipping golden {kind}: {path} not found")
            continue
        net: nn.Module
        if kind == "resnet18_torchvision":
            net = torchvision.models.resnet18()
            net.fc = nn.BatchNorm1d(512)
        else:
            net = ReIDNet("efficientnet_b0")
        net.load_state_dict(load_file(golden / f"{kind}.model.safetensors"))
        expected = load_file(path)
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        size = int(meta["size"])
        model = ReIDModel(net.eval(), Preprocessing(size=(size, size)), name=kind)
        pair = (expected["input_0"], expected["input_1"])
        cases.append((f"golden {kind}", "trained", model, meta["layer"], [pair]))
    return cases


def _default_case(n_pairs: int, tmp: str) -> tuple[str, str, object, str, list]:  # type: ignore[type-arg]
    from pairx.data.synthetic import generate
    from pairx.models.default import DEFAULT_LAYERS, load_default

    data = generate(os.path.join(tmp, "synthetic"), seed=90210, individuals=4,
                    sightings=max(2, n_pairs // 4 + 1), progress=False)
    by_id: dict[str, list[str]] = {}
    for s in data.samples:
        by_id.setdefault(s.identity, []).append(str(s.path))
    pairs = []
    for paths in by_id.values():
        pairs += [(paths[i], paths[i + 1]) for i in range(len(paths) - 1)]
    return ("default model, synthetic", "trained", load_default(), DEFAULT_LAYERS[0],
            pairs[:n_pairs])


def _random_cases() -> list[tuple[str, str, object, str, list]]:  # type: ignore[type-arg]
    from bench_pairx import _images, _model
    from pairx.models.adapter import Preprocessing, ReIDModel
    from pairx.models.architectures import ReIDNet

    cases = []
    a, b = _images(224)
    for arch, layer in (("resnet50d", "backbone.layer2"), ("convnext_atto", "backbone.stages.1")):
        torch.manual_seed(0)
        model = ReIDModel(ReIDNet(arch).eval(), Preprocessing(size=(224, 224)), name=arch)
        cases.append((f"{arch} (random init)", "random", model, layer, [(a, b)]))
    a, b = _images(440)
    cases.append(("efficientnetv2_rw_m 440 (random init)", "random", _model(440),
                  "backbone.blocks.3", [(a, b)]))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8, help="synthetic pairs, default model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shared", default=os.environ.get("PAIRX_SHARED", "../shared"))
    parser.add_argument("--no-random", action="store_true", help="skip the random-init cases")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cases = [*_golden_cases(Path(args.shared)), _default_case(args.pairs, tmp)]
        if not args.no_random:
            cases += _random_cases()
        print(f"{'case':<40}{'weights':>8}{'pairs':>6}{'top-20 moved':>14}"
              f"{'min Pearson':>13}{'max |d sim|':>13}{'holds':>7}")
        for name, weights, model, layer, pairs in cases:
            rows = _explain_both(model, layer, pairs)
            moved = max(r["of"] - r["same_rank"] for r in rows)  # of the top 20, worst pair
            pear = min(r["min_pearson"] for r in rows)
            sim = max(r["sim_diff"] for r in rows)
            holds = moved <= 1 and pear >= 0.99 and sim <= 1e-3
            print(f"{name:<40}{weights:>8}{len(rows):>6}{moved:>14}{pear:>13.4f}"
                  f"{sim:>13.1e}{'yes' if holds else 'NO':>7}", flush=True)


if __name__ == "__main__":
    main()
