"""An append-only JSON Lines result store that survives interruption and never duplicates a key.

One JSON object per line, each with a unique ``"key"``. Lines are appended and flushed (with
``fsync``) after every chunk; on opening, a partially written last line (an interrupt
mid-write) is dropped, so a rerun continues exactly where the last complete chunk ended.
Writing a key that is already stored does nothing: retried or repeated chunks cannot add a
second record.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pairx.core.errors import InputError
from pairx.core.files import atomic_write_text

__all__ = ["JsonlStore", "plain"]


def plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and non-finite floats as ``None``."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlStore:
    """Records keyed by ``record["key"]``, one JSON line each.

    Parameters
    ----------
    path
        The ``.jsonl`` file (created when missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.keys: set[str] = set()
        self._recover()
        self._fh = self.path.open("a", encoding="utf-8", newline="\n")

    def _recover(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.touch()
            return
        text = self.path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):  # interrupted mid-line: drop the partial row
            lines = lines[:-1]
            atomic_write_text(self.path, "".join(lines))
        for n, line in enumerate(lines, 1):
            try:
                key = json.loads(line)["key"]
            except (ValueError, KeyError, TypeError):
                raise InputError(
                    f"{self.path}, line {n}: not a pairx result record; the store is damaged "
                    "or another program wrote it; move it away or use another output folder"
                ) from None
            self.keys.add(str(key))

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def write(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append the records whose key is new, flush them to disk; returns how many."""
        n = 0
        for rec in records:
            key = str(rec["key"])
            if key in self.keys:
                continue
            self._fh.write(json.dumps(plain(rec), sort_keys=True, allow_nan=False) + "\n")
            self.keys.add(key)
            n += 1
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return n

    def records(self) -> list[dict[str, Any]]:
        """Every stored record, in file order."""
        self._fh.flush()
        with self.path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def drop(self, where: Callable[[dict[str, Any]], bool]) -> int:
        """Remove the records ``where(record)`` holds for (atomically); returns how many."""
        keep, gone = [], 0
        for rec in self.records():
            if where(rec):
                gone += 1
                self.keys.discard(str(rec["key"]))
            else:
                keep.append(json.dumps(rec, sort_keys=True, allow_nan=False) + "\n")
        if gone:
            self._fh.close()
            atomic_write_text(self.path, "".join(keep))
            self._fh = self.path.open("a", encoding="utf-8", newline="\n")
        return gone

    def close(self) -> None:
        """Close the file."""
        self._fh.close()
