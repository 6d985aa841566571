"""Shared pytest fixtures and options."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
