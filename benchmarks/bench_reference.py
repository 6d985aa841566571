"""pairx against the public PAIR-X reference implementation, side by side on one machine.

Where the reference (github.com/WildMeOrg/pairx) is checked out, this runs its ``pairx.core.pairx``
and pairx's :class:`~pairx.explainers.pairx.PairX` in alternating subprocesses (reference,
pairx, reference, pairx, ...) on the same model, inputs and options as ``bench_pairx.py``:
``ReIDNet("efficientnetv2_rw_m")`` (GeM + BatchNorm neck, random init, seed 0, residual branches
damped), 440 x 440, layer ``backbone.blocks.3``, 20 matches, 10 pixel maps per image, CPU with
``--threads`` threads. Each process times only the explanation (the model is built first) and
saves its outputs; the script prints the best time of each side, their ratio, and how the
outputs agree (top-20 matches, layer relevance and pixel maps).

The reference's ``core.py`` is loaded from its file under another module name (its package is
also called ``pairx``, and its ``__init__`` imports ``transformers`` for a model loader that is
not needed here). It is never a test dependency.

Run: ``python benchmarks/bench_reference.py --reference PATH/TO/pairx-reference [--rounds 2]
[--threads 2] [--precision float32|bfloat16] [--model miewid-sized|tv-resnet50] [--size N]
[--malloc-reference system|tuned] [--malloc-pairx tuned|system]``.

Allocator: the pairx side runs with :func:`pairx.tune_allocator` applied, as the ``pairx``
command, the review app's worker and Ray workers do; the reference with the system's ``malloc``
settings. ``--malloc-reference tuned`` gives the reference the same settings (to show what the
allocator alone is worth), ``--malloc-pairx system`` takes them from pairx.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pairx import LAYER, _images, _model
from pairx.models.adapter import ReIDModel

N_LINES, N_PIX = 20, 10


def _tv_resnet50(size: int) -> ReIDModel:
    """torchvision ResNet-50 with a BatchNorm1d neck (the reference canonizes it completely),
    random init with random BatchNorm statistics, seed 0."""
    import torchvision
    from torch import nn

    from pairx.models.adapter import Preprocessing

    torch.manual_seed(0)
    net = torchvision.models.resnet50()
    net.fc = nn.BatchNorm1d(2048)  # type: ignore[assignment]
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_var is not None and m.running_mean is not None
                m.running_var.uniform_(0.5, 1.5)
                m.running_mean.normal_(0, 0.1)
    return ReIDModel(net.eval(), Preprocessing(size=(size, size)), name="tv-resnet50")


MODELS = {"miewid-sized": (_model, LAYER, 440), "tv-resnet50": (_tv_resnet50, "layer2", 224)}
"""``--model`` choices: builder, layer, default size."""


def _load_reference(root: Path):  # type: ignore[no-untyped-def]
    core = root / "src" / "pairx" / "core.py"
    if not core.exists():
        sys.exit(f"no reference at {root}: expected {core}")
    spec = importlib.util.spec_from_file_location("pairx_reference_core", core)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _child_reference(args: argparse.Namespace) -> dict[str, object]:
    ref = _load_reference(Path(args.reference))
    build, layer, _ = MODELS[args.model]
    model = build(args.size)
    a, b = _images(args.size)
    x0, x1 = model.to_input(a), model.to_input(b)
    t0 = time.perf_counter()
    res = ref.pairx(torch.device("cpu"), x0, x1, model.net, [layer], N_LINES, N_PIX)[layer]
    seconds = time.perf_counter() - t0
    matches = res["matches"][0]
    rel0, rel1 = res["intermediate_relevances"]
    pix0, pix1 = res["pixel_relevances"]
    return {"seconds": seconds,
            "grid_a": np.array([m["coord0"] for m in matches], dtype=np.int64),
            "grid_b": np.array([m["coord1"] for m in matches], dtype=np.int64),
            "relevance_a": rel0[0], "relevance_b": rel1[0],
            "pixel_a": np.stack([p[0] for p in pix0]), "pixel_b": np.stack([p[0] for p in pix1])}


def _child_pairx(args: argparse.Namespace) -> dict[str, object]:
    from pairx.explainers.pairx import PairX

    build, layer, _ = MODELS[args.model]
    model = build(args.size)
    a, b = _images(args.size)
    explainer = PairX(model, [layer], n_matches=N_LINES, n_pixel_maps=N_PIX, cache_size=0,
                      allow_untrained=True, precision=args.precision)  # random weights: timing
    t0 = time.perf_counter()
    r = explainer.explain_layers(a, b)[layer]
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "grid_a": r.matches.grid_a[:N_LINES],
            "grid_b": r.matches.grid_b[:N_LINES], "relevance_a": r.relevance_a,
            "relevance_b": r.relevance_b, "pixel_a": r.pixel_relevance_a,
            "pixel_b": r.pixel_relevance_b}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="checkout of the public reference")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=sorted(MODELS), default="miewid-sized",
                        help="miewid-sized: bench_pairx.py's model; tv-resnet50: a torchvision "
                             "ResNet-50, which the reference canonizes completely")
    parser.add_argument("--size", type=int, default=None, help="default: the model's")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--malloc-reference", choices=("system", "tuned"), default="system")
    parser.add_argument("--malloc-pairx", choices=("system", "tuned"), default="tuned")
    parser.add_argument("--malloc", choices=("system", "tuned"), default="system",
                        help=argparse.SUPPRESS)  # a child's own setting
    parser.add_argument("--child", choices=("reference", "pairx"), default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.size is None:
        args.size = MODELS[args.model][2]
    if args.child is not None:
        if args.malloc == "tuned":
            from pairx.core.allocator import tune_allocator

            if not tune_allocator():
                sys.exit("--malloc tuned: not applied (PAIRX_MALLOC=system, or not glibc)")
        torch.set_num_threads(args.threads)
        result = (_child_reference if args.child == "reference" else _child_pairx)(args)
        seconds = result.pop("seconds")
        np.savez(args.out, **result)  # type: ignore[arg-type]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print(json.dumps({"seconds": seconds, "peak_rss_mib": peak}))
        return
    malloc = {"reference": args.malloc_reference, "pairx": args.malloc_pairx}
    times: dict[str, list[float]] = {"reference": [], "pairx": []}
    peaks: dict[str, list[float]] = {"reference": [], "pairx": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for side in ("reference", "pairx"):
                out = os.path.join(tmp, f"{side}.npz")
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side,
                       "--reference", args.reference, "--threads", str(args.threads),
                       "--size", str(args.size), "--precision", args.precision, "--out", out,
                       "--model", args.model, "--malloc", malloc[side]]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                times[side].append(row["seconds"])
                peaks[side].append(row["peak_rss_mib"])
                print(f"  round {r + 1} {side} (malloc {malloc[side]}): {times[side][-1]:.2f} s, "
                      f"peak RSS {peaks[side][-1]:.0f} MiB", flush=True)
        ref = np.load(os.path.join(tmp, "reference.npz"))
        new = np.load(os.path.join(tmp, "pairx.npz"))
        t_ref, t_new = min(times["reference"]), min(times["pairx"])
        print(f"\nreference {t_ref:.2f} s, pairx ({args.precision}) {t_new:.2f} s: "
              f"{t_ref / t_new:.2f}x faster ({args.size} px, {args.threads} threads, best of "
              f"{args.rounds} alternating rounds); peak RSS reference {max(peaks['reference']):.0f}"
              f" MiB, pairx {max(peaks['pairx']):.0f} MiB (highest of the rounds)")
        same = sum(int(np.array_equal(np.r_[ref["grid_a"][i], ref["grid_b"][i]],
                                      np.r_[new["grid_a"][i], new["grid_b"][i]]))
                   for i in range(min(len(ref["grid_a"]), len(new["grid_a"]))))
        print(f"top-{N_LINES} matches at the same rank: {same}/{min(N_LINES, len(ref['grid_a']))}")
        for k in ("relevance_a", "relevance_b"):
            print(f"{k}: Pearson {_pearson(ref[k], new[k]):.6f}")
        for k in ("pixel_a", "pixel_b"):
            n = min(len(ref[k]), len(new[k]))
            worst = min(_pearson(ref[k][i], new[k][i]) for i in range(n)) if n else float("nan")
            print(f"{k}: {n} maps, lowest Pearson {worst:.6f}")


if __name__ == "__main__":
    main()
