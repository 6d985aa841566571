"""Importing a MiewID-sized ONNX file: load time and peak memory per route, against the native
state-dict load measured in the same run; optionally one PAIR-X explanation each.

The model is ``bench_pairx.py``'s MiewID-sized one (``ReIDNet("efficientnetv2_rw_m")``, random
init with damped residual branches, 440 x 440), saved once as safetensors + JSON (a pairx model
file) and exported once with the TorchScript exporter (BatchNorm folded into the convolutions, as
deployed files are). Each measurement runs in a fresh subprocess (its own peak RSS), in the
order native, onnx native route, onnx generic route, repeated ``--repeats`` times alternating.

Run: ``python benchmarks/bench_onnx.py [--threads 2] [--repeats 2] [--explain]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

LAYER_NATIVE = "backbone.blocks.3"


def _prepare(folder: Path, size: int) -> tuple[Path, Path]:
    import torch
    from safetensors.torch import save_file

    from bench_pairx import _model
    from pairx.models.onnx import export_onnx

    model = _model(size)
    model.metadata["layers"] = [LAYER_NATIVE]  # exported as metadata, translated by the routes
    weights = folder / "miewid_sized.safetensors"
    save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, str(weights))
    weights.with_suffix(".json").write_text(json.dumps({
        "backbone": "efficientnetv2_rw_m", "size": [size, size],
        "mean": list(model.preprocessing.mean), "std": list(model.preprocessing.std),
        "layers": [LAYER_NATIVE]}))
    t0 = time.perf_counter()
    onnx_file = export_onnx(model, folder / "miewid_sized.onnx")
    print(f"exported {onnx_file.name} ({onnx_file.stat().st_size / 2**20:.0f} MiB) in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    del model, torch
    return weights, onnx_file


def _peak_rss_mib() -> int:
    """This process's peak resident memory (``VmHWM``; unlike ``ru_maxrss`` it is not inherited
    across ``exec`` from the parent that forked us)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _child(kind: str, path: str, threads: int, explain: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    import pairx
    from pairx.models.onnx import load_onnx

    t0 = time.perf_counter()
    if kind == "native":
        model = pairx.load_model(path)
    else:
        model = load_onnx(path, route=kind.split("-")[1])
    seconds = time.perf_counter() - t0
    rss = _peak_rss_mib()
    out: dict[str, object] = {"variant": kind, "load_s": round(seconds, 2),
                              "peak_rss_mib": round(rss), "max_abs_diff":
                              model.metadata.get("max_abs_diff"),
                              "verified_with": model.metadata.get("verified_with")}
    if explain:
        from bench_pairx import _images
        from pairx.explainers.pairx import PairX
        from pairx.models.layer_choice import default_layers

        layer = LAYER_NATIVE if kind != "onnx-generic" else default_layers(model)[0]
        a, b = _images(model.preprocessing.size[0])
        t1 = time.perf_counter()
        r = PairX(model, layers=[layer], n_matches=20, n_pixel_maps=10,
                  allow_untrained=True).explain(a, b)
        out.update(explain_s=round(time.perf_counter() - t1, 2), similarity=r.similarity,
                   explain_rss_mib=_peak_rss_mib(),
                   grid_a=r.matches.grid_a[:20].tolist())
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=440)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--explain", action="store_true", help="also time one PAIR-X pair")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.threads, args.explain)
        return
    with tempfile.TemporaryDirectory() as tmp:
        weights, onnx_file = _prepare(Path(tmp), args.size)
        runs: dict[str, list[dict[str, object]]] = {}
        for _ in range(args.repeats):
            for kind, path in (("native", weights), ("onnx-native", onnx_file),
                               ("onnx-generic", onnx_file)):
                cmd = [sys.executable, __file__, "--threads", str(args.threads), "--child",
                       kind, str(path)] + (["--explain"] if args.explain else [])
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
                line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
                runs.setdefault(kind, []).append(json.loads(line[len("RESULT "):]))
    base = min(float(r["load_s"]) for r in runs["native"])  # type: ignore[arg-type]
    print(f"\nMiewID-sized ({args.size} px), {args.threads} threads, best of {args.repeats}:")
    print("| variant | load s | x native load | peak RSS after load, MiB | max abs diff |"
          + (" PAIR-X s | peak RSS after PAIR-X, MiB |" if args.explain else ""))
    print("| --- | --- | --- | --- | --- |" + (" --- | --- |" if args.explain else ""))
    for kind, rs in runs.items():
        best = min(rs, key=lambda r: float(r["load_s"]))  # type: ignore[arg-type]
        diff = best["max_abs_diff"]
        check = "-" if diff is None else f"{float(diff):.2e} ({best['verified_with']})"  # type: ignore[arg-type]
        load = float(best["load_s"])  # type: ignore[arg-type]
        rss = max(int(r["peak_rss_mib"]) for r in rs)  # type: ignore[call-overload]
        row = f"| {kind} | {load} | {load / base:.2f} | {rss} | {check} |"
        if args.explain:
            row += f" {min(float(r['explain_s']) for r in rs):.1f} |"  # type: ignore[arg-type]
            row += f" {max(int(r['explain_rss_mib']) for r in rs)} |"  # type: ignore[call-overload]
        print(row)
    if args.explain:
        grids = {k: rs[0]["grid_a"] for k, rs in runs.items()}
        print("same top-20 matches on side A:", len({json.dumps(g) for g in grids.values()}) == 1)


if __name__ == "__main__":
    main()
