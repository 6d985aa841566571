"""A tiny re-ID dataset for the training tests: each identity is a random blob pattern.

Sightings of one identity share the pattern (identity information) but differ by a random
shift, a colour change and noise, so a network can learn the pattern within a few steps.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_pattern_dataset(
    root: Path, *, identities: int = 8, sightings: int = 4, size: int = 64, seed: int = 0
) -> Path:
    """Write ``root/metadata.csv`` plus PNGs; the last quarter of identities is the test split."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    n_test = max(2, identities // 4)
    _, xx = np.mgrid[0:size, 0:size]
    for ident in range(identities):
        # a pattern of random dark discs on a light coat, on a 1.5x canvas so shifts stay inside
        canvas = 3 * size // 2
        cy, cx = np.mgrid[0:canvas, 0:canvas]
        coat = np.ones((canvas, canvas), dtype=np.float64)
        for _ in range(12):
            y0, x0 = rng.uniform(0, canvas, size=2)
            r = rng.uniform(3, 9)
            coat[(cy - y0) ** 2 + (cx - x0) ** 2 < r * r] = 0.0
        species = "alpha" if ident % 2 == 0 else "beta"
        split = "test" if ident >= identities - n_test else "train"
        for k in range(sightings):
            dy, dx = rng.integers(0, canvas - size, size=2)
            crop = coat[dy : dy + size, dx : dx + size]
            tint = rng.uniform(0.4, 1.0, size=3)
            img = crop[..., None] * tint[None, None, :] + rng.normal(0, 0.05, (size, size, 3))
            img += 0.05 * np.sin(xx / rng.uniform(3, 8))[..., None]
            rgb = (np.clip(img, 0, 1) * 255).astype(np.uint8)
            rel = f"images/{ident:03d}_{k}.png"
            (root / "images").mkdir(exist_ok=True)
            Image.fromarray(rgb).save(root / rel)
            rows.append([f"{ident:03d}_{k}", f"id{ident:03d}", rel, species, "left", split])
    with (root / "metadata.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "identity", "path", "species", "orientation", "split"])
        writer.writerows(rows)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a 12-identity x 4-sighting pattern dataset (9 train, 3 test identities)."""
    return make_pattern_dataset(tmp_path_factory.mktemp("tiny") / "data", identities=12)
