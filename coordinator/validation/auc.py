"""AUC, DeLong variance and ROC curve from pooled class-specific score histograms.

With H±(b) the counts per bin, n± = ΣH±, C±(b) = Σ_{b'<=b} H±(b'):

* AUC = Σ_b H⁺(b)·[C⁻(b-1) + ½H⁻(b)] / (n⁺n⁻) — Mann-Whitney on bin indices, ties (same bin) count ½;
* |AUC_binned - AUC_raw| <= ½·Σ_b H⁺(b)H⁻(b)/(n⁺n⁻) — only within-bin pairs can be ordered differently;
* DeLong: V10(b) = [C⁻(b-1) + ½H⁻(b)]/n⁻, V01(b) = [n⁺ - C⁺(b) + ½H⁺(b)]/n⁺,
  S10 = ΣH⁺(V10 - AUC)²/(n⁺-1), S01 = ΣH⁻(V01 - AUC)²/(n⁻-1), Var = S10/n⁺ + S01/n⁻ (placements and variance
  from :mod:`fedmath.auc`, the formulas the sites use on their raw scores);
* 95% CI: logit(AUC) ± 1.96·SE/(AUC(1-AUC)), back-transformed (stays inside (0, 1)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from coordinator.validation.results import AUCDifference, AUCEstimate
from fedmath.auc import delong_variance, grouped_placements, kernel_placements
from fedmath.logistic import sigmoid

Z95 = float(stats.norm.ppf(0.975))
#: A histogram AUC whose binning bound exceeds this is flagged, never printed as a result (the held-out sites'
#: exact AUCs and their random-effects summary are the figures to read).
BINNING_BOUND_LIMIT = 0.02
Aggregate = dict[str, "np.ndarray | float | int"]


def _hist(h: object, name: str) -> np.ndarray:
    a = np.asarray(h, dtype=float)
    if a.ndim != 1 or np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a 1-D array of non-negative counts, got {a!r}")
    return a


def auc_from_histograms(h_neg: object, h_pos: object, level: float = 0.95) -> AUCEstimate:
    """AUC with DeLong SE, logit CI and binning bound from pooled histograms (same bins for both classes)."""
    hn, hp = _hist(h_neg, "negative-class histogram"), _hist(h_pos, "positive-class histogram")
    if hn.shape != hp.shape:
        raise ValueError(f"class histograms must share bins, got {hn.size} and {hp.size} bins")
    n_neg, n_pos = hn.sum(), hp.sum()
    if n_neg < 2 or n_pos < 2:
        raise ValueError(f"AUC and its DeLong variance need >= 2 cases per class, got {int(n_pos)} positive, {int(n_neg)} negative")
    v10, v01 = grouped_placements(hp, hn)
    auc = float(np.sum(hp * v10) / n_pos)
    bound = float(0.5 * np.sum(hp * hn) / (n_pos * n_neg))
    return _estimate(auc, v10, v01, hp, hn, bound, level)


def _delong(psi: np.ndarray, hp: np.ndarray, hn: np.ndarray, overlap: np.ndarray, level: float) -> AUCEstimate:
    """DeLong from a kernel ψ between positive groups (rows) and negative groups (columns) with counts."""
    n_pos, n_neg = hp.sum(), hn.sum()
    if n_neg < 2 or n_pos < 2:
        raise ValueError(f"AUC and its DeLong variance need >= 2 cases per class, got {int(n_pos)} positive, {int(n_neg)} negative")
    v10, v01 = kernel_placements(psi, hp, hn)
    auc = float(hp @ v10 / n_pos)
    bound = float(0.5 * (hp @ overlap @ hn) / (n_pos * n_neg))
    return _estimate(auc, v10, v01, hp, hn, bound, level)


def _estimate(
    auc: float, v10: np.ndarray, v01: np.ndarray, hp: np.ndarray, hn: np.ndarray, bound: float, level: float
) -> AUCEstimate:
    """DeLong SE from the placement values, Var = S10/n+ + S01/n-, and the CI on the logit scale."""
    n_pos, n_neg = hp.sum(), hn.sum()
    se = math.sqrt(delong_variance(v10, v01, hp, hn))
    z = float(stats.norm.ppf(0.5 + level / 2))
    if 0 < auc < 1:
        lg = math.log(auc / (1 - auc))
        half = z * se / (auc * (1 - auc))
        lo, hi = (float(v) for v in sigmoid(np.array([lg - half, lg + half])))
    else:  # perfect separation: logit undefined, report the degenerate interval
        lo = hi = auc
    return AUCEstimate(auc=auc, se=se, ci_low=lo, ci_high=hi, binning_bound=bound, n_pos=int(n_pos), n_neg=int(n_neg))


def auc_from_site_histograms(site_aggs: Sequence[Aggregate], level: float = 0.95) -> AUCEstimate:
    """Pooled AUC + DeLong from per-site ``class_histograms`` whose bins may have been merged differently.

    A positive in interval P and a negative in interval N are ordered when the intervals do not overlap
    (ψ = 1 if N lies below P, 0 if above) and count ½ when they overlap (same or nested bins). With identical
    edges at every site this is exactly :func:`auc_from_histograms` on the summed histograms; the bound
    ½·Σ_overlapping H⁺H⁻/(n⁺n⁻) still bounds |AUC - AUC on raw scores|, and DeLong is computed on the same
    kernel ψ (placement values per interval).
    """
    lo_p, hi_p, hp, lo_n, hi_n, hn = [], [], [], [], [], []
    for j, a in enumerate(site_aggs):
        if a.get("suppressed", 0):
            raise ValueError(f"site #{j}: score histogram suppressed (fewer than k cases of a class): cannot pool AUC")
        e = np.asarray(a["edges"], dtype=float)
        lo_p.append(e[:-1]); hi_p.append(e[1:]); hp.append(np.asarray(a["bin_n_pos"], dtype=float))
        lo_n.append(e[:-1]); hi_n.append(e[1:]); hn.append(np.asarray(a["bin_n_neg"], dtype=float))
    LP, HP, CP = (np.concatenate(x) for x in (lo_p, hi_p, hp))
    LN, HN, CN = (np.concatenate(x) for x in (lo_n, hi_n, hn))
    keep_p, keep_n = CP > 0, CN > 0
    LP, HP, CP, LN, HN, CN = LP[keep_p], HP[keep_p], CP[keep_p], LN[keep_n], HN[keep_n], CN[keep_n]
    above = LP[:, None] >= HN[None, :]  # the negative's interval lies entirely below the positive's
    below = HP[:, None] <= LN[None, :]
    overlap = ~(above | below)
    psi = above + 0.5 * overlap
    return _delong(psi, CP, CN, overlap.astype(float), level)


def binning_flag(est: AUCEstimate | None) -> str | None:
    """Why a histogram AUC must not be read as a result (bound above :data:`BINNING_BOUND_LIMIT`), else None."""
    if est is None or est.binning_bound <= BINNING_BOUND_LIMIT:
        return None
    return (f"AUC from k-merged histograms {est.auc:.3f} has binning bound ±{est.binning_bound:.3f} > "
            f"{BINNING_BOUND_LIMIT}: not a result; read the random-effects AUC of the held-out sites' exact AUCs")


def roc_from_histograms(edges: object, h_neg: object, h_pos: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points at every edge t (predicted positive iff score bin starts at or above t): (thresholds, FPR, TPR)."""
    hn, hp = _hist(h_neg, "negative-class histogram"), _hist(h_pos, "positive-class histogram")
    e = np.asarray(edges, dtype=float)
    tail_n = np.concatenate([np.cumsum(hn[::-1])[::-1], [0.0]])
    tail_p = np.concatenate([np.cumsum(hp[::-1])[::-1], [0.0]])
    return e, tail_n / hn.sum(), tail_p / hp.sum()


