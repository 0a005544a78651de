"""Drawing the held-out ROC and reliability curves from a site's k-anonymous step counts.

**ROC.** The site releases, highest scores first, per step g the negatives ΔFP_g and positives ΔTP_g it holds
(each 0 or >= k; :mod:`site_client.evaluation.curves`). With FP_g, TP_g the cumulative counts, the released
points (FP_g/n⁻, TP_g/n⁺) lie on the exact empirical ROC. Inside step g the exact curve is an unknown monotone
path in the ΔFP_g × ΔTP_g box; with f_g ∈ [0, 1] the fraction of the box under it,

    AUC·n⁺n⁻ = S + Σ_g f_g·B_g,   S = Σ_g ΔFP_g·TP_{g-1},   B_g = ΔFP_g·ΔTP_g.

* Chords (f_g = ½) give area (S + ½B)/(n⁺n⁻), B = ΣB_g, so |chord area − AUC| <= ½·B/(n⁺n⁻): the **step bound**,
  how far the area of any curve through the released points can be from the chord curve.
* The site also releases the exact AUC (ties ½), so the drawing is **reconciled**: every box that holds both
  classes gets the same fraction f = (AUC·n⁺n⁻ − S)/B, which lies in [0, 1] because each true f_g does, and is
  drawn as a two-segment path of area f·B_g: for f >= ½ up by (2f − 1)·ΔTP_g, then a straight segment to the
  box's upper-right corner; for f < ½ a straight segment to (FP_g, TP_{g-1} + 2f·ΔTP_g), then up. The area
  under the drawn curve is then the exact AUC (to rounding); its shape inside each box stays within the box.
  Without an exact AUC (or when a reply is inconsistent with it) the chords are drawn and the step bound is the
  stated bound.

**Reliability.** The site releases per group (lowest predictions first) negatives, positives and Σp; each
non-empty group is one point (mean p, observed rate, Wilson 95% CI). Because the groups partition the site's
patients, Σ_g n_g·(observed_g − mean p_g) = O − E exactly, the quantity whose sign calibration-in-the-large
shares; the figure overlays the site's fitted logistic calibration curve p ↦ σ(a + b·logit p) (the intercept and
slope it released), so points and line come from the same patients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coordinator.validation.intervals import wilson_ci
from coordinator.validation.results import ReliabilityPoint

Aggregate = dict[str, "np.ndarray | float | int"]
#: |area − AUC| a reconciled drawing may show from floating-point rounding alone.
RECONCILE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class DrawnROC:
    """Vertices of the drawn curve from (0, 0) to (1, 1), its area, and the bounds stated beside it."""

    fpr: list[float]
    tpr: list[float]
    area: float
    bound: float        # stated bound on |area − exact AUC| (RECONCILE_TOLERANCE when reconciled)
    step_bound: float   # ½·Σ ΔFP·ΔTP/(n⁺n⁻): the within-step uncertainty of the curve's shape
    reconciled: bool
    n_steps: int


def _steps(agg: Aggregate, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    if agg.get("suppressed", 0):
        raise ValueError("the site's curve was suppressed (a class had fewer than k patients)")
    neg = np.asarray(agg["bin_n_neg"], dtype=np.int64)
    pos = np.asarray(agg["bin_n_pos"], dtype=np.int64)
    if neg.shape != pos.shape or neg.ndim != 1 or np.any(neg < 0) or np.any(pos < 0):
        raise ValueError("curve step counts must be two 1-D arrays of non-negative counts of one length")
    if k is not None and not np.all(((neg == 0) | (neg >= k)) & ((pos == 0) | (pos >= k))):
        raise ValueError(f"a curve step holds 1..{k - 1} patients of a class: not drawn")
    keep = (neg + pos) > 0
    return neg[keep], pos[keep]


def area_under(fpr: object, tpr: object) -> float:
    """Trapezoid area under a polyline given by its vertices (any monotone drawing)."""
    x, y = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def roc_from_steps(agg: Aggregate, exact_auc: float | None = None, k: int | None = None) -> DrawnROC:
    """The drawn ROC of one site (module docstring): reconciled to ``exact_auc`` when given and consistent."""
    neg, pos = _steps(agg, k)
    n_neg, n_pos = int(neg.sum()), int(pos.sum())
    if n_neg == 0 or n_pos == 0:
        raise ValueError("an ROC curve needs both classes")
    pairs = float(n_neg) * float(n_pos)
    tp_before = np.concatenate([[0], np.cumsum(pos)[:-1]]).astype(float)
    staircase = float(np.sum(neg * tp_before))
    boxes = (neg * pos).astype(float)
    box_total = float(boxes.sum())
    step_bound = 0.5 * box_total / pairs
    f, reconciled = 0.5, False
    if exact_auc is not None and np.isfinite(exact_auc) and box_total > 0:
        wanted = (float(exact_auc) * pairs - staircase) / box_total
        if -1e-9 <= wanted <= 1 + 1e-9:  # outside: the reply contradicts its own AUC; draw chords, say so
            f, reconciled = min(max(wanted, 0.0), 1.0), True
    elif exact_auc is not None and box_total == 0:
        reconciled = abs(staircase / pairs - float(exact_auc)) <= RECONCILE_TOLERANCE
    x, y = [0.0], [0.0]
    fp, tp = 0.0, 0.0
    for dn, dp in zip(neg.astype(float), pos.astype(float)):
        if dn > 0 and dp > 0:  # a mixed box: one interior knot (module docstring)
            if f >= 0.5:
                x.append(fp); y.append(tp + (2 * f - 1) * dp)
            else:
                x.append(fp + dn); y.append(tp + 2 * f * dp)
        fp, tp = fp + dn, tp + dp
        x.append(fp); y.append(tp)
    fpr, tpr = [v / n_neg for v in x], [v / n_pos for v in y]
    area = area_under(fpr, tpr)
    bound = RECONCILE_TOLERANCE if reconciled else step_bound
    return DrawnROC(fpr, tpr, area, bound, step_bound, reconciled, int(neg.size))


def drawn_counts_match(agg: Aggregate, n_pos: int, n_neg: int) -> bool:
    """The steps hold exactly the site's announced class totals (a reply consistent with its own AUC counts)."""
    return int(np.sum(agg["bin_n_pos"])) == int(n_pos) and int(np.sum(agg["bin_n_neg"])) == int(n_neg)


def reliability_from_groups(agg: Aggregate, k: int | None = None) -> list[ReliabilityPoint]:
    """One point per non-empty group: mean predicted, observed rate, Wilson 95% CI (module docstring).
    ``bin_low``/``bin_high`` are the group's mean p (the site releases no group edges)."""
    neg, pos = _steps(agg, k)
    sum_p = np.asarray(agg["bin_sum_p"], dtype=float)
    sum_p = sum_p[(np.asarray(agg["bin_n_neg"]) + np.asarray(agg["bin_n_pos"])) > 0]
    points = []
    for dn, dp, sp in zip(neg, pos, sum_p):
        n = int(dn + dp)
        mean_p = float(sp / n)
        if not 0.0 <= mean_p <= 1.0:
            raise ValueError("a reliability group's mean predicted probability is outside [0, 1]")
        lo, hi = wilson_ci(int(dp), n)
        points.append(ReliabilityPoint(mean_p, mean_p, n, mean_p, float(dp / n), lo, hi))
    return points
