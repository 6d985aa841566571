"""``pairx baselines``: every explainer measured against the synthetic ground truth.

Writes ``OUT/pairs.csv`` (one row per pair and method, appended as computed: a rerun with the
same options computes only the missing rows), ``OUT/summary.csv``, ``OUT/summary.md`` and
``OUT/summary.png``. Public API only: :mod:`pairx.explainers` and :mod:`pairx.evaluation.baselines`.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from pairx.cli.common import (
    MAX_COUNT,
    MAX_SEED,
    AllowUntrainedOpt,
    DeviceOpt,
    InputSizeOpt,
    MaxPixelsOpt,
    MeanOpt,
    ModelOpt,
    StdOpt,
    WeightsOpt,
    check_output_folder,
    load_cli_model,
    preprocessing_options,
)
from pairx.core.errors import InputError

__all__ = ["baselines_command", "register", "write_report"]

FAST_METHODS = ("pairx,gradcam,hirescam,gradcampp,xgradcam,eigencam,eigengradcam,layercam,"
                "fullgrad,gradcamelementwise,kpca,lrp,zhu,sift")

_COLUMNS = [  # (summary key, markdown header, format)
    ("pairs", "pairs", "{:.0f}"),
    ("mass_animal", "mass on animal", "{:.3f}"),
    ("mass_animal_over_area", "mass/area (animal)", "{:.2f}"),
    ("mass_covisible", "mass co-visible", "{:.3f}"),
    ("pointing_covisible", "pointing (co-vis.)", "{:.3f}"),
    ("rank_covisible", "rank acc. (co-vis.)", "{:.3f}"),
    ("pair_specificity", "pair-spec. mean", "{:.3f}"),
    ("pair_specificity_gt1_in_band", "pair-spec. > 1 (band)", "{:.2f}"),
    ("deletion", "deletion AUC", "{:.3f}"),
    ("insertion", "insertion AUC", "{:.3f}"),
    ("pck", "PCK@16 top-20", "{:.3f}"),
    ("defined", "defined share", "{:.3f}"),
    ("why_background", "undef: background", "{:.3f}"),
    ("why_occluder", "undef: occluder", "{:.3f}"),
    ("why_hidden", "undef: hidden in B", "{:.3f}"),
    ("res", "inv. residual mean", "{:.3f}"),
    ("pck_random", "PCK random", "{:.3f}"),
    ("seconds", "s / pair", "{:.2f}"),
]


def _fmt(value: Any, spec: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if math.isnan(v) else spec.format(v)


def write_report(out: Path, rows: list[dict[str, Any]], config: dict[str, Any]) -> list[Path]:
    """``summary.csv``, ``summary.md`` and ``summary.png`` of the rows; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pairx.core.files import atomic_write_text
    from pairx.evaluation.baselines import summarise

    summary = summarise(rows)
    keys = ["method", "kind", *[k for k, _, _ in _COLUMNS], "pairs_in_band"]
    lines = [",".join(keys)] + [",".join(_fmt(s[k], "{:.6g}") if k not in ("method", "kind")
                                         else s[k] for k in keys) for s in summary]
    atomic_write_text(out / "summary.csv", "\n".join(lines) + "\n")
    band = next((s["pairs_in_band"] for s in summary if s["kind"] == "positive"), 0)
    md = [f"# pairx baselines on {config['data']}", "",
          f"Model `{config['model']}`, {config['pairs']} same-individual same-flank pairs "
          f"and {config.get('negatives', 0)} hard negatives "
          f"(seed {config['seed']}); {band} of the same-individual pairs have a co-visible "
          "share in 0.2-0.8. "
          "Masses, pointing and pair-specificity on the positive part of each map; "
          "deletion/insertion on the raw cosine similarity; `random` is a uniform-noise map.",
          "", "| method | pairs | " + " | ".join(h for _, h, _ in _COLUMNS[1:]) + " |",
          "|---" * (len(_COLUMNS) + 1) + "|"]
    for s in summary:
        name = s["method"] if s["kind"] == "positive" else f"{s['method']} (hard negatives)"
        md.append(f"| {name} | " + " | ".join(_fmt(s[k], f) for k, _, f in _COLUMNS) + " |")
    atomic_write_text(out / "summary.md", "\n".join(md) + "\n")
    panels = [("mass_animal", "positive mass on the animal"),
              ("pointing_covisible", "pointing game, co-visible region"),
              ("deletion", "deletion AUC (lower is better)"),
              ("pair_specificity", "pair-specificity (1 = ignores partner)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.28 * len(summary)
                                                      + 1.6))
    summary = [s for s in summary if s["kind"] == "positive"] or summary
    names = [s["method"] for s in summary]
    for ax, (key, title) in zip(axes, panels, strict=True):
        vals = [s[key] for s in summary]
        colours = ["#c0392b" if n == "pairx" else "#7f8c8d" if n == "random" else "#2c7fb8"
                   for n in names]
        shown = [0 if math.isnan(v) else v for v in vals]
        low = 0.0
        if key == "pair_specificity":  # around 1: the differences are small
            finite = [v for v in vals if not math.isnan(v)] or [1.0]
            low = min(0.95, min(finite) - 0.01)
            ax.axvline(1.0, color="k", lw=0.8)
        ax.barh(names, [v - low for v in shown], left=low, color=colours)
        for y, v in enumerate(vals):
            if not math.isnan(v):
                ax.text(v, y, f" {v:.3g}", va="center", fontsize=7)
        ax.set_xlim(low, max([*shown, low + 1e-6]) * 1.18 if low == 0 else
                    max(shown) + 0.3 * (max(shown) - low))
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "summary.png", dpi=110)
    plt.close(fig)
    return [out / "summary.csv", out / "summary.md", out / "summary.png"]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        text = fh.read()
    if text and not text.endswith("\n"):  # a partially written last line is dropped
        text = text[: text.rfind("\n") + 1]
        path.write_text(text)
    return list(csv.DictReader(text.splitlines()))


