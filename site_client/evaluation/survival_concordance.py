"""Site halves of survival discrimination at a held-out site: Harrell's C, Uno's C, time-dependent AUC, paired ΔC.

All are exact at the site (every pair of the site's own patients) and share one form, a weighted pair ratio
``theta = sum_ij w_i c_ij s_ij / sum_ij w_i c_ij`` with s_ij = 1 when eta_i > eta_j, 1/2 on ties (|diff| <= 1e-8),
0 otherwise:

* Harrell: c_ij = 1 when i had the event and T_i < T_j, or T_i = T_j and j is censored; w_i = 1.
* Uno (truncated at tau): as Harrell, but only T_i < tau, and w_i = G(T_i)^-2 with G the censoring Kaplan-Meier of
  the held-out site itself.
* Cumulative/dynamic AUC(t): c_ij = 1 when i had the event by t and T_j > t; w_i = 1 / G(T_i).

G is the reverse Kaplan-Meier with events leaving the risk set before censorings at the same time
(G(t) = prod_{s <= t} (1 - c_s / (Y_s - d_s)), as scikit-survival). The SE is the jackknife (leave one patient out,
removing every pair holding that patient; censoring weights held fixed): exact at the site from per-patient pair
sums A_l, B_l, since theta_(-l) = (A - A_l) / (B - B_l). The paired ΔC (model minus volume-only) uses the same
comparable pairs for both scores, so its jackknife carries the correlation between the two C's.
Memory is O(n^2) booleans per site (a few thousand patients).
"""

from __future__ import annotations

import numpy as np

from site_client.evaluation.survival_cox import SiteSurvivalError

TIED_RISK = 1e-8


def censoring_survival(time: np.ndarray, event: np.ndarray, at: np.ndarray) -> np.ndarray:
    """G(t): Kaplan-Meier of the censoring times at each t in ``at`` (events leave before censorings at a tie)."""
    unique, inverse = np.unique(time, return_inverse=True)
    d = np.bincount(inverse, weights=event, minlength=unique.size)
    c = np.bincount(inverse, weights=1 - event, minlength=unique.size)
    at_risk = time.size - np.concatenate([[0], np.cumsum(d + c)[:-1]])
    remaining = at_risk - d
    factor = np.where(remaining > 0, 1 - np.divide(c, remaining, out=np.zeros_like(c), where=remaining > 0), 1.0)
    g = np.cumprod(factor)
    index = np.searchsorted(unique, at, side="right") - 1
    return np.where(index >= 0, g[np.maximum(index, 0)], 1.0)


def _scores(eta: np.ndarray) -> np.ndarray:
    diff = eta[:, None] - eta[None, :]
    return np.where(np.abs(diff) <= TIED_RISK, 0.5, (diff > 0).astype(float))


def _comparable(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    earlier = time[:, None] < time[None, :]
    tied_censored = (time[:, None] == time[None, :]) & (event[None, :] == 0)
    return (event[:, None] == 1) & (earlier | tied_censored)


def _pair_ratio(weighted_pairs: np.ndarray, scores: list[np.ndarray]) -> tuple[list[float], np.ndarray, float]:
    """Estimates for each score matrix, their per-patient leave-one-out values (n x len(scores)), and B."""
    b = weighted_pairs.sum()
    if b <= 0:
        raise SiteSurvivalError("no comparable pair of patients at this site")
    b_l = weighted_pairs.sum(axis=0) + weighted_pairs.sum(axis=1)
    estimates, leave_out = [], []
    for s in scores:
        a_pairs = weighted_pairs * s
        a = a_pairs.sum()
        a_l = a_pairs.sum(axis=0) + a_pairs.sum(axis=1)
        estimates.append(float(a / b))
        with np.errstate(invalid="ignore", divide="ignore"):
            leave_out.append(np.where(b - b_l > 0, (a - a_l) / (b - b_l), np.nan))
    return estimates, np.column_stack(leave_out), float(b)


def _jackknife_se(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    n = values.size
    return float(np.sqrt((n - 1) / n * np.sum((values - values.mean()) ** 2))) if n > 1 else float("nan")


def harrell_c(time: np.ndarray, event: np.ndarray, eta: np.ndarray) -> dict[str, float]:
    """{"c", "se"}: Harrell's C of risk score eta (higher = earlier event) with its jackknife SE."""
    (c,), leave_out, _ = _pair_ratio(_comparable(time, event).astype(float), [_scores(eta)])
    return {"c": c, "se": _jackknife_se(leave_out[:, 0])}


def paired_delta_c(time: np.ndarray, event: np.ndarray, eta_model: np.ndarray, eta_reference: np.ndarray) -> dict[str, float]:
    """{"c_model", "c_reference", "delta", "se"}: Harrell's C of both scores on the same pairs; jackknife SE of Δ."""
    (c1, c2), leave_out, _ = _pair_ratio(_comparable(time, event).astype(float), [_scores(eta_model), _scores(eta_reference)])
    return {"c_model": c1, "c_reference": c2, "delta": c1 - c2, "se": _jackknife_se(leave_out[:, 0] - leave_out[:, 1])}


def uno_c(time: np.ndarray, event: np.ndarray, eta: np.ndarray, tau: float) -> dict[str, float]:
    """{"c", "se"}: Uno's IPCW C truncated at tau (censoring KM of this site), jackknife SE with weights fixed."""
    g = censoring_survival(time, event, time)
    if np.any((event == 1) & (time < tau) & (g <= 0)):
        raise SiteSurvivalError("the censoring distribution reaches 0 before tau: Uno's C is undefined here")
    weights = np.where((event == 1) & (time < tau), 1 / np.where(g > 0, g, 1.0) ** 2, 0.0)
    (c,), leave_out, _ = _pair_ratio(_comparable(time, event) * weights[:, None], [_scores(eta)])
    return {"c": c, "se": _jackknife_se(leave_out[:, 0])}


def cumulative_dynamic_auc(time: np.ndarray, event: np.ndarray, score: np.ndarray, horizon: float) -> dict[str, float]:
    """{"auc", "se"}: IPCW cumulative/dynamic AUC(t) (cases: event by t; controls: T > t), jackknife SE."""
    cases = (event == 1) & (time <= horizon)
    controls = time > horizon
    if not cases.any() or not controls.any():
        raise SiteSurvivalError("time-dependent AUC needs an event before and a patient followed beyond the horizon")
    g = censoring_survival(time, event, time)
    weights = np.where(cases, 1 / np.where(g > 0, g, 1.0), 0.0)
    pairs = weights[:, None] * controls[None, :]
    (auc,), leave_out, _ = _pair_ratio(pairs, [_scores(score)])
    return {"auc": auc, "se": _jackknife_se(leave_out[:, 0])}
