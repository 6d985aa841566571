"""pairx baselines: rows, report, resume."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pairx.cli.main import app

pytest.importorskip("quantus", reason="the [baselines] extra is not installed")


def test_baselines_writes_a_report_and_resumes(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bl"
    args = ["baselines", str(synth_dir), "--methods", "pairx,kpca,sift", "--pairs", "2",
            "--steps", "4", "-o", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "pairs.csv").open()))
    assert sorted({r["method"] for r in rows}) == ["kpca", "pairx", "random", "sift"]
    assert len(rows) == 8
    pairx_rows = [r for r in rows if r["method"] == "pairx"]
    assert all(0 <= float(r["pck"]) <= 1 for r in pairx_rows if r["pck"])
    assert all(r["pck"] == "" or r["pck"] == "nan" for r in rows if r["method"] == "kpca")
    md = (out / "summary.md").read_text()
    assert "| pairx |" in md and "| random |" in md
    assert (out / "summary.png").stat().st_size > 1000
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0
    assert len(list(csv.DictReader((out / "pairs.csv").open()))) == 8  # nothing recomputed
    other = CliRunner().invoke(app, [*args[:-2], "--seed", "5", "-o", str(out)])
    assert other.exit_code != 0
    neg = CliRunner().invoke(app, ["baselines", str(synth_dir), "--methods", "kpca",
                                   "--pairs", "0", "--negatives", "2", "--steps", "3", "-o",
                                   str(tmp_path / "neg")])
    assert neg.exit_code == 0, neg.output
    rows = list(csv.DictReader((tmp_path / "neg" / "pairs.csv").open()))
    assert {r["kind"] for r in rows} == {"negative"} and len(rows) == 4
    for r in rows:
        assert r["key_a"].split("_")[:2] != r["key_b"].split("_")[:2]  # other individuals
    assert "(hard negatives)" in (tmp_path / "neg" / "summary.md").read_text()
