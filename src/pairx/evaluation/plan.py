"""Checking an evaluation's whole configuration before anything is embedded or written.

:func:`check_plan` refuses, with the option to change, every setting that would otherwise fail
only after the embeddings (a pair count below the minimum, an unknown layer or grouping, a
group without test or train images), so a refused run writes nothing and the corrected run
into the same folder starts clean. :func:`results_started` says whether a folder holds any
computed pair: a run that wrote its configuration (and the :data:`UNFINISHED` mark) but failed
before any pair, e.g. with too few pairs found after embedding, is replaced by the corrected run
instead of blocking it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pairx.core.errors import InputError
from pairx.data.datasets import ReIDDataset
from pairx.evaluation.config import EvaluationConfig
from pairx.evaluation.pairs import (
    MIN_PAIRS_PER_SIDE,
    group_dataset,
    group_sides,
    split_dataset,
)
from pairx.models.adapter import ReIDModel

__all__ = ["RESULT_FILES", "UNFINISHED", "check_plan", "results_started"]

RESULT_FILES = ("pairs.csv", "selection_pairs.csv")
UNFINISHED = ".unfinished"
"""Written with ``config.json``, removed when the run completes."""


def check_plan(config: EvaluationConfig, dataset: ReIDDataset,
               model: ReIDModel) -> dict[str, ReIDDataset]:
    """The evaluation groups of ``dataset``, once every setting of ``config`` is known to work.

    Returns
    -------
    dict[str, ReIDDataset]
        The groups (:func:`pairx.evaluation.pairs.group_dataset` of the split dataset).

    Raises
    ------
    InputError
        ``--pairs`` or ``--selection-pairs`` below the minimum, an unknown ``--group-by``, a
        layer the model does not have, a bad top-k range.
    DatasetError
        A group without test or train images.
    """
    from pairx.models.layers import get_layer

    least = 2 * MIN_PAIRS_PER_SIDE
    if config.n_pairs < least:
        raise InputError(f"--pairs must be at least {least} (at least {MIN_PAIRS_PER_SIDE} "
                         f"correct and {MIN_PAIRS_PER_SIDE} incorrect pairs); got "
                         f"{config.n_pairs}")
    if config.auto_layers and config.n_selection_pairs < least:
        raise InputError(f"--selection-pairs must be at least {least} with --layers auto; got "
                         f"{config.n_selection_pairs}")
    if not 1 <= config.k_start <= config.k_max:
        raise InputError(f"the top-k range must satisfy 1 <= k_start <= k_max; got "
                         f"{config.k_start}..{config.k_max}")
    if config.group_by not in ("species", "none"):
        raise InputError(f"--group-by must be 'species' or 'none'; got {config.group_by!r}")
    if not config.auto_layers:
        if "auto" in config.layers:
            raise InputError("--layers takes 'auto' alone or a list of layer names, not both")
        for name in config.layers:
            get_layer(model, name)  # LayerError names the layers the model has
    groups = group_dataset(split_dataset(dataset), config.group_by)
    for name, group in groups.items():
        group_sides(name, group)
    return groups


def results_started(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds any computed row (``pairs.csv`` or ``selection_pairs.csv``)."""
    for name in RESULT_FILES:
        path = out_dir / name
        if not path.is_file():
            continue
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                if sum(1 for row in csv.reader(fh) if row) > 1:
                    return True
        except (OSError, UnicodeDecodeError, csv.Error):
            return True  # unreadable: keep it, the resume reports it
    return False
