"""Paired comparison of two models' AUC at one site (e.g. radiomic model vs volume-only baseline).

The paired DeLong covariance needs both models' scores of the *same* patients, which no histogram carries; a
held-out site has them, so it computes ΔAUC and its exact paired SE locally and releases only these numbers
(plus its class counts, subject to small-cell control).
"""

from __future__ import annotations

import numpy as np

from site_client.evaluation._checks import as_labels, as_probabilities

Aggregate = dict[str, "np.ndarray | float | int"]


def _placements(score: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V10 per positive (share of negatives below, ties ½) and V01 per negative (share of positives above)."""
    pos, neg = np.sort(score[y == 1]), np.sort(score[y == 0])
    sp, sn = score[y == 1], score[y == 0]
    v10 = (np.searchsorted(neg, sp, "left") + 0.5 * (np.searchsorted(neg, sp, "right") - np.searchsorted(neg, sp, "left"))) / neg.size
    above = pos.size - np.searchsorted(pos, sn, "right")
    ties = np.searchsorted(pos, sn, "right") - np.searchsorted(pos, sn, "left")
    v01 = (above + 0.5 * ties) / pos.size
    return v10, v01


def paired_auc_difference(p_model: object, p_baseline: object, y: object, site: str | None = None) -> Aggregate:
    """AUC of each model, Δ = AUC_model - AUC_baseline and its paired DeLong SE (DeLong et al. 1988).

    Var(Δ) = Var(V10_a - V10_b)/n⁺ + Var(V01_a - V01_b)/n⁻ (sample variances, ddof 1), which includes the
    covariance of the two models' placement values.
    """
    pa = as_probabilities(p_model, "p_model", site)
    pb = as_probabilities(p_baseline, "p_baseline", site)
    if pb.size != pa.size:
        raise ValueError(f"p_baseline{' at site ' + repr(site) if site else ''} has {pb.size} rows, p_model {pa.size}")
    y = as_labels(y, pa.size, "y", site)
    n1, n0 = int(y.sum()), int(pa.size - y.sum())
    if n1 < 2 or n0 < 2:
        raise ValueError(f"paired AUC difference{' at site ' + repr(site) if site else ''} needs >= 2 cases per class, "
                         f"got {n1} positive and {n0} negative")
    a10, a01 = _placements(pa, y)
    b10, b01 = _placements(pb, y)
    var = np.var(a10 - b10, ddof=1) / n1 + np.var(a01 - b01, ddof=1) / n0
    return {
        "n_events": n1,
        "n_nonevents": n0,
        "auc_model": float(a10.mean()),
        "auc_baseline": float(b10.mean()),
        "difference": float(a10.mean() - b10.mean()),
        "se_difference": float(np.sqrt(var)),
    }
