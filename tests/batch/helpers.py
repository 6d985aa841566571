"""Helpers of the batch tests: an executor that stops a job part-way (an interrupt)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pairx.batch.executors import Executor


class Interrupted(Exception):
    """Raised by :class:`Interrupting` in place of a Ctrl-C."""


class Interrupting(Executor):
    """Runs ``inner`` and raises :class:`Interrupted` after ``after`` chunks were yielded."""

    def __init__(self, inner: Executor, after: int) -> None:
        super().__init__()
        self.inner, self.after = inner, after

    def map(self, task: Any, chunks: Sequence[Sequence[Any]]) -> Iterator[list[Any]]:
        for i, out in enumerate(self.inner.map(task, chunks)):
            if i == self.after:
                raise Interrupted
            yield out
