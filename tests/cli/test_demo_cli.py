"""End-to-end test of ``pairx demo``: the README's main-job command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from pairx.cli.main import app


def test_demo_writes_explanations(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "--individuals", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    true, false = summary["true_match"], summary["hard_non_match"]
    assert true["same_individual"] and not false["same_individual"]
    assert -1.0 <= false["similarity"] <= 1.0 and -1.0 <= true["similarity"] <= 1.0
    hits, n = (int(v) for v in true["top_matches_on_true_correspondence"].split("/"))
    assert 0 <= hits <= n
    for tag in ("true_match", "hard_non_match", "retrieval"):
        img = np.asarray(Image.open(out / f"{tag}.png"))
        assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 5  # a real picture
    expl = json.loads((out / "true_match.json").read_text())
    assert abs(expl["similarity"] - true["similarity"]) < 1e-3
