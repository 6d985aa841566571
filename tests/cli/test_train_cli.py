"""``pairx train`` and ``pairx retrieval`` end to end on a tiny generated dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pairx.cli.main import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pairx.data.synthetic import generate

    root = tmp_path_factory.mktemp("cli") / "data"
    generate(
        root,
        seed=5,
        individuals=4,
        sightings=3,
        species=["zebra", "leopard"],
        size=96,
        progress=False,
        test_fraction=0.5,
    )
    return root


def test_train_then_retrieval(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code, out, err = run_cli(
        [
            "train",
            str(data_dir),
            "-o",
            str(run),
            "--size",
            "64",
            "--epochs",
            "1",
            "--batch-p",
            "4",
            "--batch-k",
            "2",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["epochs"] == 1 and Path(summary["model"]).is_file()
    assert set(summary["retrieval"]) == {"zebra", "leopard", "all"}
    assert (run / "checkpoint.pt").is_file() and (run / "model.json").is_file()

    code, out, err = run_cli(["retrieval", str(data_dir), "--model", str(run), "--quiet"], capsys)
    assert code == 0, err
    scores = json.loads(out)
    assert set(scores) == {"zebra", "leopard", "all"}
    for figures in scores.values():
        assert set(figures) == {"rank1", "mAP", "n_queries"}
    # 2 test identities x 3 sightings per species, every query has 2 other sightings
    assert scores["zebra"]["n_queries"] == 6 and scores["all"]["n_queries"] == 12
    assert 0.0 <= scores["all"]["rank1"] <= 1.0

    # resuming a finished run re-exports without training again
    code, out, err = run_cli(
        [
            "train",
            str(data_dir),
            "-o",
            str(run),
            "--size",
            "64",
            "--epochs",
            "1",
            "--batch-p",
            "4",
            "--batch-k",
            "2",
            "--quiet",
            "--resume",
            "--no-evaluate",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["epochs"] == 1


def test_clear_errors(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["retrieval", str(tmp_path / "nope")], capsys)
    assert code == 2 and "not found" in err
    code, _, err = run_cli(["retrieval", str(data_dir), "--model", str(tmp_path / "x.pt")], capsys)
    assert code == 2 and "pairx: error" in err
    code, _, err = run_cli(
        ["train", str(data_dir), "-o", str(tmp_path / "r"), "--batch-p", "99", "--quiet"], capsys
    )
    assert code == 2 and "batch-p" in err
