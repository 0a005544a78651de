"""Held-out validation of a survival model at one site: every site half, assembled, ready for small-cell review.

The site receives the model (coefficients, centre, carried baseline) and the volume-only model, computes on its
own patients, and returns only aggregates: C statistics with SEs, time-dependent AUC, calibration groups, O/E,
calibration slope, IPCW Brier and net benefit at each horizon t*, and Kaplan-Meier curves by predicted-risk group
at grid points only. A horizon at which fewer than k patients are still followed, or fewer than k events happened
by it, gets no estimates (``"horizons"`` entry {"suppressed": 1}). A measure that cannot be estimated here (e.g. a
calibration slope whose likelihood has no maximum) is ``{"withheld": "not_estimable"}``, never a crash of the
whole site and never a guess. A site with fewer than k events or patients releases nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from collections.abc import Callable

from fedmath.survival import CoxModel, SurvivalMathError
from site_client.evaluation.survival_calibration import (
    calibration_groups,
    calibration_slope,
    ipcw_brier,
    net_benefit,
    observed_expected,
)
from site_client.evaluation.survival_concordance import cumulative_dynamic_auc, harrell_c, paired_delta_c, uno_c
from site_client.evaluation.survival_cox import SiteSurvivalError, SurvivalData
from site_client.evaluation.survival_grid import coarse_kaplan_meier

RISK_GROUPS = ("low", "intermediate", "high")


def _km_by_risk_group(data: SurvivalData, risk: np.ndarray, candidates: np.ndarray, k: int) -> dict:
    """Tertiles of this site's predicted risk at the last horizon (cut points stay at the site)."""
    cuts = np.quantile(risk, [1 / 3, 2 / 3])
    group = np.searchsorted(cuts, risk, side="right")
    return {
        name: coarse_kaplan_meier(data.time[group == i], data.event[group == i], candidates, k)
        for i, name in enumerate(RISK_GROUPS)
    }


NOT_ESTIMABLE = {"withheld": "not_estimable"}


def _estimable(compute: Callable[[], dict]) -> dict:
    try:
        return compute()
    except (SiteSurvivalError, SurvivalMathError):
        return dict(NOT_ESTIMABLE)


def heldout_survival_metrics(
    data: SurvivalData,
    model: CoxModel,
    volume_model: CoxModel,
    volume_features: np.ndarray,
    horizons: Sequence[float],
    thresholds: Sequence[float],
    km_candidates: np.ndarray,
    k: int,
    calibration_groups_wanted: int = 5,
    ties: str = "efron",
) -> dict:
    """All held-out survival aggregates of this site (see the module docstring)."""
    time, event = data.time, data.event
    if data.n_events < k or time.size < k:
        raise SiteSurvivalError("fewer than k events or patients at this site: no survival measure can be released")
    eta = model.linear_predictor(data.features)
    eta_volume = volume_model.linear_predictor(volume_features)
    risks = model.risk(data.features, horizons)
    result: dict = {
        "n": int(time.size),
        "n_events": data.n_events,
        "harrell": _estimable(lambda: harrell_c(time, event, eta)),
        "uno": _estimable(lambda: uno_c(time, event, eta, tau=float(max(horizons)))),
        "delta_c_vs_volume": _estimable(lambda: paired_delta_c(time, event, eta, eta_volume)),
        "calibration_slope": _estimable(lambda: calibration_slope(time, event, eta, ties)),
        "horizons": {},
        "km_by_risk_group": _km_by_risk_group(data, risks[:, -1], km_candidates, k),
    }
    for j, horizon in enumerate(horizons):
        events_by = int(((event == 1) & (time <= horizon)).sum())
        if (time > horizon).sum() < k or events_by < k:
            result["horizons"][float(horizon)] = {"suppressed": 1}
            continue
        risk = risks[:, j]
        result["horizons"][float(horizon)] = {
            "auc": _estimable(lambda: cumulative_dynamic_auc(time, event, risk, horizon)),
            "brier": _estimable(lambda: ipcw_brier(time, event, risk, horizon)),
            "oe": observed_expected(time, event, risk, horizon, k),
            "calibration": calibration_groups(time, event, risk, horizon, calibration_groups_wanted, k),
            "net_benefit": net_benefit(time, event, risk, horizon, list(thresholds), k),
        }
    return result
