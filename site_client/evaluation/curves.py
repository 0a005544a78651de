"""Held-out ROC and reliability curves as k-anonymous step curves on the site's raw predictions.

Both are released as counts per *step* (a run of patients adjacent in predicted probability), never as score
values or thresholds, padded with empty steps to a length fixed by the protocol (so the message shape does not
depend on the number of patients). Every step holds 0 or >= k patients of each class, so every released count
(and every cumulative (FP, TP) point of the ROC) moves by 0 or >= k cases of a class.

**ROC steps** (highest score first). The patients are grouped by distinct predicted probability, in decreasing
order; adjacent groups are merged by :func:`site_client.evaluation.privacy.merge_groups` (optimal: fewest
positive-negative pairs within a step, the numerator of the curve's area bound), then, if more than
``max_steps`` remain, the adjacent pair adding the fewest such pairs is merged until ``max_steps`` remain.
Step g moves the curve from (FP_{g-1}, TP_{g-1}) to (FP_g, TP_g) by ΔFP_g negatives and ΔTP_g positives. The
exact empirical ROC (ties as diagonal segments) passes through every released point; inside step g it is some
monotone path, whose area lies in [0, ΔFP_g·ΔTP_g]/(n⁺n⁻) above the step's lower-right corner. Hence the exact
AUC = Σ_g ΔFP_g·(TP_{g-1} + f_g·ΔTP_g)/(n⁺n⁻) with unknown f_g ∈ [0, 1], and a curve drawn with f_g = ½
(straight chords) has |area − AUC| <= ½·Σ_g ΔFP_g·ΔTP_g/(n⁺n⁻). The coordinator reconciles the drawing with the
exact AUC the site releases (:mod:`coordinator.validation.curves`).

**Reliability groups** (lowest probability first). The sorted patients are cut into ``n_groups`` groups of
about equal size at distinct probability values (the cut depends on the predictions only); adjacent groups are
then merged by ``merge_groups`` until each holds 0 or >= k patients of each class (the only use of the outcomes). Released
per group: negatives, positives and Σp. The groups partition all patients, so Σ_g (pos_g − Σp_g) = O − E: the
count-weighted mean gap between the observed and mean predicted rates is mean(y) − mean(p), whose sign is the
sign of calibration-in-the-large (the offset model's score equation at intercept 0 is Σ(y − p)).
"""

from __future__ import annotations

import numpy as np

from site_client.evaluation._checks import as_labels, as_probabilities
from site_client.evaluation.privacy import merge_groups

Aggregate = dict[str, "np.ndarray | float | int"]


def _suppressed(k: int) -> Aggregate:
    return {"suppressed": 1, "k": int(k)}


def _padded(values: np.ndarray, length: int, dtype: type) -> np.ndarray:
    out = np.zeros(length, dtype=dtype)
    out[: values.size] = values
    return out


def _group_sums(values: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """Column sums of ``values`` (rows × columns) over each group of adjacent columns."""
    return np.add.reduceat(values, [g[0] for g in groups], axis=-1)


def _coarsen(neg: np.ndarray, pos: np.ndarray, max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge adjacent steps (the pair adding the fewest within-step positive-negative pairs, earliest on ties)
    until at most ``max_steps`` remain. Sums of counts that are each 0 or >= k are again 0 or >= k."""
    neg, pos = list(neg), list(pos)
    while len(neg) > max_steps:
        added = [neg[i] * pos[i + 1] + pos[i] * neg[i + 1] for i in range(len(neg) - 1)]
        i = int(np.argmin(added))
        neg[i : i + 2] = [neg[i] + neg[i + 1]]
        pos[i : i + 2] = [pos[i] + pos[i + 1]]
    return np.asarray(neg, dtype=np.int64), np.asarray(pos, dtype=np.int64)


def roc_steps(p: object, y: object, k: int, max_steps: int, site: str | None = None) -> Aggregate:
    """ROC step counts ``bin_n_neg`` / ``bin_n_pos`` (length ``max_steps``, highest scores first, zero-padded).

    Suppressed when a class has 1..k-1 patients (no valid step exists). See the module docstring."""
    p = as_probabilities(p, "p", site)
    y = as_labels(y, p.size, "y", site)
    if int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    values, block = np.unique(-p, return_inverse=True)  # distinct scores, highest first
    neg = np.bincount(block[y == 0], minlength=values.size).astype(np.int64)
    pos = np.bincount(block[y == 1], minlength=values.size).astype(np.int64)
    groups = merge_groups(np.stack([neg, pos]), int(k))
    if groups is None:
        return _suppressed(k)
    step_neg, step_pos = _coarsen(_group_sums(neg, groups), _group_sums(pos, groups), int(max_steps))
    return {"bin_n_neg": _padded(step_neg, int(max_steps), np.int64),
            "bin_n_pos": _padded(step_pos, int(max_steps), np.int64)}


def reliability_groups(p: object, y: object, k: int, n_groups: int, site: str | None = None) -> Aggregate:
    """Reliability groups ``bin_n_neg`` / ``bin_n_pos`` / ``bin_sum_p`` (length ``n_groups``, lowest predicted
    probability first, zero-padded). Suppressed when a class has 1..k-1 patients. See the module docstring."""
    p = as_probabilities(p, "p", site)
    y = as_labels(y, p.size, "y", site)
    if int(n_groups) != n_groups or n_groups < 1:
        raise ValueError(f"n_groups must be a positive integer, got {n_groups!r}")
    n_groups = int(n_groups)
    values, block = np.unique(p, return_inverse=True)  # distinct probabilities, lowest first
    size = np.bincount(block, minlength=values.size)
    below = np.concatenate([[0], np.cumsum(size)[:-1]])  # patients with a smaller probability
    quantile_group = np.minimum(n_groups - 1, (below * n_groups) // max(p.size, 1))  # by rank, not by outcome
    group = quantile_group[block]
    neg = np.bincount(group[y == 0], minlength=n_groups).astype(np.int64)
    pos = np.bincount(group[y == 1], minlength=n_groups).astype(np.int64)
    sum_p = np.bincount(group, weights=p, minlength=n_groups)
    used = (neg + pos) > 0
    neg, pos, sum_p = neg[used], pos[used], sum_p[used]
    groups = merge_groups(np.stack([neg, pos]), int(k)) if neg.size else None
    if groups is None:
        return _suppressed(k)
    return {"bin_n_neg": _padded(_group_sums(neg, groups), n_groups, np.int64),
            "bin_n_pos": _padded(_group_sums(pos, groups), n_groups, np.int64),
            "bin_sum_p": _padded(_group_sums(sum_p, groups), n_groups, np.float64)}
