"""Shared pytest fixtures and options."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest
import torch

from pairx.models.adapter import Preprocessing, ReIDModel

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PAIRX_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"

torch.set_num_threads(int(os.environ.get("PAIRX_THREADS", "2")))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """Folder of the reference implementation's golden outputs; skips where it is absent."""
    if not (GOLDEN / "README.md").is_file():
        pytest.skip(
            f"golden outputs not found at {GOLDEN} (they live in the project's shared/ folder; "
            "set PAIRX_SHARED to its path to run these tests)"
        )
    return GOLDEN


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset: all 4 species, 3 individuals each, 3 sightings, size 224."""
    from pairx.data.synthetic import generate

    out = tmp_path_factory.mktemp("synth") / "ds"
    generate(out, seed=0, individuals=3, sightings=3, size=224, progress=False)
    return out


REVIEW_PLACES = ("Ol Pejeta", "Mpala", "Samburu")


@pytest.fixture(scope="session")
def review_data(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic test dataset with ``location`` and ``date`` columns added."""
    out = tmp_path_factory.mktemp("review") / "data"
    shutil.copytree(synth_dir, out)
    with (out / "metadata.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):
        row["location"] = REVIEW_PLACES[i % len(REVIEW_PLACES)]
        row["date"] = f"2025-0{1 + i % 9}-{10 + i % 18:02d}"
    with (out / "metadata.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


@pytest.fixture(scope="session")
def project_dir(review_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A review project of ``review_data`` with the default model, k = 5."""
    from pairx.app.project import init_project

    root = tmp_path_factory.mktemp("proj") / "p"
    init_project(root, data=review_data, k=5, progress=False)
    return root


@pytest.fixture()
def fresh_project(project_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session project (tests that write decisions or jobs)."""
    dst = tmp_path / "p"
    shutil.copytree(project_dir, dst)
    return dst


# -- a small synthetic benchmark and a tiny random model (metrics and evaluation tests) --
TINY_LAYERS = ("backbone.layer2", "backbone.layer3")



@pytest.fixture(scope="session")
def eval_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic benchmark big enough for the protocol: 2 species, 6 individuals, 4 sightings.

    Half of the identities are in the (identity-disjoint) test split, so the protocol's query
    and gallery halves have both correct and incorrect pairs.
    """
    from pairx.data.synthetic import generate

    out = tmp_path_factory.mktemp("evalsynth") / "ds"
    generate(
        out,
        seed=1,
        individuals=6,
        sightings=4,
        species=["zebra", "face"],
        size=96,
        test_fraction=0.5,
        progress=False,
    )
    return out


def make_tiny_model(seed: int = 0) -> ReIDModel:
    """A randomly initialised narrow ResNet-10 ReIDNet at 64 x 64 (layer2: 8x8, layer3: 4x4)."""
    from pairx.models.architectures import ReIDNet

    torch.manual_seed(seed)
    net = ReIDNet("resnet10t", channels=(16, 32, 64, 128)).eval()
    return ReIDModel(
        net, Preprocessing(size=(64, 64)), name="tiny", metadata={"layers": list(TINY_LAYERS)}
    )


@pytest.fixture()
def tiny_model() -> ReIDModel:
    """A fresh tiny random model (see :func:`make_tiny_model`)."""
    return make_tiny_model()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A fuzz test's large budget runs only when ``-m`` asks for slow tests (``-m slow``); the
    default run keeps its small budget, so the README's test time stays true."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="large fuzzing budget: run with -m slow")
    for item in items:
        if "fuzz_budget" in item.keywords:
            item.add_marker(skip)
