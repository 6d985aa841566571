"""Fixtures of the review-app tests: a small dataset with places and dates, one project."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the review app needs the 'app' extra")

PLACES = ("Ol Pejeta", "Mpala", "Samburu")


@pytest.fixture(scope="session")
def review_data(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic test dataset with ``location`` and ``date`` columns added."""
    out = tmp_path_factory.mktemp("review") / "data"
    shutil.copytree(synth_dir, out)
    with (out / "metadata.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):
        row["location"] = PLACES[i % len(PLACES)]
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
