"""Paired comparison of two models' AUC at one site (e.g. radiomic model vs volume-only baseline).

The paired DeLong covariance needs both models' scores of the *same* patients, which no histogram carries; a
held-out site has them, so it computes ΔAUC and its exact paired SE locally (:func:`fedmath.auc.paired_delong`)
and releases only these numbers and its class counts (subject to small-cell control).
"""

from __future__ import annotations

from fedmath.auc import paired_delong
from site_client.evaluation._checks import as_labels, as_probabilities

Aggregate = dict[str, "np.ndarray | float | int"]  # noqa: F821


def paired_auc_difference(p_model: object, p_baseline: object, y: object, site: str | None = None) -> Aggregate:
    """AUC of each model, Δ = AUC_model - AUC_baseline and its paired DeLong SE (DeLong et al. 1988)."""
    where = f" at site {site!r}" if site else ""
    pa = as_probabilities(p_model, "p_model", site)
    pb = as_probabilities(p_baseline, "p_baseline", site)
    if pb.size != pa.size:
        raise ValueError(f"p_baseline{where} has {pb.size} rows, p_model {pa.size}")
    y = as_labels(y, pa.size, "y", site)
    n1, n0 = int(y.sum()), int(pa.size - y.sum())
    if n1 < 2 or n0 < 2:
        raise ValueError(f"paired AUC difference{where} needs >= 2 cases per class, got {n1} positive and {n0} negative")
    d = paired_delong(pa, pb, y)
    return {
        "n_events": n1,
        "n_nonevents": n0,
        "auc_model": d["auc_a"],
        "auc_baseline": d["auc_b"],
        "difference": d["difference"],
        "se_difference": d["se_difference"],
    }