def auc_difference_unpaired(model: AUCEstimate, baseline: AUCEstimate, level: float = 0.95) -> AUCDifference:
    """ΔAUC = AUC_model - AUC_baseline with Var = Var_model + Var_baseline (covariance ignored).

    Paired DeLong needs, per patient, both models' scores — the joint (2-D) histogram — which the per-model
    aggregates do not carry. Ignoring the covariance is conservative (too wide) whenever the two models'
    placement values are positively correlated, which is the usual case for two models of the same patients;
    it is anti-conservative only if they are negatively correlated.
    """
    d = model.auc - baseline.auc
    se = math.sqrt(model.se**2 + baseline.se**2)
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = float(2 * stats.norm.sf(abs(d) / se)) if se > 0 else (0.0 if d != 0 else 1.0)
    return AUCDifference(d, se, d - z * se, d + z * se, p, "unpaired DeLong (covariance ignored; conservative if positive)")


def auc_difference_from_site(agg: Aggregate, level: float = 0.95) -> AUCDifference:
    """ΔAUC with the exact paired DeLong SE computed at the site (``paired_auc_difference``)."""
    if agg.get("suppressed", 0):
        raise ValueError("the site's paired AUC difference was suppressed (a class had fewer than k patients)")
    d, se = float(agg["difference"]), float(agg["se_difference"])
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = float(2 * stats.norm.sf(abs(d) / se)) if se > 0 else (0.0 if d != 0 else 1.0)
    return AUCDifference(d, se, d - z * se, d + z * se, p, "paired DeLong computed at the site")
