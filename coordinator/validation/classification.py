"""Sensitivity, specificity, PPV and NPV at a threshold from summed confusion counts."""

from __future__ import annotations

import numpy as np

from coordinator.validation.intervals import proportion_ci
from coordinator.validation.results import Proportion

Aggregate = dict[str, "np.ndarray | float | int"]


def _prop(x: int, n: int, method: str) -> Proportion | None:
    if n == 0:
        return None
    lo, hi = proportion_ci(x, n, method)
    return Proportion(x / n, lo, hi, int(x), int(n), method)


def threshold_metrics(agg: Aggregate, threshold: float, method: str = "wilson") -> dict[str, Proportion | None]:
    """Se = TP/(TP+FN), Sp = TN/(TN+FP), PPV = TP/(TP+FP), NPV = TN/(TN+FN) at ``threshold``.

    ``agg`` is a (combined) :func:`site_client.evaluation.confusion_counts` aggregate that must hold the
    threshold (it may have been dropped by small-cell merging: then a clear error). None = undefined (0/0).
    """
    t = np.asarray(agg["thresholds"], dtype=float)
    hit = np.flatnonzero(np.abs(t - threshold) <= 1e-12)
    if hit.size == 0:
        raise ValueError(
            f"threshold {threshold} is not in the confusion counts (available: {t.tolist()}); "
            "it may have been dropped by small-cell merging at a site"
        )
    i = int(hit[0])
    tp, fp = int(np.asarray(agg["n_tp"])[i]), int(np.asarray(agg["n_fp"])[i])
    fn, tn = int(np.asarray(agg["n_fn"])[i]), int(np.asarray(agg["n_tn"])[i])
    return {
        "sensitivity": _prop(tp, tp + fn, method),
        "specificity": _prop(tn, tn + fp, method),
        "ppv": _prop(tp, tp + fp, method),
        "npv": _prop(tn, tn + fn, method),
    }
