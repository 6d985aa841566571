"""Aggregate ``pairs.csv`` into the paper's tables and figures.

* ``metrics.csv``: one row per dataset (group) and layer: ``n_pairs``, ``rho_res``,
  ``delta_res``, ``rho_mc``, ``delta_mc`` (Table 1), plus ``n_res`` (pairs with a defined
  ``res``) and, on the synthetic benchmark, ``rho_res_exact``/``delta_res_exact`` (the same
  statistics of the inverted mean of the exact true residuals).
* ``faithfulness.csv`` (synthetic benchmark): per dataset and layer, the mean ground-truth
  faithfulness of the top matches of correct pairs and of the random-match baseline.
* ``table.md``: a Table-1-style markdown table.
* ``plots/<dataset>__<layer>__<metric>.png``: Figure-5 style scatter of the metric against
  the match score, correct and incorrect pairs coloured; and ``..._bins.png``, Figure-6 style
  per-bin KDEs of the metric in the hard window.

Every table is written to a temporary file and renamed, so a crash never leaves a half
written table behind.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pairx.core.errors import DatasetError
from pairx.core.files import atomic_write_text
from pairx.evaluation.rows import read_pairs
from pairx.metrics.functional import MetricWarning, binned_bhattacharyya, spearman_rho

__all__ = ["METRIC_COLUMNS", "aggregate", "faithfulness_table", "markdown_table", "write_report"]

METRIC_COLUMNS: tuple[str, ...] = (
    "dataset",
    "layer",
    "n_pairs",
    "n_res",
    "rho_res",
    "delta_res",
    "rho_mc",
    "delta_mc",
    "rho_res_exact",
    "delta_res_exact",
)
FAITHFULNESS_COLUMNS: tuple[str, ...] = (
    "dataset",
    "layer",
    "n_pairs",
    "faithful",
    "faithful_defined",
    "random",
)


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["dataset"], r["layer"]), []).append(r)
    for v in out.values():
        v.sort(key=lambda r: (r["query"], r["gallery"]))
    return out


def _stats(sub: Sequence[dict[str, Any]], metric: str) -> tuple[float, float]:
    m = np.array([r[metric] for r in sub], dtype=np.float64)
    s = np.array([r["similarity"] for r in sub], dtype=np.float64)
    c = np.array([r["correct"] for r in sub], dtype=bool)
    if np.isnan(m).all():
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        finite = np.isfinite(m) | np.isposinf(m)
        return spearman_rho(m[finite], s[finite]), binned_bhattacharyya(m, s, c)


def extra_sources(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Names of the additional homography sources (``res_<name>`` columns) in the rows."""
    if not rows:
        return []
    return [c[4:] for c in rows[0] if c.startswith("res_") and c != "res_exact"]


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and layer Spearman rho and binned Bhattacharyya Delta of res and mc.

    Pairs with ``res = nan`` (no homography) are left out of the ``res`` statistics; ``+inf``
    inverted residual means rank highest for rho and are dropped (with the rest of the pair)
    by :func:`~pairx.metrics.functional.binned_bhattacharyya`.
    """
    out = []
    extras = extra_sources(rows)
    for (dataset, layer), sub in sorted(_groups(rows).items()):
        rho_res, delta_res = _stats(sub, "res")
        rho_mc, delta_mc = _stats(sub, "mc")
        rho_x, delta_x = _stats(sub, "res_exact")
        out.append(
            {
                "dataset": dataset,
                "layer": layer,
                "n_pairs": len(sub),
                "n_res": int(sum(not math.isnan(r["res"]) for r in sub)),
                "rho_res": rho_res,
                "delta_res": delta_res,
                "rho_mc": rho_mc,
                "delta_mc": delta_mc,
                "rho_res_exact": rho_x,
                "delta_res_exact": delta_x,
            }
        )
        for name in extras:
            rho, delta = _stats(sub, f"res_{name}")
            out[-1][f"n_res_{name}"] = int(sum(not math.isnan(r[f"res_{name}"]) for r in sub))
            out[-1][f"rho_res_{name}"] = rho
            out[-1][f"delta_res_{name}"] = delta
    return out


def faithfulness_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean faithfulness per dataset and layer over the correct pairs where it is defined.

    Pairs where no cell of A has a true correspondence in B (e.g. opposite flanks of a
    synthetic animal) are left out, for PAIR-X and the random baseline alike.
    """
    out = []
    for (dataset, layer), sub in sorted(_groups(rows).items()):
        # pairs where some point of A has a true correspondence in B (not opposite flanks)
        use = [
            r
            for r in sub
            if r["correct"]
            and not math.isnan(r["faithful"])
            and not math.isnan(r["faithful_random"])
        ]
        if not use:
            continue

        def mean(key: str, use: list[dict[str, Any]] = use) -> float:
            vals = [r[key] for r in use if not math.isnan(r[key])]
            return float(np.mean(vals)) if vals else math.nan

        out.append(
            {
                "dataset": dataset,
                "layer": layer,
                "n_pairs": len(use),
                "faithful": mean("faithful"),
                "faithful_defined": mean("faithful_defined"),
                "random": mean("faithful_random"),
            }
        )
    return out


