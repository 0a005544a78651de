"""AUC on raw scores with DeLong's variance, single and paired (DeLong, DeLong & Clarke-Pearson 1988).

Placement values (ties count ½; :func:`grouped_placements` is their one formula, for cases grouped by score or
by histogram bin): for each positive i, V10_i = (#{neg < s_i} + ½#{neg = s_i})/n⁻; for each negative
j, V01_j = (#{pos > s_j} + ½#{pos = s_j})/n⁺. AUC = mean V10 = mean V01.

* Var(AUC) = S10/n⁺ + S01/n⁻ with S10, S01 the sample variances (ddof 1) of V10, V01 (:func:`delong_variance`).
* Two models a, b on the same patients: Δ = AUC_a - AUC_b and
  Var(Δ) = Var(V10_a - V10_b)/n⁺ + Var(V01_a - V01_b)/n⁻, which carries the covariance of the two models'
  placements (the unpaired Var_a + Var_b ignores it and is far too wide when the scores correlate).
* AUC at the boundary (0 or 1, perfect separation) has DeLong variance 0. For pooling it is moved half a pair
  inside, A = 1 - 1/(2n⁺n⁻) (resp. 1/(2n⁺n⁻)), with the Hanley-McNeil (1982) variance at that A:
  [A(1-A) + (n⁺-1)(A/(2-A) - A²) + (n⁻-1)(2A²/(1+A) - A²)]/(n⁺n⁻) — see :func:`continuity_corrected`.

Pure numpy; sites call these on their own scores and release only the numbers; the coordinator's histogram AUC
(coordinator.validation.auc) computes its placements and variance with the same functions.
"""

from __future__ import annotations

import math

import numpy as np


