"""PAIR-X quantitative metrics (paper section 3.3, supplement B.3-B.4), ground-truth faithfulness.

The pure functions live in :mod:`pairx.metrics.functional`; :mod:`~pairx.metrics.homography`
provides homography sources, :mod:`~pairx.evaluation.protocol` the resumable dataset protocol,
:mod:`~pairx.evaluation.report` the tables and plots, :mod:`~pairx.metrics.faithfulness` the
synthetic ground-truth faithfulness.
"""

from pairx.metrics.functional import (
    MetricWarning,
    binned_bhattacharyya,
    inverted_residual_mean,
    match_coverage,
    spearman_rho,
)

__all__ = [
    "MetricWarning",
    "binned_bhattacharyya",
    "inverted_residual_mean",
    "match_coverage",
    "spearman_rho",
]
