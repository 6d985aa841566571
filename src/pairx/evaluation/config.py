"""What determines an evaluation's results: :class:`EvaluationConfig` (``OUT/config.json``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

__all__ = ["EvaluationConfig"]


@dataclass(frozen=True)
class EvaluationConfig:
    """Everything that determines the results of an evaluation (stored in ``config.json``).

    Attributes
    ----------
    dataset
        Resolved dataset folder.
    model
        Model spec or name.
    layers
        Explicit layers, or ``("auto",)`` for layer selection.
    n_pairs
        Pairs per group (half correct, half incorrect, at most).
    homography
        ``"sift"``, ``"lightglue"`` or ``"truth"``; a comma-separated list (e.g.
        ``"truth,sift"``) computes ``res`` with the first and adds a ``res_<name>`` column for
        each other source, on the very same matches (to compare sources).
    seed
        Seed of the pair sampling and of the random-match baseline.
    k_start, k_max
        Top-k range of the pair selection (5 and 20 in the paper).
    n_selection_pairs
        Train-vs-train pairs used to select the layer (500 in the paper).
    n_top
        Top matches checked by the ground-truth faithfulness.
    group_by
        ``"species"`` (each annotated species is its own group) or ``"none"``.
    """

    dataset: str
    model: str
    layers: tuple[str, ...] = ("auto",)
    n_pairs: int = 2000
    homography: str = "sift"
    seed: int = 0
    k_start: int = 5
    k_max: int = 20
    n_selection_pairs: int = 500
    n_top: int = 20
    group_by: str = "species"

    def to_json(self) -> str:
        """Stable JSON text of the configuration."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @property
    def homographies(self) -> list[str]:
        """The homography source names, primary first."""
        return [h.strip() for h in self.homography.split(",") if h.strip()]

    @property
    def digest(self) -> str:
        """Short hash of the configuration."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @property
    def auto_layers(self) -> bool:
        """Whether the layer is chosen per group (``layers == ("auto",)``)."""
        return self.layers == ("auto",)
