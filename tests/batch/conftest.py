"""Fixtures of the batch tests: a synthetic dataset big enough for 40+ evaluation pairs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def batch_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 giraffes x 6 sightings at 160 px, half of the individuals held out as test."""
    from pairx.data.synthetic import generate

    out = tmp_path_factory.mktemp("batch") / "ds"
    generate(out, seed=4, individuals=10, sightings=6, size=160, species=["giraffe"],
             test_fraction=0.5, progress=False)
    return out


@pytest.fixture(scope="session")
def pairs_csv(batch_data: Path) -> Path:
    """24 pairs of dataset ids (4 queries x 6 candidates), one path pair, one unknown id."""
    with (batch_data / "metadata.csv").open(newline="") as fh:
        ids = [r["image_id"] for r in csv.DictReader(fh)]
    path = batch_data.parent / "pairs.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_a", "image_b", "note"])
        for q in ids[0:24:6]:
            for c in ids[30:36]:
                w.writerow([q, c, "x"])
        w.writerow([f"ds/images/giraffe_0000/{ids[0]}.jpg", ids[7], ""])
        w.writerow(["no_such_image", ids[7], ""])
    return path
