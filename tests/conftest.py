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
