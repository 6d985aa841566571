"""End-to-end test of ``pairx synth`` through the real typer app."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pairx.cli.main import app, main
from pairx.data.datasets import load_dataset
from pairx.data.synthetic import true_points


def test_synth_command_writes_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = CliRunner().invoke(
        app,
        ["synth", "-o", str(out), "--seed", "4", "--individuals", "2", "--sightings", "2",
         "--species", "zebra,giraffe", "--size", "96", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 8 images of 4 individuals" in result.output
    ds = load_dataset(out)
    assert ds.species == ["giraffe", "zebra"]
    assert {s.split for s in ds} == {"train", "test"}
    a = ds[0].image_id
    assert true_points(out, a, a, [[48.0, 48.0]]).shape == (1, 2)


def test_synth_command_bad_species(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["synth", "-o", str(tmp_path / "x"), "--species", "zebra,unicorn", "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown species unicorn" in err and "giraffe" in err
    assert len(err.strip().splitlines()) == 1
