"""Coordinator halves of external validation: combine site aggregates into metrics (pure functions).

No Flower or MLflow here; :mod:`coordinator.tracking` logs the :mod:`coordinator.validation.results`.
"""

from coordinator.validation.auc import (
    auc_difference_from_site,
    auc_difference_unpaired,
    auc_from_histograms,
    auc_from_site_histograms,
    roc_from_histograms,
)
from coordinator.validation.calibration import (
    brier_scores,
    fit_logistic_calibration,
    fit_platt,
    fit_temperature,
    observed_expected,
    reliability,
)
from coordinator.validation.classification import threshold_metrics
from coordinator.validation.combine import SuppressedAggregateError, combine_aggregates, common_edges, rebin
from coordinator.validation.conformal import (
    bisect_class_quantiles,
    bisect_quantile,
    conformal_stats,
    thresholds_from_dp_histograms,
    fcp_rank,
    quantile_from_histogram,
    quantile_from_site_histograms,
    thresholds_from_histograms,
    thresholds_from_site_histograms,
)
from coordinator.validation.correlation import pearson_from_sums
from coordinator.validation.decision import net_benefit
from coordinator.validation.evaluate import pooled_metrics, site_metrics
from coordinator.validation.intervals import clopper_pearson_ci, proportion_ci, wilson_ci
from coordinator.validation.meta import random_effects

__all__ = [
    "SuppressedAggregateError",
    "auc_difference_from_site",
    "auc_difference_unpaired",
    "auc_from_histograms",
    "auc_from_site_histograms",
    "bisect_class_quantiles",
    "bisect_quantile",
    "brier_scores",
    "clopper_pearson_ci",
    "combine_aggregates",
    "common_edges",
    "conformal_stats",
    "thresholds_from_dp_histograms",
    "fcp_rank",
    "fit_logistic_calibration",
    "fit_platt",
    "fit_temperature",
    "net_benefit",
    "observed_expected",
    "pearson_from_sums",
    "pooled_metrics",
    "proportion_ci",
    "quantile_from_histogram",
    "random_effects",
    "rebin",
    "reliability",
    "roc_from_histograms",
    "site_metrics",
    "threshold_metrics",
    "quantile_from_site_histograms",
    "thresholds_from_histograms",
    "thresholds_from_site_histograms",
    "wilson_ci",
]
