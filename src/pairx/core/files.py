"""Paths users type, and writing result files so that an interruption never leaves a
half-written one."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename.

    Readers see either the previous file or the complete new one; a failed write leaves the
    previous file untouched and removes the temporary file.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def user_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded where that user exists.

    ``Path.expanduser`` raises ``RuntimeError`` for an unknown user (``~0``); such a path is
    taken literally instead, so that it is reported as not found like any other.
    """
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)
