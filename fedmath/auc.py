"""AUC on raw scores with DeLong's variance, single and paired (DeLong, DeLong & Clarke-Pearson 1988).

Placement values (ties count ½): for each positive i, V10_i = (#{neg < s_i} + ½#{neg = s_i})/n⁻; for each negative
j, V01_j = (#{pos > s_j} + ½#{pos = s_j})/n⁺. AUC = mean V10 = mean V01.

* Var(AUC) = S10/n⁺ + S01/n⁻ with S10, S01 the sample variances (ddof 1) of V10, V01.
* Two models a, b on the same patients: Δ = AUC_a - AUC_b and
  Var(Δ) = Var(V10_a - V10_b)/n⁺ + Var(V01_a - V01_b)/n⁻, which carries the covariance of the two models'
  placements (the unpaired Var_a + Var_b ignores it and is far too wide when the scores correlate).
* AUC at the boundary (0 or 1, perfect separation) has DeLong variance 0. For pooling it is moved half a pair
  inside, A = 1 - 1/(2n⁺n⁻) (resp. 1/(2n⁺n⁻)), with the Hanley-McNeil (1982) variance at that A:
  [A(1-A) + (n⁺-1)(A/(2-A) - A²) + (n⁻-1)(2A²/(1+A) - A²)]/(n⁺n⁻) — see :func:`continuity_corrected`.

Pure numpy; sites call these on their own scores and release only the numbers.
"""

from __future__ import annotations

import math

import numpy as np


def placements(score: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V10 per positive, V01 per negative) as defined in the module docstring."""
    score = np.asarray(score, dtype=float)
    y = np.asarray(y)
    sp, sn = score[y == 1], score[y == 0]
    pos, neg = np.sort(sp), np.sort(sn)
    below, upto = np.searchsorted(neg, sp, "left"), np.searchsorted(neg, sp, "right")
    v10 = (below + 0.5 * (upto - below)) / neg.size
    below, upto = np.searchsorted(pos, sn, "left"), np.searchsorted(pos, sn, "right")
    v01 = ((pos.size - upto) + 0.5 * (upto - below)) / pos.size
    return v10, v01


def _class_sizes(y: np.ndarray) -> tuple[int, int]:
    n1 = int(np.sum(np.asarray(y) == 1))
    n0 = int(np.asarray(y).size - n1)
    if n1 < 2 or n0 < 2:
        raise ValueError(f"AUC and its DeLong variance need >= 2 cases per class, got {n1} positive and {n0} negative")
    return n1, n0


def delong_auc(score: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(AUC, DeLong SE) of one model's scores."""
    n1, n0 = _class_sizes(y)
    v10, v01 = placements(score, y)
    return float(v10.mean()), math.sqrt(v10.var(ddof=1) / n1 + v01.var(ddof=1) / n0)


def paired_delong(score_a: np.ndarray, score_b: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """AUC of a and b on the same patients, Δ = AUC_a - AUC_b and its paired DeLong SE (and the correlation of
    the two AUC estimates, for reporting)."""
    if np.asarray(score_a).shape != np.asarray(score_b).shape:
        raise ValueError(f"paired AUC needs both models' scores of the same patients, got {np.size(score_a)} and {np.size(score_b)}")
    n1, n0 = _class_sizes(y)
    a10, a01 = placements(score_a, y)
    b10, b01 = placements(score_b, y)
    var_a = a10.var(ddof=1) / n1 + a01.var(ddof=1) / n0
    var_b = b10.var(ddof=1) / n1 + b01.var(ddof=1) / n0
    var_d = (a10 - b10).var(ddof=1) / n1 + (a01 - b01).var(ddof=1) / n0
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
