"""Tests of the aggregation into metrics.csv / table.md / plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from pairx.evaluation.protocol import PAIR_COLUMNS
from pairx.evaluation.report import write_report
from pairx.metrics.functional import binned_bhattacharyya, spearman_rho


def _write_pairs(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = 200
    correct = np.arange(n) % 2 == 0
    sim = rng.uniform(0.3, 0.7, n)
    res = rng.normal(0, 1, n) + correct + 2 * sim
    mc = rng.uniform(0, 1, n)
    res[3] = np.nan  # no homography for this pair
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(PAIR_COLUMNS)
        for i in range(n):
            w.writerow(
                [
                    "zebra",
                    "L",
                    f"q{i:03d}",
                    f"g{i:03d}",
                    int(correct[i]),
                    repr(float(sim[i])),
                    repr(float(res[i])),
                    repr(float(mc[i])),
                    5,
                    "nan",
                    "nan",
                    "nan",
                    "nan",
                ]
            )
    return {"correct": correct, "sim": sim, "res": res, "mc": mc}


def test_report_matches_functional_and_writes_files(tmp_path: Path) -> None:
    data = _write_pairs(tmp_path / "pairs.csv", np.random.default_rng(0))
    metrics = write_report(tmp_path)
    assert len(metrics) == 1
    m = metrics[0]
    ok = ~np.isnan(data["res"])
    assert m["n_pairs"] == 200 and m["n_res"] == 199
    assert m["rho_res"] == pytest.approx(spearman_rho(data["res"][ok], data["sim"][ok]))
    with pytest.warns(UserWarning):
        want = binned_bhattacharyya(data["res"], data["sim"], data["correct"])
    assert m["delta_res"] == pytest.approx(want)
    assert m["delta_res"] > 0  # correct pairs have higher res at equal similarity
    assert m["delta_mc"] == pytest.approx(
        binned_bhattacharyya(data["mc"], data["sim"], data["correct"])
    )
    assert math.isnan(m["rho_res_exact"])
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert rows[0]["dataset"] == "zebra" and float(rows[0]["rho_mc"]) == pytest.approx(m["rho_mc"])
    table = (tmp_path / "table.md").read_text()
    assert "| zebra | L | 200 |" in table and "Δ_res" in table
    assert not (tmp_path / "faithfulness.csv").exists()
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == [
        "zebra__L__mc.png",
        "zebra__L__mc_bins.png",
        "zebra__L__res.png",
        "zebra__L__res_bins.png",
    ]
    assert not list(tmp_path.glob("*.tmp"))