def _csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([repr(float(r[c])) if isinstance(r[c], float) else r[c] for c in columns])
    return buf.getvalue()


def _f(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}"


def markdown_table(
    metrics: Sequence[dict[str, Any]], faithfulness: Sequence[dict[str, Any]] = ()
) -> str:
    """Table-1-style markdown (and the faithfulness table when given)."""
    lines = [
        "| Dataset | Layer | pairs | ρ_res | Δ_res | ρ_mc | Δ_mc |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in metrics:
        lines.append(
            f"| {m['dataset']} | {m['layer']} | {m['n_pairs']} | {_f(m['rho_res'])} | "
            f"{_f(m['delta_res'])} | {_f(m['rho_mc'])} | {_f(m['delta_mc'])} |"
        )
    if any(not math.isnan(m["rho_res_exact"]) for m in metrics):
        lines += [
            "",
            "Exact residuals (synthetic ground truth, no homography model):",
            "",
            "| Dataset | Layer | ρ_res_exact | Δ_res_exact |",
            "|---|---|---:|---:|",
        ]
        lines += [
            f"| {m['dataset']} | {m['layer']} | {_f(m['rho_res_exact'])} | "
            f"{_f(m['delta_res_exact'])} |"
            for m in metrics
        ]
    extras = [k[6:] for k in (metrics[0] if metrics else {}) if k.startswith("n_res_")]
    if extras:
        lines += [
            "",
            "Other homography sources on the same pairs and matches:",
            "",
            "| Dataset | Layer | source | pairs with H | ρ_res | Δ_res |",
            "|---|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {m['dataset']} | {m['layer']} | {name} | {m[f'n_res_{name}']} | "
            f"{_f(m[f'rho_res_{name}'])} | {_f(m[f'delta_res_{name}'])} |"
            for name in extras
            for m in metrics
        ]
    if faithfulness:
        lines += [
            "",
            "Ground-truth faithfulness of the top matches (correct pairs; within one cell):",
            "",
            "| Dataset | Layer | pairs | PAIR-X | PAIR-X (defined) | random |",
            "|---|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {f['dataset']} | {f['layer']} | {f['n_pairs']} | {_f(f['faithful'])} | "
            f"{_f(f['faithful_defined'])} | {_f(f['random'])} |"
            for f in faithfulness
        ]
    lines += [
        "",
        "ρ: Spearman correlation of the metric with the model's cosine similarity. "
        "Δ: binned Bhattacharyya distance between correct and incorrect pairs at equal "
        "similarity (positive: the metric is higher for correct pairs).",
    ]
    return "\n".join(lines) + "\n"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_metric(sub: Sequence[dict[str, Any]], metric: str, title: str, path: Path) -> None:
    """Figure-5 style scatter (metric vs match score) and Figure-6 style per-bin KDEs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    m = np.array([r[metric] for r in sub], dtype=np.float64)
    s = np.array([r["similarity"] for r in sub], dtype=np.float64)
    c = np.array([r["correct"] for r in sub], dtype=bool)
    ok = np.isfinite(m) & np.isfinite(s)
    m, s, c = m[ok], s[ok], c[ok]
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.scatter(s[c], m[c], s=8, alpha=0.6, c="tab:green", label="correct")
    ax.scatter(s[~c], m[~c], s=8, alpha=0.6, c="tab:red", label="incorrect")
    if c.any() and (~c).any():
        left = max(np.percentile(s[c], 2.5), np.percentile(s[~c], 2.5))
        right = min(np.percentile(s[c], 97.5), np.percentile(s[~c], 97.5))
        if right > left:
            ax.axvspan(left, right, color="0.9", zorder=0, label="hard window")
    ax.set_xlabel("match score (cosine similarity)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9, y=1.0)
    ax.legend(fontsize=7)
    # fixed margins: tight_layout measures every text box and was most of a plot's time
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.93)
    fig.savefig(path)
    plt.close(fig)
    if not (c.any() and (~c).any()):
        return
    left = max(np.percentile(s[c], 2.5), np.percentile(s[~c], 2.5))
    right = min(np.percentile(s[c], 97.5), np.percentile(s[~c], 97.5))
    if not right > left:
        return
    size = (right - left) / 10
    fig, axes = plt.subplots(2, 5, figsize=(12, 4.5), dpi=80, sharey=False)
    for i, ax in enumerate(axes.ravel()):
        start, end = left + i * size, left + (i + 1) * size
        inb = (s > start) & (s < end)
        cor, inc = m[inb & c], m[inb & ~c]
        # a fixed title height and 4 ticks per axis: matplotlib's automatic title placement
        # and its tick objects were most of the drawing time of 10 panels
        ax.set_title(f"{start:.3f}–{end:.3f}  ({len(cor)}/{len(inc)})", fontsize=7, y=1.0)
        ax.tick_params(labelsize=6)
        ax.locator_params(nbins=4)
        if len(cor) < 3 or len(inc) < 3:
            continue
        grid = np.linspace(min(cor.min(), inc.min()), max(cor.max(), inc.max()), 200)
        for vals, col in ((cor, "tab:green"), (inc, "tab:red")):
            if np.ptp(vals) > 0:
                ax.plot(grid, stats.gaussian_kde(vals)(grid), c=col)
    fig.suptitle(f"{title}: per-bin KDE of {metric} (correct green, incorrect red)", fontsize=9)
    fig.subplots_adjust(left=0.03, right=0.99, bottom=0.07, top=0.87, wspace=0.22, hspace=0.42)
    fig.savefig(path.with_name(path.stem + "_bins.png"))
    plt.close(fig)


def write_report(out_dir: str | Path, *, plots: bool = True) -> list[dict[str, Any]]:
    """Write ``metrics.csv``, ``faithfulness.csv`` (if any), ``table.md`` and plots.

    Parameters
    ----------
    out_dir
        Folder holding the ``pairs.csv`` written by :func:`pairx.evaluation.protocol.evaluate`.
    plots
        Also draw the figures.

    Returns
    -------
    list[dict]
        The ``metrics.csv`` rows.
    """
    out = Path(out_dir)
    rows = read_pairs(out / "pairs.csv")
    if not rows:
        raise DatasetError(f"{out / 'pairs.csv'} has no results to report")
    metrics = aggregate(rows)
    faith = faithfulness_table(rows)
    extra_cols = [
        f"{k}_{name}" for name in extra_sources(rows) for k in ("n_res", "rho_res", "delta_res")
    ]
    atomic_write_text(out / "metrics.csv", _csv_text(metrics, (*METRIC_COLUMNS, *extra_cols)))
    if faith:
        atomic_write_text(out / "faithfulness.csv", _csv_text(faith, FAITHFULNESS_COLUMNS))
    atomic_write_text(out / "table.md", markdown_table(metrics, faith))
    if plots:
        pdir = out / "plots"
        pdir.mkdir(exist_ok=True)
        for (dataset, layer), sub in sorted(_groups(rows).items()):
            for metric in ("res", "mc"):
                name = f"{_safe(dataset)}__{_safe(layer)}__{metric}.png"
                plot_metric(sub, metric, f"{dataset} / {layer}", pdir / name)
    return metrics
