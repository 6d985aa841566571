"""PAIR-X's options: the names each takes, and one check of all of them before any work."""

from __future__ import annotations

from collections.abc import Sequence

from pairx.core.errors import InputError

__all__ = ["ENGINES", "PIXEL_METHODS", "PRECISIONS", "check_options"]

ENGINES = ("auto", "gradient", "zennit")
"""LRP engines of :class:`pairx.explainers.pairx.PairX`."""

PRECISIONS = ("float32", "bfloat16")
"""Number formats of the gradient engine's forward and backward passes."""

PIXEL_METHODS = ("auto", "cone", "dense")
"""How the gradient engine computes pixel maps
(:func:`pairx.lrp.gradient_engine.position_pixel_relevance`)."""


def check_options(
    layers: Sequence[str] | str,
    *,
    n_matches: int,
    n_pixel_maps: int,
    engine: str,
    max_graphs: int,
    pairs_per_pass: int,
    match_filter: str | None,
    pixel_method: str,
    precision: str,
) -> list[str]:
    """Check PAIR-X's options (see :class:`~pairx.explainers.pairx.PairX`) and return its
    layers as a list without repeats.

    Raises
    ------
    InputError
        The first option out of its range, with the values it takes.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got "
                         f"{precision!r}")
    if precision != "float32" and engine == "zennit":
        raise InputError(f"precision {precision!r} needs engine='gradient' (or 'auto')")
    if pixel_method not in PIXEL_METHODS:
        raise InputError(f"pixel_method must be one of {', '.join(PIXEL_METHODS)}; got "
                         f"{pixel_method!r}")
    if match_filter not in (None, "ransac"):
        raise InputError(f"match_filter must be None or 'ransac'; got {match_filter!r}")
    names = list(dict.fromkeys([layers] if isinstance(layers, str) else layers))
    if not names:
        raise InputError("give at least one layer name")
    if n_matches < 0 or n_pixel_maps < 0:
        raise InputError("n_matches and n_pixel_maps must be >= 0")
    if engine not in ENGINES:
        raise InputError(f"unknown LRP engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if int(max_graphs) < 2:
        raise InputError(f"max_graphs must be at least 2 (one pair); got {max_graphs}")
    if int(pairs_per_pass) < 1:
        raise InputError(f"pairs_per_pass must be at least 1; got {pairs_per_pass}")
    return names