def grouped_placements(h_pos: np.ndarray, h_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Placement values of ordered groups (increasing score; the cases of one group tie) with class counts H±(b),
    C±(b) = Σ_{b'<=b} H±(b'): V10(b) = [C⁻(b-1) + ½H⁻(b)]/n⁻, V01(b) = [n⁺ - C⁺(b) + ½H⁺(b)]/n⁺.

    The groups are a site's distinct scores (:func:`placements`) or the bins of a pooled histogram."""
    h_pos, h_neg = np.asarray(h_pos, dtype=float), np.asarray(h_neg, dtype=float)
    n_pos, n_neg = h_pos.sum(), h_neg.sum()
    c_neg_before = np.cumsum(h_neg) - h_neg
    v10 = (c_neg_before + 0.5 * h_neg) / n_neg
    v01 = (n_pos - np.cumsum(h_pos) + 0.5 * h_pos) / n_pos
    return v10, v01


def kernel_placements(psi: np.ndarray, h_pos: np.ndarray, h_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Placement values from a kernel ψ(P, N) ∈ {0, ½, 1} between positive groups (rows) and negative groups
    (columns) with counts H±: V10 = ψH⁻/n⁻ per positive group, V01 = H⁺ψ/n⁺ per negative group (groups that are
    intervals which may overlap, e.g. sites' differently merged histogram bins)."""
    h_pos, h_neg = np.asarray(h_pos, dtype=float), np.asarray(h_neg, dtype=float)
    return psi @ h_neg / h_neg.sum(), h_pos @ psi / h_pos.sum()


def placements(score: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V10 per positive, V01 per negative) in the cases' order: :func:`grouped_placements` over the distinct
    scores (module docstring)."""
    score = np.asarray(score, dtype=float)
    y = np.asarray(y)
    distinct, group = np.unique(score, return_inverse=True)
    pos_group, neg_group = group[y == 1], group[y == 0]
    v10, v01 = grouped_placements(np.bincount(pos_group, minlength=distinct.size),
                                  np.bincount(neg_group, minlength=distinct.size))
    return v10[pos_group], v01[neg_group]


def delong_variance(v10: np.ndarray, v01: np.ndarray, w_pos: np.ndarray | None = None,
                    w_neg: np.ndarray | None = None) -> float:
    """Var = S10/n⁺ + S01/n⁻, S10 = Σw⁺(V10 - V̄10)²/(n⁺ - 1), S01 likewise, V̄ the w-weighted means, n± = Σw±
    (weights: cases per group; none: one case each). The variance of AUC, or of ΔAUC given the placement
    differences of two models on the same cases."""
    v10, v01 = np.asarray(v10, dtype=float), np.asarray(v01, dtype=float)
    w_pos = np.ones_like(v10) if w_pos is None else np.asarray(w_pos, dtype=float)
    w_neg = np.ones_like(v01) if w_neg is None else np.asarray(w_neg, dtype=float)
    n_pos, n_neg = w_pos.sum(), w_neg.sum()
    s10 = float(np.sum(w_pos * (v10 - np.sum(w_pos * v10) / n_pos) ** 2) / (n_pos - 1))
    s01 = float(np.sum(w_neg * (v01 - np.sum(w_neg * v01) / n_neg) ** 2) / (n_neg - 1))
    return s10 / n_pos + s01 / n_neg


def _class_sizes(y: np.ndarray) -> tuple[int, int]:
    n1 = int(np.sum(np.asarray(y) == 1))
    n0 = int(np.asarray(y).size - n1)
    if n1 < 2 or n0 < 2:
        raise ValueError(f"AUC and its DeLong variance need >= 2 cases per class, got {n1} positive and {n0} negative")
    return n1, n0


def delong_auc(score: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(AUC, DeLong SE) of one model's scores."""
    _class_sizes(y)
    v10, v01 = placements(score, y)
    return float(v10.mean()), math.sqrt(delong_variance(v10, v01))


def paired_delong(score_a: np.ndarray, score_b: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """AUC of a and b on the same patients, Δ = AUC_a - AUC_b and its paired DeLong SE (and the correlation of
    the two AUC estimates, for reporting)."""
    if np.asarray(score_a).shape != np.asarray(score_b).shape:
        raise ValueError(f"paired AUC needs both models' scores of the same patients, got {np.size(score_a)} and {np.size(score_b)}")
    _class_sizes(y)
    a10, a01 = placements(score_a, y)
    b10, b01 = placements(score_b, y)
    var_a, var_b = delong_variance(a10, a01), delong_variance(b10, b01)
    var_d = delong_variance(a10 - b10, a01 - b01)
    cov = (var_a + var_b - var_d) / 2
    corr = cov / math.sqrt(var_a * var_b) if var_a > 0 and var_b > 0 else float("nan")
    return {
        "auc_a": float(a10.mean()),
        "auc_b": float(b10.mean()),
        "difference": float(a10.mean() - b10.mean()),
        "se_difference": math.sqrt(max(var_d, 0.0)),
        "correlation": float(corr),
    }


def hanley_mcneil_variance(auc: float, n_pos: int, n_neg: int) -> float:
    """Var(AUC) = [A(1-A) + (n⁺-1)(Q1 - A²) + (n⁻-1)(Q2 - A²)]/(n⁺n⁻), Q1 = A/(2-A), Q2 = 2A²/(1+A)."""
    a = float(auc)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)


def continuity_corrected(auc: float, se: float, n_pos: int, n_neg: int) -> tuple[float, float, bool]:
    """(AUC, SE, adjusted) usable on the logit scale: unchanged when 0 < AUC < 1 and SE > 0; otherwise AUC moved
    half a pair inside (0, 1) and the Hanley-McNeil SE at that value (module docstring)."""
    if 0 < auc < 1 and se > 0:
        return float(auc), float(se), False
    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"continuity correction needs both classes, got {n_pos} positive and {n_neg} negative")
    half_pair = 1 / (2 * n_pos * n_neg)
    a = min(max(float(auc), half_pair), 1 - half_pair)
    return a, math.sqrt(hanley_mcneil_variance(a, n_pos, n_neg)), True