def baselines_command(
    data: Annotated[Path, typer.Argument(help="A `pairx synth` dataset folder.", metavar="DATA")],
    model: ModelOpt = "default",
    weights: WeightsOpt = None,
    size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    methods: Annotated[str, typer.Option(help="Comma-separated methods.")] = FAST_METHODS,
    pairs: Annotated[int, typer.Option(help="Same-individual, same-flank pairs.",
                                       min=0, max=MAX_COUNT)] = 200,
    negatives: Annotated[int, typer.Option(help="Hard-negative pairs (scored separately).",
                                           min=0, max=MAX_COUNT)] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
        "baselines_out"),
    seed: Annotated[int, typer.Option(help="Seed of the pair sample and the random maps.",
                                      min=0, max=MAX_SEED)] = 0,
    steps: Annotated[int, typer.Option(help="Deletion/insertion steps.",
                                       min=2, max=100_000)] = 20,
    shap_samples: Annotated[int, typer.Option(help="Kernel SHAP samples (paper: 1000).",
                                              min=2, max=MAX_COUNT)] = 1000,
    allow_untrained: AllowUntrainedOpt = False,
    device: DeviceOpt = "cpu",
    max_pixels: MaxPixelsOpt = None,
) -> None:
    """Measure explainers against the synthetic benchmark's ground truth (CSV, markdown, plot).

    Rows are appended to OUT/pairs.csv as they are computed; a rerun with the same options
    computes only what is missing.
    """
    check_output_folder(out, "--out")
    from tqdm.auto import tqdm

    from pairx.cli.compare import method_options, parse_methods
    from pairx.data.crops import image_input
    from pairx.data.datasets import load_dataset
    from pairx.evaluation.baselines import (
        ROW_FIELDS,
        hard_negative_pairs,
        pair_rows,
        same_flank_pairs,
    )
    from pairx.explainers import create
    from pairx.metrics.homography import GroundTruthHomography
    from pairx.models.layer_choice import default_layers

    names = parse_methods(methods)
    if pairs < 0 or negatives < 0 or pairs + negatives < 1 or steps < 2:
        raise InputError("--pairs and --negatives must be >= 0 (not both 0), --steps >= 2")
    dataset = load_dataset(data)
    truth = GroundTruthHomography(dataset)
    net, _ = load_cli_model(model, weights, device, allow_untrained=allow_untrained,
                            preprocessing=preprocessing_options(size, mean, std))
    sample = same_flank_pairs(dataset, truth, pairs, seed) if pairs else []
    if negatives:
        from pairx.explainers.pairx import PairX

        embedder = PairX(net, default_layers(net), n_pixel_maps=0, allow_untrained=True)
        paths = {s.image_id: s for s in dataset}

        def embed(ids: list[str]) -> Any:
            return embedder.embed([image_input(paths[i]) for i in ids]).cpu().numpy()

        sample += hard_negative_pairs(dataset, truth, embed, negatives, seed)
    out.mkdir(parents=True, exist_ok=True)
    config = {"data": str(data), "model": net.name, "pairs": pairs, "negatives": negatives,
              "seed": seed,
              "steps": steps, "shap_samples": shap_samples}
    cfg_path = out / "config.json"
    if cfg_path.is_file() and json.loads(cfg_path.read_text()) != config:
        raise InputError(f"{out} holds results of other options ({cfg_path}); choose another "
                         "--out or delete it")
    cfg_path.write_text(json.dumps(config, indent=1) + "\n")
    csv_path = out / "pairs.csv"
    rows = _read_rows(csv_path)
    done = {(int(r["pair"]), r["method"]) for r in rows}
    new_file = not csv_path.is_file()
    with csv_path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ROW_FIELDS))
        if new_file:
            writer.writeheader()
        group = {}
        for name in names:
            group[name] = create(name, net, **method_options(
                name, allow_untrained=allow_untrained, shap_samples=shap_samples))
        todo = [p for p in sample if any((p.index, n) not in done for n in (*names, "random"))]
        bar = tqdm(total=len(todo), desc="pairs")
        last = None
        for row in pair_rows(group, truth, todo, steps=steps, seed=seed, skip=set(done)):
            writer.writerow({k: row.get(k, "") for k in ROW_FIELDS})
            fh.flush()
            rows.append({k: str(v) for k, v in row.items()})
            done.add((int(row["pair"]), str(row["method"])))
            if last is not None and row["pair"] != last:
                bar.update(1)
            last = row["pair"]
        bar.update(1 if last is not None else 0)
        bar.close()
    for path in write_report(out, [r for r in rows if r["method"] in {*names, "random"}],
                             config):
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add ``baselines`` to the ``pairx`` app."""
    app.command("baselines")(baselines_command)
