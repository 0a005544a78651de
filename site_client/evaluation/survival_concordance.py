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
Time is O(n^2) per site; memory stays bounded (pairs are processed in blocks of rows).
"""

from __future__ import annotations

from collections.abc import Callable

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


PAIRS_PER_BLOCK = 4_000_000  # rows of the n x n pair matrices are processed in blocks of about this many cells


def _scores(eta_rows: np.ndarray, eta: np.ndarray) -> np.ndarray:
    diff = eta_rows[:, None] - eta[None, :]
    return np.where(np.abs(diff) <= TIED_RISK, 0.5, (diff > 0).astype(float))


def _comparable(rows: slice, time: np.ndarray, event: np.ndarray) -> np.ndarray:
    t, e = time[rows], event[rows]
    earlier = t[:, None] < time[None, :]
    tied_censored = (t[:, None] == time[None, :]) & (event[None, :] == 0)
    return (e[:, None] == 1) & (earlier | tied_censored)


def _pair_ratio(
    pairs: Callable[[slice], np.ndarray], etas: list[np.ndarray]
) -> tuple[list[float], np.ndarray, float]:
    """Estimates for each score, their per-patient leave-one-out values (n x len(etas)), and B.

    ``pairs(rows)`` gives the weighted pair matrix w_i c_ij for the patients i in ``rows`` against everyone.
    """
    n = etas[0].size
    block = max(1, PAIRS_PER_BLOCK // max(n, 1))
    b, b_l = 0.0, np.zeros(n)
    a, a_l = np.zeros(len(etas)), np.zeros((len(etas), n))
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        weighted = pairs(rows)
        b += weighted.sum()
        b_l[rows] += weighted.sum(axis=1)
        b_l += weighted.sum(axis=0)
        for m, eta in enumerate(etas):
            a_pairs = weighted * _scores(eta[rows], eta)
            a[m] += a_pairs.sum()
            a_l[m, rows] += a_pairs.sum(axis=1)
            a_l[m] += a_pairs.sum(axis=0)
    if b <= 0:
        raise SiteSurvivalError("no comparable pair of patients at this site")
    with np.errstate(invalid="ignore", divide="ignore"):
        leave_out = np.where(b - b_l > 0, (a[:, None] - a_l) / (b - b_l), np.nan).T
    return [float(x / b) for x in a], leave_out, float(b)


def _jackknife_se(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    n = values.size
    return float(np.sqrt((n - 1) / n * np.sum((values - values.mean()) ** 2))) if n > 1 else float("nan")


def harrell_c(time: np.ndarray, event: np.ndarray, eta: np.ndarray) -> dict[str, float]:
    """{"c", "se"}: Harrell's C of risk score eta (higher = earlier event) with its jackknife SE."""
    (c,), leave_out, _ = _pair_ratio(lambda rows: _comparable(rows, time, event).astype(float), [eta])
    return {"c": c, "se": _jackknife_se(leave_out[:, 0])}


def paired_delta_c(time: np.ndarray, event: np.ndarray, eta_model: np.ndarray, eta_reference: np.ndarray) -> dict[str, float]:
    """{"c_model", "c_reference", "delta", "se"}: Harrell's C of both scores on the same pairs; jackknife SE of Δ."""
    (c1, c2), leave_out, _ = _pair_ratio(lambda rows: _comparable(rows, time, event).astype(float), [eta_model, eta_reference])
    return {"c_model": c1, "c_reference": c2, "delta": c1 - c2, "se": _jackknife_se(leave_out[:, 0] - leave_out[:, 1])}


def uno_c(time: np.ndarray, event: np.ndarray, eta: np.ndarray, tau: float) -> dict[str, float]:
    """{"c", "se"}: Uno's IPCW C truncated at tau (censoring KM of this site), jackknife SE with weights fixed."""
    g = censoring_survival(time, event, time)
    if np.any((event == 1) & (time < tau) & (g <= 0)):
        raise SiteSurvivalError("the censoring distribution reaches 0 before tau: Uno's C is undefined here")
    weights = np.where((event == 1) & (time < tau), 1 / np.where(g > 0, g, 1.0) ** 2, 0.0)
    (c,), leave_out, _ = _pair_ratio(lambda rows: _comparable(rows, time, event) * weights[rows, None], [eta])
    return {"c": c, "se": _jackknife_se(leave_out[:, 0])}


def cumulative_dynamic_auc(time: np.ndarray, event: np.ndarray, score: np.ndarray, horizon: float) -> dict[str, float]:
    """{"auc", "se"}: IPCW cumulative/dynamic AUC(t) (cases: event by t; controls: T > t), jackknife SE."""
    cases = (event == 1) & (time <= horizon)
    controls = time > horizon
    if not cases.any() or not controls.any():
        raise SiteSurvivalError("time-dependent AUC needs an event before and a patient followed beyond the horizon")
    g = censoring_survival(time, event, time)
    weights = np.where(cases, 1 / np.where(g > 0, g, 1.0), 0.0)
    (auc,), leave_out, _ = _pair_ratio(lambda rows: weights[rows, None] * controls[None, :], [score])
    return {"auc": auc, "se": _jackknife_se(leave_out[:, 0])}
