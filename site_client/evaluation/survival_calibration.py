"""Site halves of calibration, overall accuracy and clinical usefulness at a horizon t*, at a held-out site.

* **Calibration by risk group.** Patients are ordered by predicted risk at t* and cut into ``groups`` groups of
  (near) equal size; adjacent groups are merged (``privacy.merge_groups``) until every group holds 0 or >= k
  patients and 0 or >= k events by t*. Per group: n, mean predicted risk, observed risk 1 - KM(t*) with its
  Greenwood SE.
* **O/E at t*:** observed 1 - KM(t*) over mean predicted risk; SE of ln(O/E) = SE_KM / (1 - KM) (E held fixed).
* **Calibration slope:** Cox fit at this site of the time to event on the linear predictor alone (1 = ideal).
* **IPCW Brier at t*:** mean of S_i(t*)^2 / G(T_i) over events by t* and (1 - S_i(t*))^2 / G(t*) over patients
  followed beyond t* (G = censoring KM of this site); SE = SD of the per-patient terms / sqrt(n).
* **Net benefit at t*** (Vickers et al. 2008, survival form) at threshold p: patients with risk >= p are "treated";
  with f their fraction and r = 1 - KM(t*) among them, NB = r f - (1 - r) f p / (1 - p); treat-all uses the
  whole site's KM. A threshold whose treated or untreated group holds 1..k-1 patients or events by t* is None.
"""

from __future__ import annotations

import numpy as np

from site_client.evaluation.privacy import merge_groups
from site_client.evaluation.survival_concordance import censoring_survival
from site_client.evaluation.survival_cox import SiteSurvivalError, SurvivalData, fit_local_cox
from site_client.evaluation.survival_grid import kaplan_meier


def _km_at(time: np.ndarray, event: np.ndarray, horizon: float) -> tuple[float, float]:
    survival, variance, _ = kaplan_meier(time, event, np.array([horizon]))
    return float(survival[0]), float(variance[0])


def _events_by(time: np.ndarray, event: np.ndarray, horizon: float) -> int:
    return int(((event == 1) & (time <= horizon)).sum())


def calibration_groups(time: np.ndarray, event: np.ndarray, risk: np.ndarray, horizon: float, groups: int, k: int) -> dict | None:
    """{"n", "predicted", "observed", "observed_se"} per merged risk group (ascending risk), or None if unsafe."""
    order = np.argsort(risk, kind="mergesort")
    parts = np.array_split(order, min(groups, risk.size))
    counts = np.array([[p.size for p in parts], [_events_by(time[p], event[p], horizon) for p in parts]])
    merged = merge_groups(counts, k)
    if merged is None:
        return None
    out: dict[str, list] = {"n": [], "predicted": [], "observed": [], "observed_se": []}
    for group in merged:
        members = np.concatenate([parts[i] for i in group])
        survival, variance = _km_at(time[members], event[members], horizon)
        out["n"].append(int(members.size))
        out["predicted"].append(float(risk[members].mean()))
        out["observed"].append(1 - survival)
        out["observed_se"].append(float(np.sqrt(variance)))
    return out


def observed_expected(time: np.ndarray, event: np.ndarray, risk: np.ndarray, horizon: float, k: int) -> dict[str, float] | None:
    """{"oe", "log_oe_se"} at t*, or None when the events by t* number 1..k-1 (or none: O/E = 0 is unusable)."""
    if _events_by(time, event, horizon) < k:
        return None
    survival, variance = _km_at(time, event, horizon)
    observed = 1 - survival
    return {"oe": observed / float(risk.mean()), "log_oe_se": float(np.sqrt(variance)) / observed}


def calibration_slope(time: np.ndarray, event: np.ndarray, eta: np.ndarray, ties: str = "efron") -> dict[str, float]:
    """{"slope", "se"}: Cox regression of the outcome on the linear predictor at this site."""
    fit = fit_local_cox(SurvivalData.checked(eta[:, None], time, event), ties)
    return {"slope": float(fit.beta[0]), "se": float(np.sqrt(fit.covariance[0, 0]))}


def ipcw_brier(time: np.ndarray, event: np.ndarray, risk: np.ndarray, horizon: float) -> dict[str, float]:
    """{"brier", "se"} at t*; ``risk`` is the predicted probability of the event by t*."""
    g_own = censoring_survival(time, event, time)
    g_horizon = float(censoring_survival(time, event, np.array([horizon]))[0])
    cases = (event == 1) & (time <= horizon)
    controls = time > horizon
    if g_horizon <= 0 or np.any(cases & (g_own <= 0)):
        raise SiteSurvivalError("the censoring distribution reaches 0 before the horizon: the IPCW Brier is undefined")
    survival = 1 - risk
    terms = np.where(cases, survival**2 / np.where(g_own > 0, g_own, 1.0), 0.0) + np.where(controls, risk**2 / g_horizon, 0.0)
    return {"brier": float(terms.mean()), "se": float(terms.std(ddof=1) / np.sqrt(terms.size))}


def net_benefit(time: np.ndarray, event: np.ndarray, risk: np.ndarray, horizon: float, thresholds: list[float], k: int) -> dict:
    """{"thresholds", "model", "treat_all"}: net benefit per threshold (None where a group would reveal < k)."""
    n = risk.size
    survival_all, _ = _km_at(time, event, horizon)
    model, treat_all = [], []
    for p in thresholds:
        odds = p / (1 - p)
        treat_all.append((1 - survival_all) - survival_all * odds)
        treated = risk >= p
        cells = [treated.sum(), (~treated).sum(), _events_by(time[treated], event[treated], horizon),
                 _events_by(time[~treated], event[~treated], horizon)]
        if any(0 < c < k for c in cells):
            model.append(None)
            continue
        if not treated.any():
            model.append(0.0)
            continue
        survival_treated, _ = _km_at(time[treated], event[treated], horizon)
        fraction = treated.sum() / n
        model.append((1 - survival_treated) * fraction - survival_treated * fraction * odds)
    return {"thresholds": list(thresholds), "model": model, "treat_all": treat_all}
