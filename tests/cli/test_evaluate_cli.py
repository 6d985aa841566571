"""End-to-end test of ``pairx evaluate`` through the real typer app."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pairx.cli.main import app, main
from pairx.models.adapter import Preprocessing

LAYERS = ("backbone.layer2", "backbone.layer3")


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random narrow ResNet-10 ReIDNet exported in pairx's format (64 x 64 input)."""
    from pairx.models.architectures import ReIDNet
    from pairx.models.default import export_model

    torch.manual_seed(0)
    net = ReIDNet("resnet10t", channels=(16, 32, 64, 128)).eval()
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return export_model(
        net, path, preprocessing=Preprocessing(size=(64, 64)), layers=LAYERS, name="tiny"
    )


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli_synth") / "ds"
    result = CliRunner().invoke(
        app,
        [
            "synth",
            "-o",
            str(out),
            "--seed",
            "2",
            "--individuals",
            "6",
            "--sightings",
            "4",
            "--species",
            "giraffe",
            "--size",
            "96",
            "--test-fraction",
            "0.5",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_evaluate_command_synthetic_auto_layers(
    synth: Path, tiny_export: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--allow-untrained",
        str(synth),
        "--model",
        str(tiny_export),
        "--layers",
        "auto",
        "--pairs",
        "8",
        "--selection-pairs",
        "8",
        "--homography",
        "truth,sift",
        "-o",
        str(out),
        "--quiet",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ρ_res" in result.output and "8 pairs computed" in result.output
    for name in (
        "config.json",
        "pairs.csv",
        "selection_pairs.csv",
        "layers.json",
        "metrics.csv",
        "table.md",
        "faithfulness.csv",
    ):
        assert (out / name).is_file(), name
    metrics = list(csv.DictReader((out / "metrics.csv").open()))
    assert [m["dataset"] for m in metrics] == ["ds"]  # one species: one group
    assert metrics[0]["layer"] in LAYERS and metrics[0]["n_pairs"] == "8"
    assert "rho_res_sift" in metrics[0] and int(metrics[0]["n_res_sift"]) <= 8
    assert "Other homography sources" in (out / "table.md").read_text()
    pairs = list(csv.DictReader((out / "pairs.csv").open()))
    assert "res_sift" in pairs[0]
    faith = list(csv.DictReader((out / "faithfulness.csv").open()))
    assert 0.0 <= float(faith[0]["faithful"]) <= 1.0
    assert any((out / "plots").glob("*_res.png"))
    # rerunning resumes: nothing recomputed
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "0 pairs computed, 8 already done" in again.output


def test_evaluate_command_errors(
    synth: Path, tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "folder"
    for ident in ("a", "b"):
        (folder / ident).mkdir(parents=True)
        for img in sorted((synth / "images").rglob("*.jpg"))[:2]:
            (folder / ident / img.name).write_bytes(img.read_bytes())
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "evaluate",
                "--allow-untrained",
                str(folder),
                "--model",
                str(tiny_export),
                "--layers",
                "backbone.layer3",
                "--homography",
                "truth",
                "-o",
                str(tmp_path / "o"),
                "-q",
            ]
        )
    assert exc.value.code == 2
    assert "synthetic" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "evaluate",
                "--allow-untrained",
                str(synth),
                "--model",
                str(tiny_export),
                "--homography",
                "orb",
                "-o",
                str(tmp_path / "o2"),
                "-q",
            ]
        )
    assert exc.value.code == 2
    assert "sift, lightglue, truth" in capsys.readouterr().err
