"""Atomic result files: readers see the old file or the whole new one, never a torn one."""

from __future__ import annotations

from pathlib import Path

import pytest

from pairx.core import files
from pairx.core.files import atomic_write_text


def test_atomic_write_creates_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    atomic_write_text(path, "a,b\n1,2\n")
    assert path.read_text(encoding="utf-8") == "a,b\n1,2\n"
    atomic_write_text(path, "ü\n")
    assert path.read_text(encoding="utf-8") == "ü\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "table.md"
    path.write_text("old\n", encoding="utf-8")

    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new\n")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]  # no .tmp left behind
