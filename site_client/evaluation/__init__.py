"""Site-side halves of external validation: aggregates computed at a hospital, sizes independent of n.

Every function returns a plain ``dict[str, numpy array | float | int]``, additive across sites except the
held-out curves of :mod:`site_client.evaluation.curves` (one site's own step curve each).
Pass each aggregate through :func:`suppress_small_cells` with the protocol's ``privacy.min_cell_count``
before it leaves the site.
"""

from site_client.evaluation.binned import bin_index, class_histograms, equal_width_edges, reliability_bins
from site_client.evaluation.conformal import (
    conformal_counts_at_most,
    conformal_histogram,
    dp_conformal_histogram,
    conformal_histograms,
    conformity_scores,
    prediction_set_coverage,
    prediction_set_sizes,
    prediction_sets,
    released_calibration_scores,
    released_set_statistics,
)
from site_client.evaluation.correlation import feature_volume_sums
from site_client.evaluation.curves import reliability_groups, roc_steps
from site_client.evaluation.counts import calibration_sums, confusion_counts
from site_client.evaluation.paired import paired_auc_difference
from site_client.evaluation.newton import local_calibration_fit, log_temperature_terms, logistic_calibration_terms
from site_client.evaluation.privacy import emitted_count_cells, merge_groups, suppress_small_cells

__all__ = [
    "bin_index",
    "calibration_sums",
    "class_histograms",
    "conformal_counts_at_most",
    "conformal_histogram",
    "dp_conformal_histogram",
    "conformal_histograms",
    "conformity_scores",
    "confusion_counts",
    "emitted_count_cells",
    "equal_width_edges",
    "feature_volume_sums",
    "local_calibration_fit",
    "log_temperature_terms",
    "logistic_calibration_terms",
    "merge_groups",
    "paired_auc_difference",
    "prediction_set_coverage",
    "prediction_set_sizes",
    "prediction_sets",
    "released_calibration_scores",
    "released_set_statistics",
    "reliability_bins",
    "reliability_groups",
    "roc_steps",
    "suppress_small_cells",
]
