"""Similarity calibration: pair scores against brute force, quantile lookups, files, CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pairx.cli.main import app
from pairx.core.errors import InputError, ModelError
from pairx.core.results import PairExplanation
from pairx.metrics.calibration import LEVELS, SimilarityCalibration, calibrate, pair_scores


def test_pair_scores_equal_a_brute_force_loop() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(9, 5))
    ids = ["a", "a", "b", "b", "b", "c", "d", "d", "e"]
    species = ["x", "x", "x", "x", "x", "x", "y", "y", "y"]
    true, false = pair_scores(emb, ids, species)
    want_true, want_false = [], []
    for i, j in itertools.combinations(range(9), 2):
        cos = emb[i] @ emb[j] / np.linalg.norm(emb[i]) / np.linalg.norm(emb[j])
        if ids[i] == ids[j]:
            want_true.append(cos)
        elif species[i] == species[j]:
            want_false.append(cos)
    np.testing.assert_allclose(true, want_true)
    np.testing.assert_allclose(false, want_false)
    assert len(pair_scores(emb, ids)[1]) == 36 - len(want_true)  # any two individuals
    views = ["l", "r", "l", "l", "r", "l", "l", "l", "r"]
    true_v, false_v = pair_scores(emb, ids, species, views)
    pairs = [(i, j) for i, j in itertools.combinations(range(9), 2) if views[i] == views[j]]
    assert len(true_v) == sum(ids[i] == ids[j] for i, j in pairs)
    assert len(false_v) == sum(ids[i] != ids[j] and species[i] == species[j] for i, j in pairs)


def test_fractions_match_the_empirical_distribution() -> None:
    rng = np.random.default_rng(1)
    true, false = rng.normal(0.65, 0.12, 5000), rng.normal(0.35, 0.12, 20000)
    cal = SimilarityCalibration(np.quantile(true, LEVELS), np.quantile(false, LEVELS),
                                len(true), len(false), "synthetic", "m", "sha256:x")
    for s in (0.2, 0.45, 0.55, 0.8):
        t, f = cal.fraction_below(s)
        assert t == pytest.approx((true < s).mean(), abs=0.002)
        assert f == pytest.approx((false < s).mean(), abs=0.002)
    assert cal.fraction_below(-5) == (0.0, 0.0) and cal.fraction_below(5) == (1.0, 1.0)
    assert cal.context(0.9).verdict == "typical of true matches"
    assert cal.context(0.3).verdict == "typical of non-matches"
    assert cal.context(0.5).verdict == "ambiguous"
    assert cal.context(0.5).describe().endswith("% of non-matches: ambiguous")
    assert cal.context(5.0).describe().startswith("above all true matches and all non-matches")
    assert cal.context(-5.0).describe().startswith("above none of the true matches")


def test_percentages_never_round_an_inequality_away() -> None:
    from pairx.core.context import _pct

    assert [_pct(v) for v in (0.0, 0.004, 0.5, 0.9996, 1.0)] == ["0%", "0.4%", "50%", "99.9%",
                                                                "100%"]


def test_calibrate_a_model_and_use_it(tmp_path: Path) -> None:
    from pairx.data.synthetic import generate
    from pairx.explainers.pairx import PairX
    from pairx.models.default import load_default

    ds = generate(tmp_path / "d", seed=6, individuals=3, sightings=3, species=("zebra",),
                  progress=False)
    model = load_default()
    cal = calibrate(model, ds, progress=False)
    assert (cal.n_true, cal.n_false) == (9, 27) and cal.model_name == "default"
    path = cal.save(tmp_path / "cal.json")
    back = SimilarityCalibration.load(path)
    np.testing.assert_array_equal(back.true_quantiles, cal.true_quantiles)
    assert back.model_digest == cal.model_digest and back.source == cal.source
    paths = [str(s.path) for s in ds.samples]
    engine = PairX(model, ["backbone.layer3"], n_pixel_maps=1, calibration=path)
    expl = engine.explain_layers(paths[0], paths[1])["backbone.layer3"]
    assert expl.context is not None and expl.context.similarity == expl.similarity
    assert (expl.context.true_below, expl.context.false_below) == cal.fraction_below(
        expl.similarity)
    js, _ = expl.save(tmp_path / "e.json")
    assert PairExplanation.load(js).context == expl.context
    other = load_default()
    with torch.no_grad():
        next(other.net.parameters()).view(-1)[0] += 1.0
    with pytest.raises(ModelError, match="other weights"):
        PairX(other, ["backbone.layer3"], calibration=path)
    with pytest.raises(InputError, match="not a pairx calibration"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"format": "x"}))
        SimilarityCalibration.load(bad)


def test_default_model_ships_a_calibration() -> None:
    from pairx.models.default import load_default

    model = load_default()
    cal = SimilarityCalibration.load(str(model.metadata["calibration_file"]))
    from pairx.models.provenance import weight_digest

    assert cal.model_digest == weight_digest(model) and cal.n_true > 1000
    assert cal.true_quantiles[500] > cal.false_quantiles[500] + 0.2  # it separates


def test_calibrate_command(tmp_path: Path) -> None:
    from pairx.data.synthetic import generate

    generate(tmp_path / "d", seed=8, individuals=2, sightings=2, species=("leopard",),
             progress=False)
    out = tmp_path / "c.json"
    result = CliRunner().invoke(app, ["calibrate", str(tmp_path / "d"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "true matches: 2 pairs" in result.output and "non-matches:  4 pairs" in result.output
    assert SimilarityCalibration.load(out).n_false == 4
