"""PAIR-X quantitative metrics (paper section 3.3, supplement B.3-B.4): functions of arrays.

The pure functions live in :mod:`pairx.metrics.functional` (residuals, match coverage,
Spearman's rho, the binned Bhattacharyya distance); :mod:`~pairx.metrics.homography` provides
the homography sources, :mod:`~pairx.metrics.faithfulness` the synthetic ground-truth
faithfulness, :mod:`~pairx.metrics.localisation` and :mod:`~pairx.metrics.perturbation` the
baselines' localisation and deletion/insertion scores, :mod:`~pairx.metrics.calibration` the
similarity calibration fit and :mod:`~pairx.metrics.retrieval` the retrieval figures. The
paper's dataset protocol that runs them is :mod:`pairx.evaluation`.
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
